#!/usr/bin/env python3
"""Load and soak: AGENTS agents in parallel, each making CALLS non-idempotent calls through a
real `ward serve`; then every effect must have landed exactly once, every call must replay,
and the supervisor's open fds, threads and RSS must not have grown past a bound.

    soak.py WARD_BINARY [--agents 8] [--calls 1000]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

# ward's Python client is the package in python/ (`pip install ./python`); the scripts use it
# from the checkout.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
from ward_client import Ward  # noqa: E402

# The script's directory is the first on sys.path when it runs.
from ward_harness import policy_directory  # noqa: E402

TOOLS = """
[tools.effect]
command = ["/bin/sh", "-c", "echo \\"$WARD_CALL_ID\\" >> effects.log"]
effect = "non-idempotent"
"""


def resources(pid: int) -> tuple[int, int, int]:
    """The open fds, threads and resident bytes of process `pid`."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as f:
        status = f.read()
    threads = int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))
    rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024
    return fds, threads, rss


def sockets(pid: int) -> int:
    return sum(1 for fd in os.listdir(f"/proc/{pid}/fd") if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"))


def wait_for_connections_closed(pid: int, baseline: int) -> None:
    """Waits (up to 10 s, a deadline against hanging) until the supervisor holds no more
    sockets than before any agent connected: every connection it served is closed."""
    deadline = time.time() + 10
    while sockets(pid) > baseline and time.time() < deadline:
        time.sleep(0.01)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("ward")
    ap.add_argument("--agents", type=int, default=8)
    ap.add_argument("--calls", type=int, default=1000)
    parsed = ap.parse_args()
    ward: str = parsed.ward
    agents: int = parsed.agents
    calls: int = parsed.calls
    root = tempfile.mkdtemp(prefix="ward-soak-")
    policies = policy_directory(root, TOOLS)
    sock = os.path.join(root, "soak.sock")
    serve = subprocess.Popen([ward, "serve", "--policies", policies, "--socket", sock, "--run-id", "soak"],
                             cwd=root, stdout=subprocess.PIPE, text=True)
    assert serve.stdout is not None
    serve.stdout.readline()  # the socket path: it listens
    listening = sockets(serve.pid)
    passed = failed = 0

    def check(ok: bool, text: str) -> None:
        nonlocal passed, failed
        passed += ok
        failed += not ok
        print(f"  {'ok  ' if ok else 'FAIL'} {text}", flush=True)

    try:
        errors: list[str] = []

        def agent(n: int, prefix: str = "a", calls: int = calls) -> None:
            try:
                with Ward(sock) as client:
                    for i in range(calls):
                        r = client.call("effect", call_id=f"{prefix}{n}-{i}")
                        if r["status"] != "succeeded":
                            errors.append(f"a{n}-{i}: {r['status']}")
            except Exception as e:  # a lost connection or a protocol error fails the soak
                errors.append(f"agent {n}: {e}")

        # Warm up with the same parallelism before the baseline: the zygote, statement
        # caches and the cgroup pool (about four fds per concurrent call) reach their size.
        warm = [threading.Thread(target=agent, args=(n, "w", 50)) for n in range(agents)]
        for t in warm:
            t.start()
        for t in warm:
            t.join()
        wait_for_connections_closed(serve.pid, listening)
        start = resources(serve.pid)
        t0 = time.time()
        threads = [threading.Thread(target=agent, args=(n,)) for n in range(agents)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.time() - t0
        total = agents * calls
        wait_for_connections_closed(serve.pid, listening)
        end = resources(serve.pid)
        print(f"soak: {agents} agents × {calls} calls = {total} calls in {seconds:.1f} s ({total / seconds:.0f} calls/s)")
        print(f"  supervisor at start: {start[0]} fds, {start[1]} threads, {start[2] / 1048576:.1f} MiB RSS")
        print(f"  supervisor at end:   {end[0]} fds, {end[1]} threads, {end[2] / 1048576:.1f} MiB RSS")
        check(not errors, f"every call succeeded ({len(errors)} errors{': ' + errors[0] if errors else ''})")
        with open(os.path.join(root, "workspace", "effects.log")) as f:
            lines = f.read().split()
        expected = {f"a{n}-{i}" for n in range(agents) for i in range(calls)}
        got = [line for line in lines if line.startswith("a")]
        check(len(got) == len(set(got)), f"no effect twice ({len(got) - len(set(got))} duplicates)")
        check(set(got) == expected, f"no effect lost ({len(expected - set(got))} missing)")
        sample = [f"a{n}-{i}" for n in range(agents) for i in range(0, calls, max(1, calls // 25))]
        with Ward(sock) as replays:
            check(all(replays.call("effect", call_id=c)["replayed"] for c in sample), f"{len(sample)} sampled calls replay")
        # Bounds: connections are gone, so fds and threads return near the start; RSS may
        # grow with SQLite's page cache, within 32 MiB.
        # The cgroup pool keeps about four fds per call slot and grows up to the peak number
        # of concurrent calls (one per agent), once; a leak would grow with calls.
        fd_bound = 4 * agents + 4
        check(end[0] <= start[0] + fd_bound, f"open fds bounded ({start[0]} → {end[0]}, at most +{fd_bound}: the pool's peak)")
        check(end[1] <= start[1] + 16, f"threads bounded ({start[1]} → {end[1]}, at most +16)")
        check(end[2] <= start[2] + 32 * 1048576, f"RSS bounded ({start[2] / 1048576:.1f} → {end[2] / 1048576:.1f} MiB, at most +32 MiB)")
        verify = subprocess.run([ward, "ledger", "verify"], cwd=root, capture_output=True)
        check(verify.returncode == 0, "ward ledger verify passes")
    finally:
        serve.terminate()
        serve.wait()
    if not failed:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
