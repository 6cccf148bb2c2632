"""ward_client.langgraph against a real `ward serve`: LangGraph's own conformance suite for
checkpointers (langgraph-checkpoint-conformance, every capability, through the async methods
and again through the sync ones), each suite's records read back by a second saver from the
ledger, and the tool-call wrapper's replay. Run by Scripts/test."""

from __future__ import annotations

import asyncio
import json
import operator
import sys
import unittest
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "python"))
from langchain_core.runnables import RunnableConfig  # noqa: E402
from langgraph.checkpoint.base import CheckpointTuple, empty_checkpoint  # noqa: E402
from langgraph.checkpoint.conformance import checkpointer_test, validate  # noqa: E402
from langgraph.checkpoint.conformance.report import CapabilityReport  # noqa: E402
from langgraph.graph import END, StateGraph  # noqa: E402

import ward_client  # noqa: E402
from ward_client import Ward  # noqa: E402
from ward_client.langgraph import WardSaver  # noqa: E402
from ward_server import Server  # noqa: E402


class SyncWardSaver(WardSaver):
    """The suite calls only the async methods. WardSaver's async writes already run the sync
    ones in a thread; here its reads do too, so the suite checks every sync method."""

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None, before: RunnableConfig | None = None,
                    limit: int | None = None) -> AsyncIterator[CheckpointTuple]:
        for found in await asyncio.to_thread(lambda: [*self.list(config, filter=filter, before=before, limit=limit)]):
            yield found


def everything(saver: WardSaver) -> list[tuple[Any, ...]]:
    """All a saver serves, comparable: every checkpoint of every thread with its values,
    metadata, parent and pending writes."""
    return sorted(
        (t.config["configurable"]["thread_id"], t.config["configurable"]["checkpoint_ns"], t.checkpoint["id"],
         repr(sorted(t.checkpoint["channel_values"].items())), repr(sorted(t.checkpoint["channel_versions"].items())),
         repr(sorted(t.metadata.items())), None if t.parent_config is None else t.parent_config["configurable"]["checkpoint_id"],
         repr(t.pending_writes))
        for t in saver.list(None))


class ConformanceTest(unittest.TestCase):
    def conformance(self, kind: type[WardSaver]) -> None:
        readback: list[tuple[int, int, bool]] = []
        counter = iter(range(1000))

        @checkpointer_test(name=kind.__name__)
        async def factory() -> AsyncGenerator[WardSaver, None]:
            server = Server(run_id=f"conformance-{next(counter)}")
            ward, second = Ward(server.socket), None
            try:
                saver = kind(ward)
                yield saver
                # What the suite left, read back from the ledger by a new saver on the run.
                second = Ward(server.socket)
                again = WardSaver(second)
                readback.append((saver.records, again.records, everything(again) == everything(saver)))
            finally:
                ward.close()
                if second is not None:
                    second.close()
                server.stop()

        report: CapabilityReport = asyncio.run(validate(factory))
        report.print_report()
        for name, result in report.results.items():
            self.assertTrue(result.detected, f"{kind.__name__}: capability {name} not detected")
            self.assertTrue(result.passed, f"{kind.__name__}: {name} failed: {result.failures}")
        self.assertTrue(report.passed_all(), f"{kind.__name__}: {report.to_dict()}")
        self.assertEqual(len(readback), 8)
        for written, read, same in readback:
            self.assertGreater(written, 0)
            self.assertEqual(written, read, "a second saver read back a different number of records")
            self.assertTrue(same, "a second saver serves something else than the saver that wrote the records")

    def test_the_async_methods_pass_langgraphs_conformance_suite(self) -> None:
        self.conformance(WardSaver)

    def test_the_sync_methods_pass_it_too(self) -> None:
        self.conformance(SyncWardSaver)


