"""Supervisors on several (simulated) hosts sharing one PostgreSQL ledger: a real Debian
PostgreSQL server started in a temporary directory (Scripts/pg-server), real `ward serve`
processes each with its own host identity (WARD_HOST), agents through the Python client.
Run by Scripts/test (WARD names the ward binary)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "Scripts"))
from ward_client import InDoubtError, StorageError, Ward, WardError  # noqa: E402
from ward_harness import policy_directory  # noqa: E402

WARD = os.environ.get("WARD", str(ROOT / ".build" / "debug" / "ward"))
PG_SERVER = str(ROOT / "Scripts" / "pg-server")
LEASE = 1.0

# `append` is the non-idempotent effect: each line it writes must be there exactly once.
# `hold` appends, then waits for a file `go` (or 20 s): a call caught running.
TOOLS = (
    """
[tools.append]
command = ["/bin/sh", "-c", "printf '%s\\\\n' \\"$1\\" >> log.txt", "sh", "{line}"]
effect = "non-idempotent"

[tools.hold]
"""
    "command = [\"/bin/sh\", \"-c\", \"printf '%s\\\\n' \\\"$1\\\" >> log.txt; echo $$ > held.pid; i=0; "
    "while [ ! -e go ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; echo done\", \"sh\", \"{line}\"]\n"
    'effect = "non-idempotent"\n'
)


class PostgresHostsTest(unittest.TestCase):
    pg: str
    url: str
    root: Path

    @classmethod
    def setUpClass(cls) -> None:
        cls.root = Path(tempfile.mkdtemp(prefix="ward-hosts-"))
        os.chmod(cls.root, 0o755)
        cls.pg = str(cls.root / "pg")
        cls.url = subprocess.run([PG_SERVER, "start", cls.pg], check=True, capture_output=True, text=True).stdout.strip()
        cls.policies = policy_directory(str(cls.root), TOOLS)
        cls.databases = 0

    @classmethod
    def tearDownClass(cls) -> None:
        subprocess.run([PG_SERVER, "stop", cls.pg, "immediate"], capture_output=True)
        shutil.rmtree(cls.root, ignore_errors=True)

    def setUp(self) -> None:
        # A database of each test's own.
        type(self).databases += 1
        name = f"hosts{type(self).databases}"
        self.psql("postgres", f'CREATE DATABASE "{name}"')
        self.database = name
        self.ledger = self.url.replace("/ward?", f"/{name}?") + f"&lease={LEASE}"
        self.serves: list[subprocess.Popen[str]] = []

    def tearDown(self) -> None:
        for p in self.serves:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.wait(10)
            for stream in (p.stdout, p.stderr):
                if stream:
                    stream.close()

    def psql(self, database: str, sql: str) -> str:
        binary = sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))[-1]
        argv = [str(binary), "-h", self.pg, "-U", "ward", "-d", database, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()

    def host(self, name: str) -> Path:
        """A host's own directory: its workspace, socket and local state."""
        directory = self.root / self.database / name
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def serve(self, host: str, run: str, workspace: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
        """`ward serve` of `run` as host `host`; returns it and its socket once it listens."""
        directory = self.host(host)
        socket = str(directory / "sock" / f"{run}.sock")
        env = dict(os.environ, WARD_HOST=host)
        p = subprocess.Popen([WARD, "serve", "--ledger", self.ledger, "--policies", self.policies, "--workspace", str(workspace),
                              "--socket", socket, "--run-id", run, *extra],
                             cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.serves.append(p)
        assert p.stdout is not None
        line = p.stdout.readline()
        self.assertTrue(line, f"ward serve on {host} did not start: {p.stderr.read() if p.poll() is not None and p.stderr else ''}")
        return p, socket

    def ward(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([WARD, *args, "--ledger", self.ledger], capture_output=True, text=True, cwd=self.root)

    def calls(self, run: str) -> dict[str, dict[str, Any]]:
        listed = self.ward("ledger", "list", "--run", run, "--json")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        return {c["callId"]: c for c in json.loads(listed.stdout)}

    def events(self, run: str) -> list[dict[str, Any]]:
        exported = self.ward("ledger", "export", "--run", run)
        self.assertEqual(exported.returncode, 0, exported.stderr)
        return [json.loads(line) for line in exported.stdout.splitlines()]

    def test_three_hosts_eight_agents_every_effect_once(self) -> None:
        runs = ["h0", "h1", "h2"]
        workspaces = [self.host(f"host-{i}") / "workspace" for i in range(3)]
        sockets = [self.serve(f"host-{i}", runs[i], workspaces[i])[1] for i in range(3)]
        per_agent = 25
        failures: list[str] = []

        def agent(n: int) -> None:
            try:
                with Ward(sockets[n % 3]) as w:
                    for k in range(per_agent):
                        w.call("append", {"line": f"a{n}-{k}"}, call_id=f"a{n}-{k}")
                    # Repeats replay: nothing runs twice.
                    for k in range(0, per_agent, 5):
                        self.assertTrue(w.call("append", {"line": f"a{n}-{k}"}, call_id=f"a{n}-{k}")["replayed"])
            except Exception as e:  # noqa: BLE001 - reported below
                failures.append(f"agent {n}: {e!r}")

        threads = [threading.Thread(target=agent, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(failures, [])
        for i, run in enumerate(runs):
            lines = (workspaces[i] / "log.txt").read_text().splitlines()
            expected = sorted(f"a{n}-{k}" for n in range(i, 8, 3) for k in range(per_agent))
            self.assertEqual(sorted(lines), expected, f"run {run}: each effect exactly once")
            self.assertTrue(all(c["status"] == "succeeded" for c in self.calls(run).values()))
        verify = self.ward("ledger", "verify")
        self.assertEqual(verify.returncode, 0, verify.stdout + verify.stderr)
        # Each host's lease named its host.
        hosts = self.psql(self.database, "SELECT string_agg(DISTINCT host, ',' ORDER BY host) FROM owners")
        self.assertEqual(hosts, "host-0,host-1,host-2")

    def test_a_killed_supervisors_run_moves_to_another_host_in_doubt_never_rerun(self) -> None:
        # Long enough that the refusal below meets the dead supervisor's lease alive.
        self.ledger = self.ledger.replace(f"lease={LEASE}", "lease=6")
        workspace = self.host("shared") / "workspace"
        a, socket_a = self.serve("host-a", "moving", workspace)
        w = Ward(socket_a)
        caught = threading.Thread(target=lambda: self.assertRaises(WardError, w.call, "hold", {"line": "sent"}, call_id="send"))
        caught.start()
        self.wait_for(lambda: (workspace / "held.pid").exists(), "the held call started")
        a.kill()
        a.wait(10)
        caught.join(10)
        w.close()
        # A second supervisor of the run, on another host, while the first's lease lives:
        # refused at once without --wait (nothing recorded), taken with it once the lease expires.
        before = self.events("moving")
        c = self.host("host-c")
        refused = subprocess.run([WARD, "serve", "--ledger", self.ledger, "--policies", self.policies, "--workspace", str(workspace),
                                  "--socket", str(c / "s.sock"), "--run-id", "moving"],
                                 cwd=c, env=dict(os.environ, WARD_HOST="host-c"), capture_output=True, text=True, timeout=30)
        self.assertEqual(refused.returncode, 1, refused.stderr)
        self.assertIn("served by another supervisor (host host-a", refused.stderr)
        self.assertEqual(self.events("moving"), before)
        _, socket_b = self.serve("host-b", "moving", workspace, "--wait")
        with Ward(socket_b) as w2:
            with self.assertRaises(InDoubtError):
                w2.call("hold", {"line": "sent"}, call_id="send")
            settled = self.ward("ledger", "resolve", "moving", "send", "--as", "executed", "--note", "found in log.txt")
            self.assertEqual(settled.returncode, 0, settled.stderr)
            self.assertTrue(w2.call("hold", {"line": "sent"}, call_id="send")["replayed"])
        self.assertEqual((workspace / "log.txt").read_text().splitlines(), ["sent"], "never run again")
        doubt = [e for e in self.events("moving") if e["kind"] == "call.in-doubt"]
        self.assertEqual(len(doubt), 1)
        self.assertIn("lease expired", doubt[0]["data"]["reason"])
        self.assertEqual(self.ward("ledger", "verify").returncode, 0)

    def test_a_paused_supervisor_is_fenced_and_stops_its_call(self) -> None:
        workspace = self.host("paused") / "workspace"
        a, socket_a = self.serve("host-a", "paused", workspace)
        w = Ward(socket_a)
        outcome: list[Any] = []

        def call() -> None:
            try:
                outcome.append(w.call("hold", {"line": "once"}, call_id="c1"))
            except WardError as e:
                outcome.append(e)

        t = threading.Thread(target=call)
        t.start()
        self.wait_for(lambda: (workspace / "held.pid").exists(), "the held call started")
        held = int((workspace / "held.pid").read_text())
        os.kill(a.pid, signal.SIGSTOP)
        try:
            # Another host takes the run once the paused one's lease expires, and judges the call.
            b, socket_b = self.serve("host-b", "paused", workspace, "--wait")
            self.wait_for(lambda: self.calls("paused")["c1"]["status"] == "in-doubt", "host-b put the call in doubt")
        finally:
            os.kill(a.pid, signal.SIGCONT)
        # Woken, the paused supervisor finds its lease lost: it stops its call's tree, records
        # nothing over host-b's decision, says so, and exits.
        a.wait(30)
        assert a.stderr is not None
        said = a.stderr.read()
        self.assertIn("lease", said)
        self.assertEqual(a.returncode, 3, said)
        self.wait_for(lambda: not os.path.exists(f"/proc/{held}"), "the held call's process was killed")
        t.join(10)
        w.close()
        self.assertEqual(self.calls("paused")["c1"]["status"], "in-doubt")
        kinds = [e["kind"] for e in self.events("paused") if e.get("callId") == "c1"]
        self.assertEqual(kinds, ["call.begin", "call.in-doubt"], "no outcome recorded over the other host's decision")
        with Ward(socket_b) as w2, self.assertRaises(InDoubtError):
            w2.call("hold", {"line": "once"}, call_id="c1")
        self.assertEqual((workspace / "log.txt").read_text().splitlines(), ["once"])
        self.assertEqual(self.ward("ledger", "verify").returncode, 0)
        b.terminate()

    def test_the_server_restarted_mid_run_loses_and_doubles_nothing(self) -> None:
        # A lease longer than the outage: the supervisor is cut off, never judged dead.
        self.ledger = self.ledger.replace(f"lease={LEASE}", "lease=20")
        workspace = self.host("restart") / "workspace"
        _, socket = self.serve("host-a", "restart", workspace)
        done: set[str] = set()
        errors: list[str] = []

        def agent() -> None:
            with Ward(socket) as w:
                for k in range(120):
                    for _ in range(100):
                        try:
                            w.call("append", {"line": f"l{k}"}, call_id=f"l{k}")
                            done.add(f"l{k}")
                            break
                        except StorageError as e:
                            errors.append(str(e))
                            time.sleep(0.1)
                        except InDoubtError:
                            # Its outcome may be lost with the connection: settled from the log below.
                            break

        t = threading.Thread(target=agent)
        t.start()
        self.wait_for(lambda: len(done) >= 20, "calls before the restart")
        subprocess.run([PG_SERVER, "stop", self.pg, "fast"], check=True, capture_output=True)
        self.assertLess(len(done), 120, "the restart came after the run")
        time.sleep(1)
        subprocess.run([PG_SERVER, "start", self.pg], check=True, capture_output=True)
        t.join(180)
        self.assertFalse(t.is_alive())
        lines = (workspace / "log.txt").read_text().splitlines()
        self.assertEqual(len(lines), len(set(lines)), "an effect ran twice")
        calls = self.calls("restart")
        for line in lines:
            self.assertIn(calls[line]["status"], ("succeeded", "in-doubt"), line)
        for call_id, c in calls.items():
            if c["status"] == "succeeded":
                self.assertIn(call_id, lines, "recorded done but never ran")
        self.assertGreaterEqual(len(done), 100)
        self.assertEqual(self.ward("ledger", "verify").returncode, 0)

    def test_a_sqlite_ledger_copied_to_postgres_verifies_on_both(self) -> None:
        # A SQLite ledger with a finished call, a call in doubt and a journal entry.
        directory = self.host("copy")
        sqlite = str(directory / "ledger.sqlite")
        workspace = directory / "workspace"
        p = subprocess.Popen([WARD, "serve", "--ledger", sqlite, "--policies", self.policies, "--workspace", str(workspace),
                              "--socket", str(directory / "sock" / "c.sock"), "--run-id", "copied"],
                             cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.serves.append(p)
        assert p.stdout is not None
        p.stdout.readline()
        with Ward(str(directory / "sock" / "c.sock")) as w:
            w.call("append", {"line": "one"}, call_id="c1")
            w.request("journal.record", {"key": "k", "value": "v"})
        p.terminate()
        p.wait(30)
        copied = subprocess.run([WARD, "ledger", "copy", "--from", sqlite, "--to", self.ledger, "--json"], capture_output=True, text=True)
        self.assertEqual(copied.returncode, 0, copied.stderr)
        self.assertEqual(json.loads(copied.stdout)["runs"], ["copied"])
        for ledger in (sqlite, self.ledger):
            verified = subprocess.run([WARD, "ledger", "verify", "--ledger", ledger, "--json"], capture_output=True, text=True)
            self.assertEqual(verified.returncode, 0, verified.stdout + verified.stderr)
        exported = [subprocess.run([WARD, "ledger", "export", "--ledger", ledger], capture_output=True, text=True).stdout
                    for ledger in (sqlite, self.ledger)]
        self.assertEqual(exported[0], exported[1], "the same chain, hash for hash")
        # A second copy would merge two records of one run: refused, nothing changed.
        again = subprocess.run([WARD, "ledger", "copy", "--from", sqlite, "--to", self.ledger], capture_output=True, text=True)
        self.assertEqual(again.returncode, 2, again.stderr)
        self.assertIn("exists already", again.stderr)
        self.assertEqual(self.ward("ledger", "export").stdout, exported[1])

    def test_doctor_reports_the_server_schema_and_clock(self) -> None:
        # No ledger yet: a read-only audit is refused and makes none.
        self.assertEqual(self.ward("ledger", "list").returncode, 3)
        self.assertEqual(self.psql(self.database, "SELECT to_regclass('ward_schema') IS NULL"), "t")
        p, _ = self.serve("host-a", "doctor", self.host("doctor") / "workspace")
        p.terminate()
        p.wait(30)
        doctor = subprocess.run([WARD, "doctor", "--ledger", self.ledger, "--json"], capture_output=True, text=True)
        self.assertEqual(doctor.returncode, 0, doctor.stderr)
        ledger = json.loads(doctor.stdout)["ledger"]
        self.assertEqual(ledger["backend"], "postgresql")
        self.assertEqual(ledger["schemaVersion"], ledger["expectedSchemaVersion"])
        self.assertEqual(ledger["durability"], "synchronous_commit=on")
        self.assertLess(abs(ledger["clockSkewMs"]), 1000)
        self.assertNotIn("password", doctor.stdout)
        # A schema from a newer ward is refused, by name.
        self.psql(self.database, "UPDATE ward_schema SET version = version + 1")
        newer = subprocess.run([WARD, "doctor", "--ledger", self.ledger], capture_output=True, text=True)
        self.assertEqual(newer.returncode, 3, newer.stderr)
        self.assertIn("newer than this ward", newer.stderr)
        # No server there: a clear error, exit 3.
        nowhere = f"postgres://ward:secret@/x?host={self.root}/nowhere"
        gone = subprocess.run([WARD, "doctor", "--ledger", nowhere], capture_output=True, text=True)
        self.assertEqual(gone.returncode, 3, gone.stderr)
        self.assertNotIn("secret", gone.stderr)

    def test_the_crash_matrix_passes_on_postgres(self) -> None:
        # Short: every fail point and a few random kills, each run on a database of its own
        # that the matrix makes on this server; then two supervisors per ledger (as root).
        matrix = [sys.executable, str(ROOT / "Scripts" / "crash_matrix.py"), WARD, "--ledger", f"{self.url}&lease={LEASE}"]
        modes = [["--points", "4"]] + ([["--two", "--points", "0"]] if os.geteuid() == 0 else [])
        for mode in modes:
            r = subprocess.run([*matrix, *mode], capture_output=True, text=True, timeout=600)
            self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-2000:])
            self.assertRegex(r.stdout, r"\n[1-9][0-9]* passed, 0 failed\n")
        # Its databases are dropped once it passed.
        self.assertEqual(self.psql("postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'ward_matrix_%'"), "")

    def wait_for(self, condition: Any, what: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.05)
        self.fail(f"timed out waiting: {what}")


if __name__ == "__main__":
    unittest.main()
