#!/usr/bin/env python3
"""Durable-step costs of ward's peers, for Scripts/bench: LangGraph's SqliteSaver and a
DBOS step on its SQLite system database, and LangGraph on ward (ward_client's WardSaver
against SqliteSaver, the same graph in the same run) with the Python client's journal round
trip. Prints one JSON object; a peer that is not installed is reported as null (the bench
says so and skips its rows).

    python3 Scripts/peers.py STEPS [WARD]     # WARD: the ward binary (.build/release/ward)
"""
# No `from __future__ import annotations`: LangGraph reads the state classes' annotations at
# run time, and those made inside a function would not resolve from strings.
import json
import operator
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))


class Results(TypedDict):
    """The printed object; a figure stays null when its peer failed before reaching it."""
    langgraphStepMicros: float | None
    dbosStepMicros: float | None
    langgraphStorageBytes: int | None
    finalStateBytes: int | None
    langgraphSqliteLoopStepMicros: float | None
    langgraphWardStepMicros: float | None
    langgraphSqliteLoopStorageBytes: int | None
    langgraphWardStorageBytes: int | None
    pythonJournalMicros: float | None
    errors: list[str]


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2]


def langgraph(steps: int, out: Results) -> None:
    # Imported here: a peer that is not installed is reported, not fatal.
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, StateGraph

    class State(TypedDict):
        items: list[dict[str, Any]]

    def append(state: State) -> dict[str, Any]:
        return {"items": state["items"] + [{"step": len(state["items"]), "note": "x" * 1000}]}

    d = tempfile.mkdtemp()
    try:
        # One durable step = one graph super-step checkpointed by SqliteSaver.
        conn = sqlite3.connect(os.path.join(d, "lg.sqlite"), check_same_thread=False)
        saver = SqliteSaver(conn)
        g = StateGraph(State)
        g.add_node("append", append)
        g.set_entry_point("append")
        g.add_edge("append", END)
        app = g.compile(checkpointer=saver)
        times = []
        for i in range(steps):
            t0 = time.perf_counter()
            app.invoke({"items": []}, {"configurable": {"thread_id": f"t{i}"}})
            times.append((time.perf_counter() - t0) * 1e6)
        out["langgraphStepMicros"] = median(times)

        # Storage: 200 steps each appending 1 KiB to the state of one thread, the idiomatic
        # way (a list reducer: each step adds one item, the state accumulates).
        class Growing(TypedDict):
            items: Annotated[list[dict[str, Any]], operator.add]

        def add_one(state: Growing) -> dict[str, Any]:
            return {"items": [{"step": len(state["items"]), "note": "x" * 1000}]}

        g2 = StateGraph(Growing)
        g2.add_node("add", add_one)
        g2.set_entry_point("add")
        g2.add_edge("add", END)
        conn2 = sqlite3.connect(os.path.join(d, "lg-storage.sqlite"), check_same_thread=False)
        app2 = g2.compile(checkpointer=SqliteSaver(conn2))
        config: RunnableConfig = {"configurable": {"thread_id": "storage"}}
        state = None
        for _ in range(200):
            start: Growing = {"items": []}
            state = app2.invoke(start, config)
        conn2.commit()
        conn2.close()
        out["langgraphStorageBytes"] = os.path.getsize(os.path.join(d, "lg-storage.sqlite"))
        out["finalStateBytes"] = len(json.dumps(state, separators=(",", ":")))
    finally:
        shutil.rmtree(d, ignore_errors=True)


LOOP_STEPS = 200


