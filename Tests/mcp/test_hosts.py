"""`ward mcp` under real agent hosts, as their users wire them, with scripted models (no network,
no API keys): the OpenAI Agents SDK (`openai-agents`: `MCPServerStdio`, its request retries and its
`tool_meta_resolver`) and LangGraph through `langchain-mcp-adapters` (`MultiServerMCPClient`, a
session per tool call). What must hold whatever the host does: a non-idempotent tool runs once,
through client-side retries, repeated runs and a crash of ward mid-call; and the tools' annotations
reach the host as ward publishes them. Run by Scripts/test (WARD names the ward binary)."""

from __future__ import annotations

import asyncio
import os
import unittest
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from agents import Agent, RunConfig, Runner
from agents.mcp import MCPServerStdio, MCPServerStdioParams, MCPToolMetaContext
from agents.testing import ScriptedModel, assistant_message, function_call
from agents.tool_context import ToolContext
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.sessions import StdioConnection
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import McpError

from mcp_harness import HINTS, WARD, Place, PlaceTest, eventually

# The SDK traces to OpenAI's servers by default; these tests never leave the machine.
NO_TRACING: dict[str, Any] = {"tracing_disabled": True}


def agents_params(place: Place) -> MCPServerStdioParams:
    """`ward mcp` for the Agents SDK's MCPServerStdio."""
    p = place.params()
    return {"command": p.command, "args": p.args, "cwd": str(p.cwd)}


def langchain_connection(place: Place) -> StdioConnection:
    """`ward mcp` as a langchain-mcp-adapters stdio connection."""
    p = place.params()
    return {"transport": "stdio", "command": p.command, "args": p.args, "cwd": str(p.cwd)}


def tool_output(model: Any) -> str:
    """The text of the last tool output a ScriptedModel was given (a string, or a list of
    input_text parts)."""
    last = model.last_call.input[-1]
    assert last["type"] == "function_call_output", last
    output = last["output"]
    if isinstance(output, str):
        return output
    return "".join(part.get("text", "") for part in output)


class Tap:
    """The write end of an MCP client's stdio transport, noting the method of each message the
    host sends: what went to ward over the wire, whatever the SDK reports."""

    def __init__(self, inner: Any, methods: list[str]) -> None:
        self.inner = inner
        self.methods = methods

    async def send(self, message: Any) -> None:
        self.methods.append(str(getattr(message.message.root, "method", "")))
        await self.inner.send(message)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def __aenter__(self) -> Tap:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> bool | None:
        result: bool | None = await self.inner.__aexit__(*exc)
        return result


