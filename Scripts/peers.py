#!/usr/bin/env python3
"""Durable-step costs of ward's peers, for Scripts/bench: LangGraph's SqliteSaver and a
DBOS step on its SQLite system database. Prints one JSON object; a peer that is not
installed is reported as null (the bench says so and skips its rows).

    python3 Scripts/peers.py STEPS
"""
import json, os, shutil, sys, tempfile, time

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
out = {"langgraphStepMicros": None, "dbosStepMicros": None, "langgraphStorageBytes": None, "finalStateBytes": None, "errors": []}


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def langgraph():
    import sqlite3
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import StateGraph, END
    from typing import TypedDict

    class State(TypedDict):
        items: list

    def append(state):
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
        import operator
        from typing import Annotated

        class Growing(TypedDict):
            items: Annotated[list, operator.add]

        def add_one(state):
            return {"items": [{"step": len(state["items"]), "note": "x" * 1000}]}

        g2 = StateGraph(Growing)
        g2.add_node("add", add_one)
        g2.set_entry_point("add")
        g2.add_edge("add", END)
        conn2 = sqlite3.connect(os.path.join(d, "lg-storage.sqlite"), check_same_thread=False)
        app2 = g2.compile(checkpointer=SqliteSaver(conn2))
        config = {"configurable": {"thread_id": "storage"}}
        state = None
        for i in range(200):
            state = app2.invoke({"items": []}, config)
        conn2.commit()
        conn2.close()
        out["langgraphStorageBytes"] = os.path.getsize(os.path.join(d, "lg-storage.sqlite"))
        out["finalStateBytes"] = len(json.dumps(state, separators=(",", ":")))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def dbos():
    from dbos import DBOS, DBOSConfig

    d = tempfile.mkdtemp()
    try:
        config: DBOSConfig = {"name": "ward-bench", "system_database_url": f"sqlite:///{os.path.join(d, 'dbos.sqlite')}",
                              "log_level": "WARNING"}
        DBOS(config=config)

        @DBOS.step()
        def step(i):
            return i

        @DBOS.workflow()
        def workflow(n):
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


for name, fn in (("langgraph", langgraph), ("dbos", dbos)):
    try:
        fn()
    except Exception as e:  # a missing or broken peer is reported, not fatal
        out["errors"].append(f"{name}: {type(e).__name__}: {e}")
print(json.dumps(out))