def serve(ward: str, root: str, run: str) -> tuple[subprocess.Popen[bytes], str]:
    """`ward serve` on a ledger in `root`; returns it and its socket once it listens."""
    sock_dir = os.path.join(root, "sock")
    os.makedirs(sock_dir, mode=0o700, exist_ok=True)
    os.makedirs(os.path.join(root, "workspace"), exist_ok=True)
    socket_path = os.path.join(sock_dir, run + ".sock")
    process = subprocess.Popen([ward, "serve", "--policies", os.path.join(os.path.dirname(HERE), "policies"),
                                "--workspace", os.path.join(root, "workspace"), "--ledger", os.path.join(root, "ledger.sqlite"),
                                "--socket", socket_path, "--run-id", run], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    process.stdout.readline()
    return process, socket_path


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(30)
    if process.stdout is not None:
        process.stdout.close()


def database_bytes(path: str) -> int:
    """A SQLite database's size with its write-ahead log, if any."""
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


def langgraph_on_ward(ward: str, rounds: int, out: Results) -> None:
    """One LangGraph graph of LOOP_STEPS super-steps (each appends 1 KiB to a list channel),
    checkpointed by SqliteSaver and by ward_client's WardSaver in turn, in this one run:
    time per step (median of `rounds`) and what each stored. The Python client's
    journal.record round trip on the same ward."""
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, StateGraph

    from ward_client import Ward
    from ward_client.langgraph import WardSaver

    class Growing(TypedDict):
        items: Annotated[list[dict[str, Any]], operator.add]

    def add_one(state: Growing) -> dict[str, Any]:
        return {"items": [{"step": len(state["items"]), "note": "x" * 1000}]}

    def again(state: Growing) -> str:
        return "add" if len(state["items"]) < LOOP_STEPS else END

    graph = StateGraph(Growing)
    graph.add_node("add", add_one)
    graph.set_entry_point("add")
    graph.add_conditional_edges("add", again)

    def per_step(saver: BaseCheckpointSaver[Any], thread: str) -> float:
        app = graph.compile(checkpointer=saver)
        config: RunnableConfig = {"configurable": {"thread_id": thread}, "recursion_limit": LOOP_STEPS + 10}
        start: Growing = {"items": []}
        t0 = time.perf_counter()
        app.invoke(start, config, durability="sync")
        return (time.perf_counter() - t0) * 1e6 / LOOP_STEPS

    d = tempfile.mkdtemp()
    try:
        # ward's storage: the ledger's growth over one round, against a ledger with the run only.
        empty, _ = serve(ward, os.path.join(d, "empty"), "bench")
        stop(empty)
        process, socket_path = serve(ward, os.path.join(d, "ward"), "bench")
        sqlite_times, ward_times, journal = [], [], []
        client = Ward(socket_path)
        saver = WardSaver(client)
        for r in range(rounds):
            conn = sqlite3.connect(os.path.join(d, f"lg-{r}.sqlite"), check_same_thread=False)
            sqlite_times.append(per_step(SqliteSaver(conn), f"t{r}"))
            conn.close()
            ward_times.append(per_step(saver, f"t{r}"))
            if r == 0:
                client.close()
                stop(process)  # the first round's records, on disk
                out["langgraphWardStorageBytes"] = (database_bytes(os.path.join(d, "ward", "ledger.sqlite"))
                                                    - database_bytes(os.path.join(d, "empty", "ledger.sqlite")))
                process, socket_path = serve(ward, os.path.join(d, "ward"), "bench")
                client = Ward(socket_path)
                saver = WardSaver(client)
        for i in range(200):
            t0 = time.perf_counter()
            client.request("journal.record", {"key": f"k{i}", "value": f"model answer {i}"})
            journal.append((time.perf_counter() - t0) * 1e6)
        client.close()
        stop(process)
        out["langgraphSqliteLoopStepMicros"] = median(sqlite_times)
        out["langgraphWardStepMicros"] = median(ward_times)
        out["langgraphSqliteLoopStorageBytes"] = database_bytes(os.path.join(d, "lg-0.sqlite"))
        out["pythonJournalMicros"] = median(journal)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def dbos(steps: int, out: Results) -> None:
    # Imported here: a peer that is not installed is reported, not fatal.
    from dbos import DBOS, DBOSConfig

    d = tempfile.mkdtemp()
    try:
        config: DBOSConfig = {"name": "ward-bench", "system_database_url": f"sqlite:///{os.path.join(d, 'dbos.sqlite')}",
                              "log_level": "WARNING"}
        DBOS(config=config)

        # The lint environment has no DBOS, so its decorators are untyped there.
        @DBOS.step()  # type: ignore[untyped-decorator]
        def step(i: int) -> int:
            return i

        @DBOS.workflow()  # type: ignore[untyped-decorator]
        def workflow(n: int) -> list[float]:
            times = []
            for i in range(n):
                t0 = time.perf_counter()
                step(i)
                times.append((time.perf_counter() - t0) * 1e6)
            return times

        DBOS.launch()
        try:
            out["dbosStepMicros"] = median(workflow(steps))
        finally:
            DBOS.destroy()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    ward = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(HERE), ".build", "release", "ward")
    out: Results = {"langgraphStepMicros": None, "dbosStepMicros": None, "langgraphStorageBytes": None, "finalStateBytes": None,
                    "langgraphSqliteLoopStepMicros": None, "langgraphWardStepMicros": None, "langgraphSqliteLoopStorageBytes": None,
                    "langgraphWardStorageBytes": None, "pythonJournalMicros": None, "errors": []}
    runs: list[tuple[str, Callable[[], None]]] = [
        ("langgraph", lambda: langgraph(steps, out)), ("dbos", lambda: dbos(steps, out)),
        ("langgraph on ward", lambda: langgraph_on_ward(ward, 5, out)),
    ]
    for name, fn in runs:
        try:
            fn()
        except Exception as e:  # a missing or broken peer is reported, not fatal
            out["errors"].append(f"{name}: {type(e).__name__}: {e}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
