#!/usr/bin/env python3
"""ward's crash matrix: a torture agent under `ward run`, killed at every fail point and at
random moments, with its invariants checked after every run.

    crash_matrix.py WARD_BINARY [--points N] [--seed S]     the matrix
    crash_matrix.py agent                                   the torture agent (under ward run)

Each run: STEPS steps of three calls made in parallel on separate connections — a
non-idempotent `effect` (appends its call ID to effects.log; its reconcile command looks
for it there), an idempotent `stamp` (writes a file) and a read-only `look` — the effect
call carrying the agent's checkpoint. After the kill, `ward run --run-id SAME` is run
until the agent finishes. Invariants: every effect happened exactly once; a call was in
doubt only if the kill could hit the window between begin and finish; the final state
equals an uncrashed run's; `ward ledger verify` passes; no process of the run is left.
"""
import argparse, json, os, random, shutil, signal, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 8

TOOLS = """
[tools.effect]
command = ["/bin/sh", "-c", "echo \\"$WARD_IDEMPOTENCY_KEY $WARD_CALL_ID\\" >> effects.log; echo done $WARD_CALL_ID"]
effect = "non-idempotent"
reconcile = ["/bin/sh", "-c", "grep -q \\"^$WARD_IDEMPOTENCY_KEY \\" effects.log 2>/dev/null && {{ echo done $WARD_CALL_ID; exit 0; }}; exit 3"]

[tools.stamp]
command = ["/bin/sh", "-c", "mkdir -p stamps && echo \\"$1\\" > \\"stamps/$1\\" && echo stamped $1", "sh", "{name}"]
arguments = ["name"]
effect = "idempotent"

[tools.look]
command = ["/bin/sh", "-c", "ls stamps 2>/dev/null | wc -l"]
effect = "read-only"
"""


def agent():
    sys.path.insert(0, HERE)
    from ward_client import Ward

    main = Ward()
    resumed = main.resume()
    state = (resumed["checkpoint"] or {}).get("state") or {"step": 0, "seen": []}
    conns = [Ward(), Ward()]
    for step in range(state["step"], STEPS):
        results = {}

        def run(key, fn):
            results[key] = fn()

        threads = [
            threading.Thread(target=run, args=("effect", lambda: main.call(f"{step}-effect", "effect", checkpoint=state))),
            threading.Thread(target=run, args=("stamp", lambda: conns[0].call(f"{step}-stamp", "stamp", name=f"s{step}"))),
            threading.Thread(target=run, args=("look", lambda: conns[1].call(f"{step}-look", "look"))),
        ]
        for t in threads: t.start()
        for t in threads: t.join()
        if any(k not in results for k in ("effect", "stamp", "look")):
            sys.exit(3)  # a call failed (an in-doubt refusal): the harness restarts us
        state = {"step": step + 1, "seen": state["seen"] + [results["effect"]["stdout"].strip(), results["stamp"]["stdout"].strip()]}
    # Written whole or not at all: a kill of ward (and so of this agent) mid-write must not
    # leave a partial file that looks like a finished run.
    with open("final.json.tmp", "w") as f:
        json.dump(state, f, sort_keys=True)
    os.rename("final.json.tmp", "final.json")


def processes_in(directory):
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