class GrowingStateTest(unittest.TestCase):
    def run_loop(self, graph: StateGraph[Any], start: Any, run_id: str) -> tuple[Any, list[dict[str, Any]]]:
        """Runs `graph` with a WardSaver on a ward of its own; checks that a second saver reads
        back the same checkpoints and the final value of `items`; returns the final state and
        every put record."""
        server = Server(run_id=run_id)
        try:
            with Ward(server.socket) as ward:
                saver = WardSaver(ward)
                config: RunnableConfig = {"configurable": {"thread_id": "t"}, "recursion_limit": 100}
                final = graph.compile(checkpointer=saver).invoke(start, config, durability="sync")
                again = WardSaver(ward)
                self.assertEqual(everything(again), everything(saver))
                tip = again.get_tuple(config)
                assert tip is not None
                self.assertEqual(tip.checkpoint["channel_values"]["items"], final["items"])
                latest = ward.load()
                assert latest is not None
                records = [ward.load(seq) for seq in range(1, int(latest["seq"]) + 1)]
                return final, [r["state"] for r in records if r is not None and r["state"].get("op") == "put"]
        finally:
            server.stop()

    def test_a_list_that_grows_is_recorded_as_what_was_appended(self) -> None:
        class Growing(TypedDict):
            items: Annotated[list[dict[str, Any]], operator.add]

        def add_one(state: Growing) -> dict[str, Any]:
            return {"items": [{"step": len(state["items"]), "note": "x" * 1000}]}

        graph = StateGraph(Growing)
        graph.add_node("add", add_one)
        graph.set_entry_point("add")
        graph.add_conditional_edges("add", lambda state: "add" if len(state["items"]) < 30 else END)
        start: Growing = {"items": []}
        final, puts = self.run_loop(graph, start, "growing")
        self.assertEqual([item["step"] for item in final["items"]], list(range(30)))
        appended = [p for p in puts if any(isinstance(blob, dict) for _, _, blob in p["blobs"])]
        self.assertGreaterEqual(len(appended), 29, "each step after the first records only what it appended")
        self.assertLess(max(len(json.dumps(p)) for p in appended), 4000)

    def test_a_list_changed_in_place_is_recorded_whole(self) -> None:
        # A node that edits the list it was given (an item in place, an item added to the same
        # list object) changes what the last version serialized to: recorded whole, read back
        # as it was.
        class Plain(TypedDict):
            items: list[dict[str, int]]

        def edit(state: Plain) -> dict[str, Any]:
            items = state["items"]
            if items:
                items[0]["visits"] += 1
            items.append({"visits": 0})
            return {"items": items}

        graph = StateGraph(Plain)
        graph.add_node("edit", edit)
        graph.set_entry_point("edit")
        graph.add_conditional_edges("edit", lambda state: "edit" if len(state["items"]) < 4 else END)
        start: Plain = {"items": []}
        final, _ = self.run_loop(graph, start, "in-place")
        self.assertEqual(final["items"], [{"visits": 3}, {"visits": 0}, {"visits": 0}, {"visits": 0}])


class UnknownRecordTest(unittest.TestCase):
    def test_a_record_whose_fate_is_unknown_stops_the_saver_until_read_back(self) -> None:
        server = Server(run_id="unknown")
        try:
            with Ward(server.socket) as ward:
                saver = WardSaver(ward)
                config: RunnableConfig = {"configurable": {"thread_id": "u", "checkpoint_ns": ""}}
                first = saver.put(config, empty_checkpoint(), {"source": "input", "step": -1}, {})
                ward.timeout = 1e-9  # no answer in time: ward may have recorded it or not
                with self.assertRaises(ward_client.ServerTimeoutError):
                    saver.put(first, empty_checkpoint(), {"source": "loop", "step": 0}, {})
                ward.timeout = 30
                with self.assertRaisesRegex(ward_client.InternalError, "may or may not be in the ledger"):
                    saver.put(first, empty_checkpoint(), {"source": "loop", "step": 0}, {})
                # A new saver serves what the ledger holds.
                again = WardSaver(ward)
                self.assertIn(len([*again.list(config)]), (1, 2))
                self.assertEqual(again.get_tuple(first) is not None, True)
        finally:
            server.stop()


class ToolCallsTest(unittest.TestCase):
    def test_tool_calls_need_a_graph_run_with_sync_durability(self) -> None:
        from langchain_core.messages import AIMessage
        from langchain_core.tools import tool
        from langgraph.graph import START, MessagesState
        from langgraph.prebuilt import ToolNode

        from ward_client.langgraph import WardToolCalls

        @tool
        def echo(text: str) -> str:
            """Echo (run by ward)."""
            raise NotImplementedError

        server = Server(run_id="tool-calls")
        try:
            with Ward(server.socket) as ward:
                builder = StateGraph(MessagesState)
                builder.add_node("tools", ToolNode([echo], wrap_tool_call=WardToolCalls(ward)))
                builder.add_edge(START, "tools")
                graph = builder.compile(checkpointer=WardSaver(ward))
                asked: MessagesState = {"messages": [AIMessage("", tool_calls=[{"name": "echo", "args": {"text": "hi"}, "id": "c1"}])]}
                default: RunnableConfig = {"configurable": {"thread_id": "a"}}
                with self.assertRaisesRegex(Exception, "durability"):
                    graph.invoke(asked, default)
                config: RunnableConfig = {"configurable": {"thread_id": "s"}}
                done = graph.invoke(asked, config, durability="sync")
                self.assertEqual(done["messages"][-1].content, "hi")
                again = graph.invoke(asked, config, durability="sync")
                self.assertEqual(again["messages"][-1].content, "hi")
                self.assertEqual(ward.call("echo", {"text": "hi"}, call_id="langgraph/s/c1")["replayed"], True)
        finally:
            server.stop()


if __name__ == "__main__":
    unittest.main()
