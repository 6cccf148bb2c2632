#!/usr/bin/env python3
"""ward's crash matrix: a torture agent under `ward run`, killed at every fail point and at
random moments, with its invariants checked after every run.

    crash_matrix.py WARD_BINARY [--points N] [--seed S]          the matrix
    crash_matrix.py WARD_BINARY --two [--points N] [--seed S]    two supervisors (as root)
    crash_matrix.py WARD_BINARY --ledger URL [--two] ...         the same on a PostgreSQL server
    crash_matrix.py agent                                        the torture agent (under ward run)

Each run: STEPS steps of three calls made in parallel on separate connections — a
non-idempotent `effect` (appends its call ID to effects.log, then waits while the workspace
holds a file `hold`; its reconcile command looks for the ID in effects.log), an idempotent
`stamp` (writes a file) and a read-only `look` — the effect call carrying the agent's
checkpoint. After the kill, `ward run --run-id SAME` is run
until the agent finishes. Invariants: every effect happened exactly once; a call was in
doubt only if the kill could hit the window between begin and finish; the final state
equals an uncrashed run's; `ward ledger verify` passes; no process of the run is left.

Where ward itself was killed, before the restart `ward ledger reconcile` runs from another
directory (new and empty, its cwd), with the ledger and policies named absolutely, in one
of three ways, taken in turn (separately for runs with calls in doubt, so that the few
such runs meet all three): plain, where the run's recorded workspace is used: it exits 0,
nothing is left in doubt, and each call is found executed exactly when its effect is in
effects.log; `--workspace` naming another existing directory; `--workspace workspace`,
relative, which does not exist there. The last two are refused when a call is in doubt
(a non-zero exit, a message naming the recorded workspace for the first) and change
nothing (the same calls in doubt). None of the three runs an effect (effects.log
unchanged) or makes anything in the other directory or in the other workspace. The
column `elsewhere` shows the way, the calls in doubt before it, and ok or FAIL; `no
ledger` where ward died before its ledger was ready (no file, or a half-made one that the
read-only `ward ledger list` refuses): then the killed attempt recorded nothing (checked
after the restarts: one attempt a restart), so no call can be in doubt.

`--two`: pairs of runs, each pair sharing one new ledger, served at the same time by two
`ward run`s, each in its own PID namespace (`unshare --pid --mount-proc`, its agent inside
with it): one is killed (every fail point, then N random SIGKILLs, of either side) and,
as above, reconciled from another directory (a ledger-wide reconcile, while the other
serves) and restarted in a new namespace until its agent finishes; the other keeps
serving. The kept side's first effect is held running (logged, outcome not recorded) until
the killed side's restart has recovered, so the kill, the reconcile and the recovery all
meet a live owner's call mid-flight. Invariants: the killed run's as above; the kept run
has no `call.in-doubt` event, begins each call once, finishes at its first attempt with
each effect once and the final state of an uncrashed pair's runs; `ward ledger verify` passes on the
pair's ledger; and, while the kept agent holds between two steps, a second `ward run` of
its run, with its own socket, from the killed side's namespace (or a new one when that
has none alive) is refused with exit 1 and records nothing (`ward ledger export --run`
unchanged, nothing made in its directory). Two lines a pair: the killed run (its
`elsewhere`; `overlap`: its restart recovered while the kept call was held) and the kept
run (`second`).
"""
import argparse
import glob
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

# ward's Python client is the package in python/ (`pip install ./python`); the scripts use it
# from the checkout.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
from ward_client import Ward  # noqa: E402

# The script's directory is the first on sys.path when it runs, the agent's too.
from ward_harness import policy_directory  # noqa: E402

STEPS = 8

TOOLS = """
[tools.effect]
command = [
  "/bin/sh", "-c",
  "echo \\"$WARD_IDEMPOTENCY_KEY $WARD_CALL_ID\\" >> effects.log; while [ -e hold ]; do sleep 0.01; done; echo done $WARD_CALL_ID",
]
effect = "non-idempotent"
reconcile = [
  "/bin/sh", "-c",
  "grep -q \\"^$WARD_IDEMPOTENCY_KEY \\" effects.log 2>/dev/null && {{ echo done $WARD_CALL_ID; exit 0; }}; exit 3",
]

[tools.stamp]
command = ["/bin/sh", "-c", "mkdir -p stamps && echo \\"$1\\" > \\"stamps/$1\\" && echo stamped $1", "sh", "{name}"]
arguments = ["name"]
effect = "idempotent"

[tools.look]
command = ["/bin/sh", "-c", "ls stamps 2>/dev/null | wc -l"]
effect = "read-only"
"""


def agent() -> None:
    main = Ward()
    resumed = main.resume()
    state: dict[str, Any] = (resumed["checkpoint"] or {}).get("state") or {"step": 0, "seen": []}
    conns = [Ward(), Ward()]
    # Set by the two-supervisor matrix: hold once, before the first step at or after it.
    hold_at = int(os.environ.get("CRASH_MATRIX_HOLD", STEPS))
    for step in range(state["step"], STEPS):
        if step >= hold_at:
            hold()
            hold_at = STEPS
        results = step_calls(main, conns, step, state)
        if any(k not in results for k in ("effect", "stamp", "look")):
            sys.exit(3)  # a call failed (an in-doubt refusal): the harness restarts us
        state = {"step": step + 1, "seen": state["seen"] + [results["effect"]["stdout"].strip(), results["stamp"]["stdout"].strip()]}
    # Written whole or not at all: a kill of ward (and so of this agent) mid-write must not
    # leave a partial file that looks like a finished run.
    with open("final.json.tmp", "w") as f:
        json.dump(state, f, sort_keys=True)
    os.rename("final.json.tmp", "final.json")