# The lint environment has no agents package: MCPServerStdio is Any there (and typed elsewhere).
class TappedStdio(MCPServerStdio):  # type: ignore[misc, unused-ignore]
    """MCPServerStdio whose requests are counted on the wire. `create_streams` is the SDK's own
    hook for the transport; everything else (sessions, timeouts, retries) is the SDK's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.methods: list[str] = []

    @asynccontextmanager
    async def create_streams(self) -> AsyncIterator[tuple[Any, Any]]:
        async with stdio_client(self.params) as (read, write):
            yield read, Tap(write, self.methods)


def send_graph(tools: list[Any], arguments: dict[str, Any]) -> Any:
    """A LangGraph agent whose scripted model asks for `slow_send` once, then answers with what
    the tool said; the tools run in LangGraph's prebuilt ToolNode."""

    def model(state: MessagesState) -> dict[str, list[Any]]:
        last = state["messages"][-1]
        if isinstance(last, ToolMessage):
            return {"messages": [AIMessage(content=f"the tool said: {last.text}")]}
        # The same tool call ID every run: a restarted host replays its model's decision.
        return {"messages": [AIMessage(content="", tool_calls=[{"name": "slow_send", "args": arguments, "id": "call-invoice"}])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", model)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition)
    graph.add_edge("tools", "model")
    return graph.compile()


async def run_agent(model: Any, server: Any, prompt: str) -> Any:
    """An agent run on the scripted `model` with `server` (a ward of its own), to its end;
    the model must have made every turn it was scripted for."""
    async with server:
        result = await Runner.run(Agent(name="sender", model=model, mcp_servers=[server]), prompt, run_config=RunConfig(**NO_TRACING))
    model.assert_complete()
    return result


class AgentsSDKTests(PlaceTest):

    async def test_an_agent_calls_a_tool_once_and_reads_its_output(self) -> None:
        model = ScriptedModel([[function_call("send", {"message": "hello"}, call_id="call-1")], [assistant_message("sent it")]])
        result = await run_agent(model, MCPServerStdio(agents_params(self.place)), "send hello")
        self.assertEqual(result.final_output, "sent it")
        # The model's second turn was given what the tool printed, as ward answered it.
        self.assertEqual(tool_output(model), "sent hello\n")
        self.assertEqual(self.place.lines("outbox.log"), ["hello"])
        [call] = self.place.calls()
        self.assertEqual((call["tool"], call["status"], call["executions"]), ("send", "succeeded", 1))

    async def test_the_sdks_retries_after_a_client_timeout_run_the_tool_once(self) -> None:
        # The SDK's session gives up on the request after 1.5 s (it sends no cancellation) and
        # retries it 50 ms later, while the 2 s tool is still running: ward must see the retry
        # as the same call, and answer it with that call's outcome.
        model = ScriptedModel([[function_call("slow_send", {"message": "retried", "seconds": 2}, call_id="call-1")],
                               [assistant_message("done")]])
        server = TappedStdio(agents_params(self.place), client_session_timeout_seconds=1.5, max_retry_attempts=2,
                             retry_backoff_seconds_base=0.05)
        await run_agent(model, server, "send it")
        # The SDK did retry: two tools/call requests went to ward.
        self.assertEqual(server.methods.count("tools/call"), 2, server.methods)
        self.assertEqual(self.place.lines("started.log"), ["retried"])
        self.assertEqual(self.place.lines("outbox.log"), ["retried"])
        [call] = self.place.calls()
        self.assertEqual((call["tool"], call["status"], call["executions"]), ("slow_send", "succeeded", 1))
        # What the model got is the retry's answer: the one execution's output, marked replayed.
        seen = tool_output(model)
        self.assertTrue(seen.startswith(f"[ward: call {call['callId']} already ran"), seen)
        self.assertTrue(seen.endswith("sent retried\n"), seen)

    async def test_a_resolved_call_id_names_the_call_and_a_second_run_replays(self) -> None:
        given: list[str] = []

        def stable_id(context: MCPToolMetaContext) -> dict[str, Any]:
            # The model's tool call ID is stable across a resumed run: ward's call ID follows it.
            # For a tool call the SDK's run context is a ToolContext, which carries that ID.
            assert isinstance(context.run_context, ToolContext)
            call_id = f"agent-run-7:{context.run_context.tool_call_id}"
            given.append(call_id)
            return {"ward/callId": call_id}

        async def run() -> str:
            model = ScriptedModel([[function_call("send", {"message": "once"}, call_id="call-42")], [assistant_message("done")]])
            # A server (a ward) of its own per run, as a host started again would have.
            await run_agent(model, MCPServerStdio(agents_params(self.place), tool_meta_resolver=stable_id), "send once")
            return tool_output(model)

        first = await run()
        self.assertEqual(first, "sent once\n")
        self.assertEqual(given, ["agent-run-7:call-42"])
        [call] = self.place.calls()
        self.assertEqual(call["callId"], "agent-run-7:call-42")
        second = await run()
        self.assertEqual(given, ["agent-run-7:call-42"] * 2)
        self.assertTrue(second.startswith("[ward: call agent-run-7:call-42 already ran"), second)
        self.assertTrue(second.endswith("sent once\n"), second)
        self.assertEqual(self.place.lines("outbox.log"), ["once"])
        self.assertEqual([c["callId"] for c in self.place.calls()], ["agent-run-7:call-42"])

    async def test_a_retry_after_the_dropped_answer_is_answered_from_the_ledger(self) -> None:
        # The first request times out at 0.5 s; the 1 s tool then finishes and its answer is read
        # off the pipe by the SDK's transport and dropped (nobody awaits that request any more);
        # the retry comes after the SDK's backoff, with no call ID. The host asked for nothing
        # else in between, so ward takes the repeat for a retry of the same call.
        model = ScriptedModel([[function_call("slow_send", {"message": "late", "seconds": 1}, call_id="call-9")],
                               [assistant_message("done")]])
        server = TappedStdio(agents_params(self.place), client_session_timeout_seconds=0.5, max_retry_attempts=3)
        await run_agent(model, server, "send it")
        self.assertEqual(server.methods.count("tools/call"), 2, server.methods)
        self.assertEqual(self.place.lines("started.log"), ["late"])
        self.assertEqual(self.place.lines("outbox.log"), ["late"])
        [call] = self.place.calls()
        self.assertEqual(call["executions"], 1)
        seen = tool_output(model)
        self.assertTrue(seen.startswith(f"[ward: call {call['callId']} already ran"), seen)


class LangGraphTests(PlaceTest):

    async def test_tools_load_with_wards_annotations_in_their_metadata(self) -> None:
        client = MultiServerMCPClient({"ward": langchain_connection(self.place)})
        tools = {t.name: t for t in await client.get_tools()}
        self.assertEqual(sorted(tools), sorted(HINTS))
        # The adapter puts the MCP annotations in the LangChain tool's metadata, key for key.
        for name, hints in HINTS.items():
            metadata = tools[name].metadata
            assert metadata is not None, name
            self.assertEqual((metadata["readOnlyHint"], metadata["idempotentHint"], metadata["destructiveHint"], metadata["openWorldHint"]),
                             hints, name)
        # The loaded tools work (a session, hence a ward, of their own per call): the answer
        # carries ward's structured result as the message's artifact.
        answer = await tools["send"].ainvoke({"type": "tool_call", "name": "send", "args": {"message": "hi"}, "id": "call-1"})
        self.assertIsInstance(answer, ToolMessage)
        self.assertEqual(answer.status, "success")
        self.assertEqual(answer.text, "sent hi\n")
        self.assertEqual(answer.artifact["structured_content"]["status"], "succeeded")
        self.assertFalse(answer.artifact["structured_content"]["replayed"])
        self.assertEqual(self.place.lines("outbox.log"), ["hi"])

    async def test_a_graph_run_again_after_ward_crashed_never_sends_twice(self) -> None:
        arguments = {"message": "invoice", "seconds": 30}

        async def graph() -> Any:
            # A new client every time, as a host started again makes.
            return send_graph(await MultiServerMCPClient({"ward": langchain_connection(self.place)}).get_tools(), arguments)

        first = asyncio.create_task((await graph()).ainvoke({"messages": [HumanMessage("send the invoice")]}))
        self.assertTrue(await asyncio.to_thread(eventually, lambda: self.place.lines("started.log") == ["invoice"]))
        self.place.kill_ward()
        # The tool's session dies with ward; LangGraph's ToolNode lets the error end the run.
        with self.assertRaises(McpError):
            await asyncio.wait_for(first, timeout=10)

        # From scratch: the model asks for the same call; ward answers that it is in doubt.
        state = await (await graph()).ainvoke({"messages": [HumanMessage("send the invoice")]})
        refused = state["messages"][-2]
        self.assertIsInstance(refused, ToolMessage)
        self.assertEqual(refused.status, "error")
        self.assertIn("in doubt", refused.text)
        self.assertIn("ward ledger resolve", refused.text)
        # The model read the refusal.
        self.assertIn("in doubt", state["messages"][-1].text)
        self.assertEqual(self.place.lines("started.log"), ["invoice"])
        [call] = self.place.calls()
        self.assertEqual(call["status"], "in-doubt")
        self.assertIn(call["callId"], refused.text)

        resolved = self.place.ward("ledger", "resolve", "--ledger", str(self.place.ledger), self.place.run_id, call["callId"],
                                   "--as", "executed", "--note", "checked")
        self.assertEqual(resolved.returncode, 0, resolved.stderr)
        state = await (await graph()).ainvoke({"messages": [HumanMessage("send the invoice")]})
        settled = state["messages"][-2]
        self.assertIsInstance(settled, ToolMessage)
        self.assertEqual(settled.status, "success")
        self.assertTrue(settled.text.startswith(f"[ward: call {call['callId']} already ran"), settled.text)
        self.assertIn("settled as executed by operator: checked", settled.text)
        self.assertTrue(settled.artifact["structured_content"]["replayed"])
        self.assertEqual(self.place.lines("started.log"), ["invoice"])
        # The killed run never reached its send; ward did not run it to get there.
        self.assertEqual(self.place.lines("outbox.log"), [])
        self.assertEqual([c["callId"] for c in self.place.calls()], [call["callId"]])


if __name__ == "__main__":
    os.environ.setdefault("WARD", WARD)
    unittest.main()
