#!/usr/bin/env python3
"""ward's figures on a PostgreSQL ledger, against DBOS on the same server, in one run.

    bench_postgres.py WARD_BENCH WARD [--iterations N] [--calls N] [--dbos-python PYTHON] [--json FILE]

Starts a throwaway PostgreSQL server (Scripts/pg-server; fsync and synchronous_commit on)
and measures, each on a database of its own:

- ward's durable step: `journal.record` through the ledger (ward-bench --postgres), median;
- a DBOS step: one `@DBOS.step` of a workflow of N steps (its checkpoint in DBOS's system
  database on the same server), median per step, when PYTHON has `dbos` installed;
- throughput: three `ward serve` (three simulated hosts) on one ledger, 8 agents spread over
  them, each making CALLS non-idempotent calls; calls per second in total, and every effect
  exactly once; then the same on one SQLite ledger on this host, the machine's own ceiling
  for the workload.

Budgets (docs/performance.md): durable step <= 1 ms and <= 0.5x a DBOS step; >= 1,000 calls/s.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
sys.path.insert(0, str(HERE))
from ward_client import Ward  # noqa: E402
from ward_harness import policy_directory  # noqa: E402

PG = str(HERE / "pg-server")

DBOS_STEP = r"""
import statistics, sys, time
from dbos import DBOS
DBOS(config={"name": "bench", "system_database_url": sys.argv[1], "log_level": "ERROR"})
n = int(sys.argv[2])
times = []

@DBOS.step()
def step(i: int) -> str:
    return f"tool call {i}"

@DBOS.workflow()
def flow() -> None:
    for i in range(n):
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)

DBOS.launch()
flow()
print(statistics.median(times) * 1e6)
DBOS.destroy()
"""

TOOLS = """
[tools.append]
command = ["/bin/sh", "-c", "printf '%s\\\\n' \\"$1\\" >> log.txt", "sh", "{line}"]
effect = "non-idempotent"
"""


def psql(pg: str, sql: str) -> None:
    binary = sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))[-1]
    subprocess.run([str(binary), "-h", pg, "-U", "ward", "-d", "postgres", "-X", "-q", "-c", sql], check=True, capture_output=True)


def throughput(ward: str, url: str, root: Path, calls: int) -> tuple[float, bool]:
    root.mkdir()
    policies = policy_directory(str(root), TOOLS)
    serves, sockets, workspaces = [], [], []
    for i in range(3):
        host = root / f"host-{i}"
        host.mkdir()
        socket = str(host / "sock" / "s.sock")
        p = subprocess.Popen([ward, "serve", "--ledger", url, "--policies", policies, "--workspace", str(host / "ws"), "--socket", socket,
                              "--run-id", f"t{i}"], cwd=host, env=dict(os.environ, WARD_HOST=f"host-{i}"),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert p.stdout is not None
        p.stdout.readline()
        serves.append(p)
        sockets.append(socket)
        workspaces.append(host / "ws")
    errors: list[str] = []

    def agent(n: int) -> None:
        try:
            with Ward(sockets[n % 3]) as w:
                for k in range(calls):
                    w.call("append", {"line": f"a{n}-{k}"}, call_id=f"a{n}-{k}")
        except Exception as e:  # noqa: BLE001 - counted as a failure
            errors.append(repr(e))

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(8)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for p in serves:
        p.terminate()
        p.wait(30)
    exact = not errors
    for e in errors[:3]:
        print(f"agent failed: {e}", file=sys.stderr)
    for i, ws in enumerate(workspaces):
        log = ws / "log.txt"
        lines = log.read_text().splitlines() if log.exists() else []
        expected = sorted(f"a{n}-{k}" for n in range(i, 8, 3) for k in range(calls))
        exact = exact and sorted(lines) == expected
    return 8 * calls / elapsed, exact


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bench", type=os.path.abspath)
    ap.add_argument("ward", type=os.path.abspath, help="the ward binary (run from other directories)")
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--dbos-python")
    ap.add_argument("--json")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ward-bench-pg-"))
    os.chmod(root, 0o755)
    pg = str(root / "pg")
    base = subprocess.run([PG, "start", pg], check=True, capture_output=True, text=True).stdout.strip()
    try:
        def database(name: str) -> str:
            psql(pg, f"CREATE DATABASE {name}")
            return base.replace("/ward?", f"/{name}?")

        ward_step = json.loads(subprocess.run([a.bench, "--postgres", database("steps"), "--iterations", str(a.iterations)],
                                              check=True, capture_output=True, text=True).stdout)
        dbos_us = None
        if a.dbos_python:
            socket_dir = pg
            dbos_url = f"postgresql+psycopg://ward@/dbos?host={socket_dir}"
            psql(pg, "CREATE DATABASE dbos")
            out = subprocess.run([a.dbos_python, "-c", DBOS_STEP, dbos_url, str(a.iterations)], capture_output=True, text=True, timeout=600)
            if out.returncode == 0:
                dbos_us = float(out.stdout.strip().splitlines()[-1])
            else:
                print(f"DBOS step: failed: {out.stderr[-2000:]}", file=sys.stderr)
        rate, exact = throughput(a.ward, database("calls"), root / "calls-postgres", a.calls)
        # The same three supervisors on one SQLite file on this host: what the machine itself
        # (the agents, the supervisors, a sandboxed process per call) allows this workload.
        local_rate, local_exact = throughput(a.ward, str(root / "calls.sqlite"), root / "calls-sqlite", a.calls)
        rows = {
            "journalRecordUs": ward_step["journalRecordUs"], "beginFinishUs": ward_step["beginFinishUs"], "dbosStepUs": dbos_us,
            "stepRatio": ward_step["journalRecordUs"] / dbos_us if dbos_us else None,
            "callsPerSecond": rate, "exactlyOnce": exact, "calls": 8 * a.calls,
            "sqliteCallsPerSecond": local_rate, "sqliteExactlyOnce": local_exact,
        }
        def verdict(ok: bool) -> str:
            return "met" if ok else "MISSED"

        step_ms = ward_step["journalRecordUs"] / 1000
        print(f"durable step (journal.record) on PostgreSQL: {step_ms:.2f} ms (budget <= 1 ms: {verdict(step_ms <= 1)})")
        print(f"begin + finish on PostgreSQL: {ward_step['beginFinishUs'] / 1000:.2f} ms")
        if dbos_us:
            ratio = rows["stepRatio"]
            print(f"DBOS step on the same server: {dbos_us / 1000:.2f} ms; ward / DBOS = {ratio:.2f}x "
                  f"(budget <= 0.5x: {verdict(ratio <= 0.5)})")
        else:
            print("DBOS step: not measured (no Python with dbos: --dbos-python)")
        print(f"3 supervisors, 8 agents x {a.calls} calls: {rate:.0f} calls/s (budget >= 1,000: {verdict(rate >= 1000)}), "
              f"every effect once: {exact}")
        print(f"the same on one SQLite ledger on this host: {local_rate:.0f} calls/s, every effect once: {local_exact} "
              f"(PostgreSQL / SQLite = {rate / local_rate:.2f}x)")
        if a.json:
            Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")
    finally:
        subprocess.run([PG, "stop", pg, "immediate"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