def step_calls(main: Ward, conns: list[Ward], step: int, state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One step's three calls, made at once on three connections: the results of those that
    returned (a call that raised is missing)."""
    results: dict[str, dict[str, Any]] = {}

    def run(key: str, fn: Callable[[], dict[str, Any]]) -> None:
        results[key] = fn()

    threads = [
        threading.Thread(target=run, args=("effect", lambda: main.call("effect", call_id=f"{step}-effect", checkpoint=state))),
        threading.Thread(target=run, args=("stamp", lambda: conns[0].call("stamp", {"name": f"s{step}"}, call_id=f"{step}-stamp"))),
        threading.Thread(target=run, args=("look", lambda: conns[1].call("look", call_id=f"{step}-look"))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def hold() -> None:
    """Between two steps, with no call in flight, waits until the matrix writes `go` (in the
    run's directory, the agent's): meanwhile it compares the run's ledger before and after a
    refused second supervisor, and any change can only be that one's (and the other run's
    supervisor, held too, still serves, whose namespace the second one starts in)."""
    with open("paused.tmp", "w"):
        pass
    os.rename("paused.tmp", "paused")
    # Bounded: a matrix that died must not leave the agent (and its ward) waiting forever.
    deadline = time.time() + 120
    while not os.path.exists("go") and time.time() < deadline:
        time.sleep(0.01)


def processes_in(directory: str) -> list[int]:
    """Pids working in `directory` or below it: a run's agent works in the run's directory,
    its tools in the workspace. (No command line of theirs names the directory.)"""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{name}/cwd")
        except OSError:
            continue
        if cwd == directory or cwd.startswith(directory + "/"):
            found.append(int(name))
    return found


def wait_gone(directory: str, seconds: float = 5) -> list[int]:
    """Waits until no process works in `directory`, up to `seconds`; returns those left.
    Whatever ward started dies with it (PDEATHSIG, the watchdog's cgroup kill), which the
    kernel delivers a moment later: waited for, up to a deadline, not slept on."""
    deadline = time.time() + seconds
    while (left := processes_in(directory)) and time.time() < deadline:
        time.sleep(0.01)
    return left


class ListFailed(Exception):
    def __init__(self, exit_code: int, text: str) -> None:
        super().__init__(f"ward ledger list: exit {exit_code}: {text}")
        self.exit_code = exit_code


def in_doubt_calls(ward: str, ledger: str, run: str, cwd: str) -> list[str]:
    """The IDs of `run`'s calls in doubt, from `ward ledger list` run in `cwd`."""
    r = subprocess.run([ward, "ledger", "list", "--ledger", ledger, "--run", run, "--status", "in-doubt", "--json"],
                       cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise ListFailed(r.returncode, r.stderr.strip())
    return sorted(c["callId"] for c in json.loads(r.stdout))


def reconcile_elsewhere(ward: str, policies: str, work: str, run: str, ledger: str, way: str, before: list[str],
                        elsewhere: str) -> list[str]:
    """`ward ledger reconcile` of every run of `ledger` (`run`'s ward was killed) from the
    empty directory `elsewhere` in `way` (see the module's docstring); `before`: `run`'s
    calls in doubt, which must be all the ledger has. Returns what went wrong (empty when
    nothing did)."""
    decoy = elsewhere + "-workspace"  # the other existing directory, empty
    os.makedirs(decoy)
    log = os.path.join(work, "workspace", "effects.log")
    recorded = os.path.realpath(os.path.join(work, "workspace"))

    def effects_log() -> bytes | None:
        try:
            with open(log, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    logged = effects_log()
    extra: list[str] = {"plain": [], "other": ["--workspace", decoy], "relative": ["--workspace", "workspace"]}[way]
    r = subprocess.run([ward, "ledger", "reconcile", "--ledger", ledger, "--policies", policies, "--json", *extra],
                       cwd=elsewhere, capture_output=True, text=True)
    said = f"exit {r.returncode}: {(r.stderr.strip() or r.stdout.strip())[:200]}"
    problems: list[str] = []
    if way == "plain":
        if r.returncode != 0:
            problems.append(f"plain reconcile failed ({said})")
        else:
            # The reconcile command looks in the recorded workspace, wherever ward runs.
            findings = {(f["run"], f["callId"]): f["finding"] for f in json.loads(r.stdout)}
            done = {line.split()[1] for line in (logged or b"").decode().splitlines()}
            if sorted(findings) != [(run, call) for call in before]:
                problems.append(f"settled {sorted(findings)}, not the calls in doubt {before} of {run}")
            for (of, call), finding in findings.items():
                if of == run and finding != ("executed" if call in done else "not-executed"):
                    problems.append(f"{call} found {finding}, but effects.log says otherwise")
            if before and (left := in_doubt_calls(ward, ledger, run, elsewhere)):
                problems.append(f"still in doubt after the plain reconcile: {left}")
    elif before:
        # Refused, and nothing settled: a reconcile command run elsewhere would find no
        # effect and let the call run twice.
        if r.returncode == 0:
            problems.append(f"--workspace {extra[1]} was not refused ({said})")
        elif not r.stderr.startswith("ward: ") or (way == "other" and recorded not in r.stderr):
            problems.append(f"the refusal does not say where the run ran ({said})")
        if (after := in_doubt_calls(ward, ledger, run, elsewhere)) != before:
            problems.append(f"in doubt before {before}, after {after}")
    if effects_log() != logged:
        problems.append("an effect ran (effects.log changed)")
    if made := os.listdir(elsewhere) + os.listdir(decoy):
        problems.append(f"made {made} in the other directory or workspace")
    return problems


@dataclass
class Reconciled:
    """What the reconcile from another directory after a kill of ward met: `cell`, the table's
    `elsewhere` column (the way and the calls in doubt before it); `ledger_ready` False when
    ward died before its ledger was ready, and so no reconcile ran."""
    cell: str
    problems: list[str]
    ledger_ready: bool = True


class Elsewhere:
    """The reconciles from another directory after kills of ward: the next way for runs
    without and with calls in doubt, and the ways the runs with calls in doubt met."""
    ways = ["plain", "other", "relative"]

    def __init__(self) -> None:
        self.turn = {False: 0, True: 0}
        self.met = {way: 0 for way in self.ways}
        self.unready = 0

    def check(self, ward: str, policies: str, work: str, run: str, ledger: str, other: str) -> Reconciled:
        """After `run`'s ward was killed: the reconcile from the new directory `other`."""
        os.makedirs(other)
        try:
            # A server's database is made before the run: its schema is what may be missing.
            before = in_doubt_calls(ward, ledger, run, other) if "://" in ledger or os.path.exists(ledger) else None
        except ListFailed as e:
            # Killed while making the ledger (before any call): the read-only audits
            # refuse a half-made one (exit 3), the next `ward run` completes it.
            if e.exit_code != 3:
                return Reconciled("error", [str(e)])
            before = None
        if before is None:
            self.unready += 1
            return Reconciled("no ledger", [], ledger_ready=False)
        way = self.ways[self.turn[bool(before)] % len(self.ways)]
        self.turn[bool(before)] += 1
        self.met[way] += bool(before)
        try:
            return Reconciled(f"{way} {len(before)}", reconcile_elsewhere(ward, policies, work, run, ledger, way, before, other))
        except (ListFailed, ValueError) as e:
            return Reconciled(f"{way} {len(before)}", [str(e)])

    def summary(self) -> str:
        return (f"elsewhere: {sum(self.turn.values())} reconciles from another directory, {self.unready} runs with no ledger yet; "
                "runs with calls in doubt: " + ", ".join(f"{self.met[way]} {way}" for way in self.ways))


class Ledgers:
    """Where each run's or pair's ledger lives: a SQLite file in its directory, or, with a
    server URL, a new database of its own on that server (see the module's docstring)."""

    def __init__(self, server: str | None) -> None:
        self.server = server
        self.made: list[str] = []
        self.lease = 0.0
        if server is None:
            return
        parts = urllib.parse.urlsplit(server)
        query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "dbname"]
        if not any(k == "lease" for k, _ in query):
            # Short, so that the waits after kills stay short; long enough that a busy
            # machine's scheduling never lets a live supervisor's lease lapse.
            query.append(("lease", "2"))
        self.lease = float(dict(query)["lease"])
        self.parts = parts._replace(query=urllib.parse.urlencode(query, safe="/", quote_via=urllib.parse.quote))
        # psql takes the URL as libpq does, which knows no `lease`.
        self.admin = parts._replace(query=urllib.parse.urlencode([(k, v) for k, v in query if k != "lease"], safe="/",
                                                                 quote_via=urllib.parse.quote)).geturl()
        self.prefix = f"ward_matrix_{os.getpid()}_{int(time.time()) % 100000}"

    def new(self, path: str, name: str) -> str:
        """A new, empty ledger for the run or pair `name`: the SQLite file `path` (which ward
        makes) without a server."""
        if self.server is None:
            return path
        database = f"{self.prefix}_{name}"
        self.psql(f'CREATE DATABASE "{database}"')
        self.made.append(database)
        return self.parts._replace(path="/" + database).geturl()

    def psql(self, sql: str) -> None:
        # The newest installed client: the distribution's /usr/bin/psql wrapper may pick another.
        versions = [p for p in glob.glob("/usr/lib/postgresql/*/bin/psql") if p.split("/")[4].isdigit()]
        clients = sorted(versions, key=lambda p: int(p.split("/")[4]))
        r = subprocess.run([clients[-1] if clients else "psql", self.admin, "-X", "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"psql: {sql}: {r.stderr.strip()}")

    def after_kill(self) -> None:
        """After a kill of ward: on a server, until the dead supervisor's lease has expired
        (its calls are judged by it, not by its pid)."""
        if self.server is not None:
            time.sleep(self.lease + 0.5)

    def drop(self) -> None:
        """Drops the databases made (the matrix passed), each even when another fails."""
        failures = []
        for database in self.made:
            try:
                self.psql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            except RuntimeError as e:
                failures.append(str(e))
        for failure in failures:
            print(f"crash matrix: {failure}", file=sys.stderr)
        self.made = []

    def kept(self) -> str:
        """The databases made, for a failure's report."""
        return f"; databases kept: {', '.join(self.made)}" if self.made else ""

    @staticmethod
    def shown(url: str) -> str:
        """`url` for a printed command line: quoted, without its password."""
        parts = urllib.parse.urlsplit(url)
        if parts.password is not None:
            user = parts.username or ""
            host = parts.netloc.rsplit("@", 1)[1]
            parts = parts._replace(netloc=f"{user}@{host}")
        return shlex.quote(parts.geturl())


def ward_run_argv(ward: str, policies: str, work: str, run: str, agent_cmd: list[str], ledger: str | None = None) -> list[str]:
    """`ward run` of the agent, its socket in the run's own directory: another matrix or test
    on this machine may use the same run IDs at the same time. ward refuses a socket
    directory that other users may enter: the run's directory is made private."""
    os.chmod(work, 0o700)
    return [ward, "run", *(["--ledger", ledger] if ledger else []), "--policies", policies, "--run-id", run,
            "--socket", os.path.join(work, "ward.sock"), "--max-restarts", "0", "--", *agent_cmd]


@dataclass(frozen=True)
class Outcome:
    """What a finished run left: its effects (each once, none lost), its events, its final state."""
    effects_ok: bool
    events: list[dict[str, Any]]
    in_doubt: int
    attempts: int
    state_ok: bool


def run_outcome(ward: str, work: str, run: str, ledger: str, reference: str) -> Outcome:
    try:
        with open(os.path.join(work, "workspace", "effects.log")) as f:
            effects = [line.split()[1] for line in f.read().splitlines()]
    except OSError:
        effects = []
    expected = [f"{s}-effect" for s in range(STEPS)]
    exported = subprocess.run([ward, "ledger", "export", "--ledger", ledger, "--run", run], cwd=work, capture_output=True, text=True).stdout
    events: list[dict[str, Any]] = [json.loads(line) for line in exported.splitlines()]
    try:
        with open(os.path.join(work, "final.json")) as f:
            state_ok = f.read() == reference
    except OSError:
        state_ok = False
    return Outcome(
        effects_ok=sorted(effects) == sorted(expected) and len(set(effects)) == len(effects),
        events=events,
        in_doubt=sum(1 for e in events if e["kind"] == "call.in-doubt"),
        attempts=sum(1 for e in events if e["kind"] == "run.attempt"),
        state_ok=state_ok,
    )


def mark(ok: bool) -> str:
    return "ok" if ok else "FAIL"


def processes_with(token: str, prefix: bool = False) -> list[int]:
    """Pids whose command line contains `token` (or starts with it, when `prefix`)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if (cmdline.startswith(token.encode()) if prefix else token.encode() in cmdline):
            found.append(int(name))
    return found


@dataclass(frozen=True)
class Scenario:
    """How a run (or, with `side`, a pair's side `side`) is killed: by ward at the `hit`th hit
    of its fail point `point` (a kill of ward, the `target`), or else by a SIGKILL of
    `target` (ward or the agent) `delay` seconds after the start. `window`: the kill can hit
    a call between its begin and its finish, where a call in doubt is correct. The runs use
    these fields; `label` only shows them in the table."""
    window: bool
    point: str | None = None
    hit: int = 0
    target: str = "ward"
    delay: float = 0.0
    side: str | None = None

    @property
    def label(self) -> str:
        if self.point is not None:
            return f"{self.point}@{self.hit}"
        # A pair's kills are all of a supervisor.
        return f"kill {self.target} at {self.delay:.3f}s" if self.side is None else f"kill at {self.delay:.3f}s"

    def failpoints(self) -> dict[str, str] | None:
        """The environment of the `ward run` to kill: with its fail point armed; None (inherited)
        for a SIGKILL."""
        return dict(os.environ, WARD_FAILPOINTS=f"{self.point}=kill@{self.hit}") if self.point is not None else None


def kill_delay(rng: random.Random, duration: float) -> float:
    """A random moment within the span of an uncrashed run, to the millisecond the table shows."""
    return round(rng.uniform(0.02, duration * 0.9), 3)


def fail_point_scenarios(rng: random.Random) -> list[Scenario]:
    """Each fail point at a hit it really reaches: three calls a step, one checkpoint a step,
    one reply a call plus run.resume. The three calls of a step run at once, so a kill of
    ward at any point but in-checkpoint (inside the begin of the step's non-idempotent call,
    which rolls back with it) may catch that step's non-idempotent call mid-flight: a window
    where an in-doubt call is correct (and must then be settled, with the effect once and
    the final state equal to the reference's)."""
    return [Scenario(window=window, point=point, hit=rng.randint(1, hits))
            for point, window, hits in [("after-begin", True, STEPS * 3), ("after-spawn", True, STEPS * 3),
                                        ("in-checkpoint", False, STEPS), ("before-finish", True, STEPS * 3),
                                        ("after-finish", True, STEPS * 3), ("before-reply", True, STEPS * 3 + 1)]]


@dataclass(frozen=True)
class Options:
    """The command line."""
    ward: str
    points: int
    seed: int | None
    two: bool
    ledgers: Ledgers


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("ward", type=os.path.abspath, help="the ward binary (also run from other directories)")
    ap.add_argument("--points", type=int, default=50, help="random kills (besides every fail point)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--two", action="store_true",
                    help="two supervisors of two runs on one ledger, each in its own PID namespace (needs root)")
    ap.add_argument("--ledger", metavar="URL", help="postgres://USER@HOST[:PORT]/DB: every ledger a new database on that server")
    parsed = ap.parse_args()
    if parsed.ledger is not None and not parsed.ledger.startswith(("postgres://", "postgresql://")):
        ap.error(f"--ledger {parsed.ledger}: expected a postgres:// URL (without it, each run's ledger is a SQLite file)")
    a = Options(ward=parsed.ward, points=parsed.points, seed=parsed.seed, two=parsed.two, ledgers=Ledgers(parsed.ledger))
    if a.two and os.geteuid() != 0:
        print("crash matrix --two: new PID namespaces (unshare --pid) need root", file=sys.stderr)
        return 2
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    root = tempfile.mkdtemp(prefix="ward-matrix-")
    policies = policy_directory(root, TOOLS)
    agent_cmd = [sys.executable, os.path.abspath(__file__), "agent"]
    on_server = f"--ledger {Ledgers.shown(parsed.ledger)} " if parsed.ledger else ""
    replay = f"{'--two ' if a.two else ''}{on_server}--seed {seed} --points {a.points}"
    mode = two_supervisors if a.two else one_supervisor
    try:
        passed, failed = mode(a, rng, root, policies, agent_cmd, f"seed {seed} (replay: {replay})")
    except BaseException:
        print(f"crash matrix stopped: runs kept in {root}{a.ledgers.kept()}", file=sys.stderr)
        raise
    if failed:
        print(f"failures: replay with {replay}; runs kept in {root}{a.ledgers.kept()}")
    else:
        shutil.rmtree(root, ignore_errors=True)
        a.ledgers.drop()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def one_supervisor(a: Options, rng: random.Random, root: str, policies: str, agent_cmd: list[str], seeded: str) -> tuple[int, int]:
    """The matrix of one `ward run` at a time, each run with its own ledger. Returns the
    numbers of runs passed and failed."""
    def ward_run(work: str, run: str, ledger: str, env: dict[str, str] | None = None, kill: tuple[str, float] | None = None) -> int:
        """One `ward run`; `kill` = (target, delay) SIGKILLs ward or the agent after delay s."""
        # A SQLite ledger is named only when on a server: the default, .ward/ledger.sqlite
        # in the run's directory, is the one the run must find by itself.
        named = ledger if a.ledgers.server is not None else None
        p = subprocess.Popen(ward_run_argv(a.ward, policies, work, run, agent_cmd, named),
                             cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        if kill:
            target, delay = kill
            time.sleep(delay)
            if target == "ward":
                p.send_signal(signal.SIGKILL)
            else:
                # The agent's own argv only: ward's command line contains it too.
                for pid in processes_with("\0".join(agent_cmd) + "\0", prefix=True):
                    try:
                        if os.readlink(f"/proc/{pid}/cwd") == work:
                            os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
        return p.wait()

    # The uncrashed run every other run must equal.
    ref = os.path.join(root, "reference")
    os.makedirs(ref)
    started = time.time()
    ward_run(ref, "ref", a.ledgers.new(os.path.join(ref, ".ward", "ledger.sqlite"), "reference"))
    duration = time.time() - started
    with open(os.path.join(ref, "final.json")) as f:
        reference = f.read()

    scenarios = fail_point_scenarios(rng)
    # Random kills within the span of an uncrashed run.
    for _ in range(a.points):
        target = rng.choice(["ward", "ward", "agent"])
        # Only a kill of ward can leave a call in doubt: a dead agent's calls still finish.
        scenarios.append(Scenario(window=target == "ward", target=target, delay=kill_delay(rng, duration)))

    print(f"crash matrix: {len(scenarios)} runs, {seeded}")
    print(f"{'run':<5}{'kill':<30}{'restarts':<10}{'in-doubt':<10}{'effects':<9}{'state':<7}{'verify':<8}{'orphans':<8}{'elsewhere':<17}")
    passed = failed = 0
    elsewhere_checks = Elsewhere()
    for n, scenario in enumerate(scenarios, start=1):
        work = os.path.join(root, f"run-{n}")
        os.makedirs(work)
        run = f"m{n}"
        ledger = a.ledgers.new(os.path.join(work, ".ward", "ledger.sqlite"), f"run{n}")
        if scenario.point is not None:
            ward_run(work, run, ledger, env=scenario.failpoints())
        else:
            ward_run(work, run, ledger, kill=(scenario.target, scenario.delay))
        reconciled = None
        if scenario.target == "ward":
            wait_gone(work)
            a.ledgers.after_kill()
            reconciled = elsewhere_checks.check(a.ward, policies, work, run, ledger, os.path.join(root, f"elsewhere-{n}"))
        problems = reconciled.problems if reconciled else []
        restarts = 0
        while not os.path.exists(os.path.join(work, "final.json")) and restarts < 5:
            ward_run(work, run, ledger)
            restarts += 1
        out = run_outcome(a.ward, work, run, ledger, reference)
        doubt_ok = scenario.window or out.in_doubt == 0
        # "No ledger" is checked, not assumed: the killed attempt recorded none of its own.
        if reconciled and not reconciled.ledger_ready and out.attempts != restarts:
            problems.append(f"no ledger before the restarts, yet {out.attempts} attempts recorded for {restarts} restarts")
        verify_ok = subprocess.run([a.ward, "ledger", "verify", "--ledger", ledger], cwd=work, capture_output=True).returncode == 0
        orphans = wait_gone(work)
        ok = out.effects_ok and doubt_ok and out.state_ok and verify_ok and not orphans and not problems
        passed += ok
        failed += not ok
        print(f"{n:<5}{scenario.label:<30}{restarts:<10}{str(out.in_doubt) + ('' if doubt_ok else ' FAIL'):<10}{mark(out.effects_ok):<9}"
              f"{mark(out.state_ok):<7}{mark(verify_ok):<8}{mark(not orphans):<8}"
              f"{elsewhere_cell(reconciled, problems):<17}", flush=True)
        for problem in problems:
            print(f"     elsewhere: {problem}", flush=True)
    print(elsewhere_checks.summary())
    return passed, failed


def elsewhere_cell(reconciled: Reconciled | None, problems: list[str]) -> str:
    """The table's `elsewhere` column: "-" where no reconcile followed (the agent was killed)."""
    return f"{reconciled.cell} {mark(not problems)}" if reconciled else "-"


# Each supervisor of the two-supervisor mode in a PID namespace of its own, with its own
# /proc, where the other's pids mean nothing. A shell is the namespace's init, not ward: the
# kernel drops a SIGKILL that a namespace's init sends itself, so ward as init would live
# through its fail points. --kill-child: should the matrix die, each namespace dies with it.
NAMESPACE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "/bin/sh", "-c", '"$@" & wait $!', "sh"]


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                # The command name may hold spaces and parentheses: the fields follow the last ")".
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def command_line(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def namespace_init(p: subprocess.Popen[bytes]) -> int | None:
    """The host pid of the init (the shell) of the namespace that `p` (an unshare of
    NAMESPACE) made, once it runs; None when `p` has exited or has no init yet."""
    if p.poll() is None:
        for pid in children(p.pid):
            if command_line(pid).startswith(b"/bin/sh\0-c\0"):
                return pid
    return None


def supervisor_in(p: subprocess.Popen[bytes], ward: str) -> int | None:
    """The host pid of the ward in `p`'s namespace, waited for until it runs (an early kill
    must hit ward, not the unshare or shell before it); None once `p` has exited."""
    while p.poll() is None:
        init = namespace_init(p)
        for pid in children(init) if init else []:
            if command_line(pid).startswith(ward.encode() + b"\0"):
                return pid
        time.sleep(0.005)
    return None


@dataclass(frozen=True)
class Second:
    """A second `ward run` of a served run: the table's cell, what went wrong, and the
    namespace it ran in ("other's ns" or "own ns")."""
    cell: str
    problems: list[str]
    where: str | None = None


def second_supervisor(a: Options, policies: str, agent_cmd: list[str], ledger: str, run: str, directory: str,
                      killed: subprocess.Popen[bytes]) -> Second:
    """Starts another `ward run` of `run`, which its supervisor serves, with a socket of its
    own in the new directory `directory`: from the namespace of the killed side's supervisor
    of the moment (`killed`, its Popen: its restart) while that lives, else from a new one.
    It must be refused (exit 1, saying the run is served) and record nothing."""
    os.makedirs(directory)

    def export() -> str:
        return subprocess.run([a.ward, "ledger", "export", "--ledger", ledger, "--run", run],
                              cwd=os.path.dirname(directory), capture_output=True, text=True).stdout

    before = export()
    argv = ward_run_argv(a.ward, policies, directory, run, agent_cmd, ledger)
    refusal = f"run {run} is served by another supervisor"
    r: subprocess.CompletedProcess[str] | None = None
    where = "own ns"
    init = namespace_init(killed)
    if init:
        r = subprocess.run(["nsenter", "--target", str(init), "--pid", "--mount", f"--wd={directory}", "--", *argv],
                           cwd=directory, capture_output=True, text=True, timeout=60)
        where = "other's ns"
        if r.returncode < 0 or r.returncode == 128 + signal.SIGKILL or r.stderr.startswith("nsenter: "):
            # The namespace died before or under it (its supervisor was killed): tried again
            # in a new one.
            r, where = None, "own ns"
    if r is None:
        r = subprocess.run([*NAMESPACE, *argv], cwd=directory, capture_output=True, text=True, timeout=60)
    problems = []
    said = f"exit {r.returncode}: {r.stderr.strip()[-200:]}"
    if r.returncode != 1 or refusal not in r.stderr:
        problems.append(f"not refused ({said})")
    if export() != before:
        problems.append("the refused supervisor recorded something in the run")
    if made := os.listdir(directory):
        problems.append(f"the refused supervisor made {made}")
    return Second(f"{'refused' if not problems else 'FAIL'} ({where})", problems, where)


def supervise(a: Options, policies: str, agent_cmd: list[str], work: str, run: str, ledger: str,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """One side of a pair: `ward run` of the agent in a PID namespace of its own."""
    return subprocess.Popen([*NAMESPACE, *ward_run_argv(a.ward, policies, work, run, agent_cmd, ledger)],
                            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def two_supervisors(a: Options, rng: random.Random, root: str, policies: str, agent_cmd: list[str], seeded: str) -> tuple[int, int]:
    """Pairs of runs, each pair on one ledger of its own, served at the same time by two
    `ward run`s in two PID namespaces; one is killed (a fail point or SIGKILL), reconciled
    from another directory and restarted until its agent finishes while the other keeps
    serving. Returns the numbers of pairs passed and failed."""
    # The uncrashed pair every other run must equal.
    ref = os.path.join(root, "reference")
    for side in "ab":
        os.makedirs(os.path.join(ref, side))
    started = time.time()
    ledger = a.ledgers.new(os.path.join(ref, "ledger.sqlite"), "reference")
    pair = [supervise(a, policies, agent_cmd, os.path.join(ref, side), f"ref{side}", ledger) for side in "ab"]
    ends: list[float] = []

    def wait_for(p: subprocess.Popen[bytes]) -> None:
        p.wait()
        ends.append(time.time())

    waiters = [threading.Thread(target=wait_for, args=(p,)) for p in pair]
    for t in waiters:
        t.start()
    for t in waiters:
        t.join()
    # The faster run's span: in a pair the kept side soon waits on its held call, so the
    # killed one runs nearly alone; kills later than it finishes would be wasted.
    duration = min(ends) - started
    finals: list[str | None] = []
    for side in "ab":
        try:
            with open(os.path.join(ref, side, "final.json")) as f:
                finals.append(f.read())
        except OSError:
            finals.append(None)
    reference = finals[0]
    if reference is None or finals[1] != reference:
        # Already a violation: two uncrashed supervisors on one ledger disturbed each other.
        print(f"crash matrix, two supervisors: the uncrashed pair failed (final states {finals}, exits {[p.returncode for p in pair]})")
        return 0, 1

    # Every fail point, then random kills, each of either supervisor within the span of an
    # uncrashed pair.
    scenarios = [replace(scenario, side=rng.choice("ab")) for scenario in fail_point_scenarios(rng)]
    for _ in range(a.points):
        scenarios.append(Scenario(window=True, delay=kill_delay(rng, duration), side=rng.choice("ab")))

    print(f"crash matrix, two supervisors in two PID namespaces on one ledger: {len(scenarios)} pairs, {seeded}")
    print(f"{'pair':<5}{'run':<6}{'role':<7}{'kill':<19}{'restarts':<10}{'in-doubt':<10}{'once':<6}{'effects':<9}{'state':<7}"
          f"{'orphans':<9}{'elsewhere/second':<26}{'overlap':<9}{'verify':<7}")
    passed = failed = 0
    overlaps = 0
    refused = {"other's ns": 0, "own ns": 0}
    elsewhere_checks = Elsewhere()
    for n, scenario in enumerate(scenarios, start=1):
        ok, overlap, second = one_pair(a, policies, agent_cmd, os.path.join(root, f"pair-{n}"), n, scenario, reference, elsewhere_checks)
        passed += ok
        failed += not ok
        overlaps += overlap
        if second.where is not None and not second.problems:
            refused[second.where] += 1
    print(elsewhere_checks.summary())
    from_other, from_own = refused["other's ns"], refused["own ns"]
    print(f"two supervisors: the killed one recovered while the other's call was held running in {overlaps} of {len(scenarios)} pairs; "
          f"second supervisors refused: {from_other} from the other's namespace, {from_own} from their own")
    return passed, failed


@dataclass
class KilledSide:
    """The killed side of a pair, as its thread goes: its supervisor of the moment, its
    restarts, whether its restart recovered while the kept side's call was held, its
    reconcile from another directory, and an error that stopped the thread."""
    current: subprocess.Popen[bytes]
    restarts: int = 0
    overlap: bool = False
    reconciled: Reconciled | None = None
    error: str | None = None


def one_pair(a: Options, policies: str, agent_cmd: list[str], top: str, n: int, scenario: Scenario, reference: str,
             elsewhere_checks: Elsewhere) -> tuple[bool, bool, Second]:
    """Pair `n` in the new directory `top`: runs it, checks it and prints its two lines.
    Returns whether it passed, whether the killed side's restart recovered while the kept
    side's call was held, and the second supervisor's refusal."""
    assert scenario.side is not None
    killed = scenario.side
    kept = "b" if killed == "a" else "a"
    ledger = a.ledgers.new(os.path.join(top, "ledger.sqlite"), f"pair{n}")
    work = {side: os.path.join(top, side) for side in "ab"}
    run = {side: f"t{n}{side}" for side in "ab"}
    for side in "ab":
        os.makedirs(work[side])
    # The kept side's first non-idempotent call is held running (its effect made, its
    # outcome not recorded) by `hold` in its workspace until the killed side's restart
    # has recovered: its kill, the reconcile after it and its recovery all meet a live
    # owner's call mid-flight, which a live owner judged dead would put in doubt.
    held = os.path.join(work[kept], "workspace", "hold")
    os.makedirs(os.path.dirname(held))
    with open(held, "w"):
        pass
    env = {
        killed: scenario.failpoints(),
        # Held again before its second step, for the second supervisor (by then the
        # killed side's restart serves, and holds too).
        kept: dict(os.environ, CRASH_MATRIX_HOLD="1"),
    }
    started = time.time()
    procs = {side: supervise(a, policies, agent_cmd, work[side], run[side], ledger, env[side]) for side in "ab"}
    # The killed side in a thread of its own: killed, reconciled and restarted while the
    # kept side is served and checked here.
    side_of_killed = KilledSide(current=procs[killed])

    def killed_side() -> None:
        try:
            p = procs[killed]
            if scenario.point is None:
                time.sleep(max(0.0, started + scenario.delay - time.time()))
                if (pid := supervisor_in(p, a.ward)) is not None:
                    os.kill(pid, signal.SIGKILL)
            p.wait()
            wait_gone(work[killed])
            a.ledgers.after_kill()
            # The kept side's held call is running once its effect is logged (begun
            # before it was spawned): the reconcile and the recovery below must meet it.
            while not os.path.exists(os.path.join(work[kept], "workspace", "effects.log")) and procs[kept].poll() is None:
                time.sleep(0.005)
            side_of_killed.reconciled = elsewhere_checks.check(a.ward, policies, work[killed], run[killed], ledger,
                                                               os.path.join(top, "elsewhere"))
            socket = os.path.join(work[killed], "ward.sock")
            while not os.path.exists(os.path.join(work[killed], "final.json")) and side_of_killed.restarts < 5:
                # Left by the killed ward. The restart binds its socket after its
                # recovery: the socket's return says the recovery is done.
                if os.path.exists(socket):
                    os.unlink(socket)
                # The first restart's agent holds before its first step, so that its
                # namespace still lives for the second supervisor.
                first = None if side_of_killed.restarts else dict(os.environ, CRASH_MATRIX_HOLD="0")
                p = side_of_killed.current = supervise(a, policies, agent_cmd, work[killed], run[killed], ledger, first)
                if os.path.exists(held):
                    while not os.path.exists(socket) and p.poll() is None:
                        time.sleep(0.005)
                    side_of_killed.overlap = os.path.exists(socket) and procs[kept].poll() is None
                    os.unlink(held)
                p.wait()
                side_of_killed.restarts += 1
        except Exception as e:  # reported in the table, never a hang of the pair
            side_of_killed.error = repr(e)
        finally:
            if os.path.exists(held):
                os.unlink(held)

    thread = threading.Thread(target=killed_side)
    thread.start()
    second = Second("-", [])
    try:
        paused = os.path.join(work[kept], "paused")
        while not os.path.exists(paused) and procs[kept].poll() is None:
            time.sleep(0.01)
        # The killed side's restarted agent holds too (unless none was needed, or it had
        # no step left).
        while not os.path.exists(os.path.join(work[killed], "paused")) and thread.is_alive():
            time.sleep(0.01)
        if os.path.exists(paused):
            second = second_supervisor(a, policies, agent_cmd, ledger, run[kept], os.path.join(top, "second"), side_of_killed.current)
        else:
            second = Second("FAIL", ["the kept agent never reached its hold"])
    except Exception as e:
        second = Second("FAIL", [repr(e)])
    finally:
        for side in "ab":
            with open(os.path.join(work[side], "go"), "w"):
                pass
    kept_status = procs[kept].wait()
    thread.join()

    out = {side: run_outcome(a.ward, work[side], run[side], ledger, reference) for side in "ab"}
    verify_ok = subprocess.run([a.ward, "ledger", "verify", "--ledger", ledger], cwd=top, capture_output=True).returncode == 0
    orphans = {side: wait_gone(work[side]) for side in "ab"}
    restarts = side_of_killed.restarts
    reconciled = side_of_killed.reconciled
    problems = list(reconciled.problems if reconciled else []) + ([side_of_killed.error] if side_of_killed.error is not None else [])
    if reconciled and not reconciled.ledger_ready and out[killed].attempts != restarts:
        problems.append(f"no ledger before the restarts, yet {out[killed].attempts} attempts recorded for {restarts} restarts")
    doubt_ok = scenario.window or out[killed].in_doubt == 0
    # The kept side: never in doubt, every call begun once, finished at its first attempt.
    begun: dict[str, int] = {}
    for event in out[kept].events:
        if event["kind"] == "call.begin":
            begun[event["callId"]] = begun.get(event["callId"], 0) + 1
    once_ok = len(begun) == STEPS * 3 and set(begun.values()) == {1}
    kept_problems = [] if kept_status == 0 else [f"its ward exited {kept_status}"]
    ok_killed = out[killed].effects_ok and doubt_ok and out[killed].state_ok and not orphans[killed] and not problems
    ok_kept = (out[kept].effects_ok and out[kept].in_doubt == 0 and once_ok and out[kept].state_ok
               and not orphans[kept] and not second.problems and not kept_problems)
    ok = ok_killed and ok_kept and verify_ok
    killed_doubt = out[killed].in_doubt
    print(f"{n:<5}{run[killed]:<6}{'killed':<7}{scenario.label:<19}{restarts:<10}{str(killed_doubt) + ('' if doubt_ok else ' FAIL'):<10}"
          f"{'-':<6}{mark(out[killed].effects_ok):<9}{mark(out[killed].state_ok):<7}{mark(not orphans[killed]):<9}"
          f"{elsewhere_cell(reconciled, problems):<26}{'yes' if side_of_killed.overlap else 'no':<9}"
          f"{mark(verify_ok):<7}", flush=True)
    kept_doubt = out[kept].in_doubt
    print(f"{'':<5}{run[kept]:<6}{'kept':<7}{'-':<19}{0:<10}{str(kept_doubt) + ('' if kept_doubt == 0 else ' FAIL'):<10}"
          f"{mark(once_ok):<6}{mark(out[kept].effects_ok):<9}{mark(out[kept].state_ok):<7}{mark(not orphans[kept]):<9}"
          f"{second.cell:<26}", flush=True)
    for problem in problems:
        print(f"     elsewhere: {problem}", flush=True)
    for problem in second.problems:
        print(f"     second: {problem}", flush=True)
    for problem in kept_problems:
        print(f"     kept: {problem}", flush=True)
    return ok, side_of_killed.overlap, second


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "agent":
        agent()
    else:
        sys.exit(main())