def processes_with(token, prefix=False):
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ward")
    ap.add_argument("--points", type=int, default=50, help="random kills (besides every fail point)")
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    root = tempfile.mkdtemp(prefix="ward-matrix-")
    sys.path.insert(0, HERE)
    from ward_harness import policy_directory
    policies = policy_directory(root, TOOLS)
    agent_cmd = [sys.executable, os.path.abspath(__file__), "agent"]

    def ward_run(work, run, env=None, kill=None):
        """One `ward run`; `kill` = (target, delay) SIGKILLs ward or the agent after delay s."""
        p = subprocess.Popen([a.ward, "run", "--policies", policies, "--run-id", run, "--max-restarts", "0", "--", *agent_cmd],
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
    ward_run(ref, "ref")
    duration = time.time() - started
    with open(os.path.join(ref, "final.json")) as f:
        reference = f.read()

    # Each fail point at a hit it really reaches: three calls a step, one checkpoint a step,
    # one reply a call plus run.resume. The three calls of a step run at once, so a kill of
    # ward at any point may catch that step's non-idempotent call mid-flight: every fail
    # point is a window where an in-doubt call is correct (and must then be settled, with
    # the effect once and the final state equal to the reference's).
    scenarios = []
    for point, window, hits in [("after-begin", True, STEPS * 3), ("after-spawn", True, STEPS * 3), ("in-checkpoint", False, STEPS),
                                ("before-finish", True, STEPS * 3), ("after-finish", True, STEPS * 3), ("before-reply", True, STEPS * 3 + 1)]:
        scenarios.append((f"{point}@{rng.randint(1, hits)}", {"point": point}, window))
    # Random kills within the span of an uncrashed run.
    for i in range(a.points):
        target = rng.choice(["ward", "ward", "agent"])
        # Only a kill of ward can leave a call in doubt: a dead agent's calls still finish.
        scenarios.append((f"kill {target} at {rng.uniform(0.02, duration * 0.9):.3f}s", {"kill": target}, target == "ward"))

    print(f"crash matrix: {len(scenarios)} runs, seed {seed} (replay: --seed {seed} --points {a.points})")
    print(f"{'run':<5}{'kill':<30}{'restarts':<10}{'in-doubt':<10}{'effects':<9}{'state':<7}{'verify':<8}{'orphans':<8}")
    passed = failed = 0
    for n, (label, how, window) in enumerate(scenarios, start=1):
        work = os.path.join(root, f"run-{n}")
        os.makedirs(work)
        run = f"m{n}"
        if "point" in how:
            env = dict(os.environ, WARD_FAILPOINTS=f"{how['point']}=kill@{label.split('@')[1]}")
            ward_run(work, run, env=env)
        else:
            ward_run(work, run, kill=(how["kill"], float(label.split(" at ")[1][:-1])))
        restarts = 0
        while not os.path.exists(os.path.join(work, "final.json")) and restarts < 5:
            ward_run(work, run)
            restarts += 1
        ws = os.path.join(work, "workspace")
        try:
            effects = [l.split()[1] for l in open(os.path.join(ws, "effects.log")).read().splitlines()]
        except OSError:
            effects = []
        expected = [f"{s}-effect" for s in range(STEPS)]
        effects_ok = sorted(effects) == sorted(expected) and len(set(effects)) == len(effects)
        events = subprocess.run([a.ward, "ledger", "export", "--run", run], cwd=work, capture_output=True, text=True).stdout
        in_doubt = sum(1 for line in events.splitlines() if '"kind":"call.in-doubt"' in line)
        doubt_ok = window or in_doubt == 0
        try:
            state_ok = open(os.path.join(work, "final.json")).read() == reference
        except OSError:
            state_ok = False
        verify_ok = subprocess.run([a.ward, "ledger", "verify"], cwd=work, capture_output=True).returncode == 0
        # Whatever ward started dies with it (PDEATHSIG, the watchdog's cgroup kill), which
        # the kernel delivers a moment later: waited for, up to a deadline, not slept on.
        deadline = time.time() + 5
        while (orphans := processes_in(work)) and time.time() < deadline:
            time.sleep(0.01)
        ok = effects_ok and doubt_ok and state_ok and verify_ok and not orphans
        passed += ok
        failed += not ok
        mark = lambda b: "ok" if b else "FAIL"
        print(f"{n:<5}{label:<30}{restarts:<10}{str(in_doubt) + ('' if doubt_ok else ' FAIL'):<10}{mark(effects_ok):<9}"
              f"{mark(state_ok):<7}{mark(verify_ok):<8}{mark(not orphans):<8}", flush=True)
    if failed:
        print(f"failures: replay with --seed {seed} --points {a.points}; runs kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "agent":
        agent()
    else:
        sys.exit(main())
