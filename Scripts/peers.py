#!/usr/bin/env python3
"""Durable-step costs of ward's peers, for Scripts/bench: LangGraph's SqliteSaver and a
DBOS step on its SQLite system database. Prints one JSON object; a peer that is not
installed is reported as null (the bench says so and skips its rows).

    python3 Scripts/peers.py STEPS
"""
# No `from __future__ import annotations`: LangGraph reads the state classes' annotations at
# run time, and those made inside a function would not resolve from strings.
import json
import operator
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from typing import Annotated, Any, TypedDict


class Results(TypedDict):
    """The printed object; a figure stays null when its peer failed before reaching it."""
    langgraphStepMicros: float | None
    dbosStepMicros: float | None
    langgraphStorageBytes: int | None
    finalStateBytes: int | None
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
    out: Results = {"langgraphStepMicros": None, "dbosStepMicros": None, "langgraphStorageBytes": None, "finalStateBytes": None,
                    "errors": []}
    for name, fn in (("langgraph", langgraph), ("dbos", dbos)):
        try:
            fn(steps, out)
        except Exception as e:  # a missing or broken peer is reported, not fatal
            out["errors"].append(f"{name}: {type(e).__name__}: {e}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
