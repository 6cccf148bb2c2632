"""A gated tool (`approve = true`) served by `ward mcp` to the official MCP client: a host
without elicitation gets a result that says how to approve, and the call runs once when
asked again after `ward approve`; a host with elicitation asks its user, and the answer is
recorded as the call's verdict, naming the host."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import mcp.types as types
from mcp import ClientSession
from mcp.client.stdio import stdio_client

from mcp_harness import WARD, Place, PlaceTest, session, text


@asynccontextmanager
async def eliciting(place: Place, answer: types.ElicitResult, asked: list[str]) -> AsyncIterator[ClientSession]:
    """A session whose client declares elicitation and answers every request with `answer`."""
    async def callback(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult | types.ErrorData:
        asked.append(params.message)
        return answer

    async with stdio_client(place.params()) as (read, write), \
            ClientSession(read, write, elicitation_callback=callback,
                          client_info=types.Implementation(name="approval-test-host", version="1")) as s:
        await s.initialize()
        yield s


class ApprovalTests(PlaceTest):

    async def test_without_elicitation_the_result_says_how_to_approve_and_the_repeat_runs_once(self) -> None:
        async with session(self.place) as s:
            waiting = await s.call_tool("gated_send", {"message": "hello"})
            self.assertTrue(waiting.isError)
            assert waiting.meta is not None
            self.assertEqual(waiting.meta["ward/error"], "awaiting-approval")
            call_id = waiting.meta["ward/callId"]
            self.assertIn(f"ward approve mcp-test {call_id}", text(waiting))
            self.assertEqual(self.place.lines("outbox.log"), [])
            # Asked again before a verdict: still the same single gate.
            again = await s.call_tool("gated_send", {"message": "hello"})
            self.assertTrue(again.isError)
            self.assertEqual([c["status"] for c in self.place.calls()], ["awaiting-approval"])

            approved = self.place.ward("approve", "mcp-test", call_id, "--note", "ok", "--ledger", str(self.place.ledger))
            self.assertEqual(approved.returncode, 0, approved.stderr)
            sent = await s.call_tool("gated_send", {"message": "hello"})
            self.assertFalse(sent.isError, text(sent))
            self.assertEqual(text(sent), "sent hello\n")
        self.assertEqual(self.place.lines("outbox.log"), ["hello"])
        self.assertEqual([(c["callId"], c["status"]) for c in self.place.calls()], [(call_id, "succeeded")])

    async def test_a_gated_idempotent_tool_is_gated_once_and_runs_once_approved(self) -> None:
        async with session(self.place) as s:
            for _ in range(2):
                waiting = await s.call_tool("gated_touch", {"name": "a"})
                self.assertTrue(waiting.isError)
            self.assertEqual([c["status"] for c in self.place.calls()], ["awaiting-approval"])
            call_id = self.place.calls()[0]["callId"]
            self.assertEqual(self.place.ward("approve", "mcp-test", call_id, "--ledger", str(self.place.ledger)).returncode, 0)
            ran = await s.call_tool("gated_touch", {"name": "a"})
            self.assertFalse(ran.isError, text(ran))
        self.assertEqual(self.place.lines("touched.log"), ["a"])
        self.assertEqual([(c["callId"], c["status"]) for c in self.place.calls()], [(call_id, "succeeded")])

    async def test_a_host_that_elicits_approves_for_its_user_and_the_call_runs(self) -> None:
        asked: list[str] = []
        accept = types.ElicitResult(action="accept", content={"approve": True, "note": "the user said yes"})
        async with eliciting(self.place, accept, asked) as s:
            sent = await s.call_tool("gated_send", {"message": "hi"})
            self.assertFalse(sent.isError, text(sent))
            self.assertEqual(text(sent), "sent hi\n")
        self.assertEqual(len(asked), 1)
        self.assertIn("gated_send", asked[0])
        self.assertIn('"message":"hi"', asked[0])
        self.assertEqual(self.place.lines("outbox.log"), ["hi"])
        call = self.place.calls()[0]
        shown = self.place.ward("ledger", "show", "mcp-test", call["callId"], "--json", "--ledger", str(self.place.ledger))
        approval = json.loads(shown.stdout)["approval"]
        self.assertEqual(approval["verdict"], "approved")
        self.assertTrue(approval["by"].endswith("via approval-test-host"), approval)
        self.assertEqual(approval["note"], "the user said yes")

    async def test_a_host_whose_user_declines_denies_the_call(self) -> None:
        asked: list[str] = []
        async with eliciting(self.place, types.ElicitResult(action="decline"), asked) as s:
            denied = await s.call_tool("gated_send", {"message": "no"})
            self.assertTrue(denied.isError)
            assert denied.structuredContent is not None
            self.assertEqual(denied.structuredContent["status"], "denied")
            self.assertIn("declined in approval-test-host", text(denied))
            self.assertNotIn("already ran", text(denied))
        self.assertEqual(self.place.lines("outbox.log"), [])
        self.assertEqual([c["status"] for c in self.place.calls()], ["denied"])

    async def test_a_host_whose_user_cancels_leaves_the_call_waiting(self) -> None:
        asked: list[str] = []
        async with eliciting(self.place, types.ElicitResult(action="cancel"), asked) as s:
            waiting = await s.call_tool("gated_send", {"message": "later"})
            self.assertTrue(waiting.isError)
            assert waiting.meta is not None
            self.assertEqual(waiting.meta["ward/error"], "awaiting-approval")
        self.assertEqual([c["status"] for c in self.place.calls()], ["awaiting-approval"])
        pending = self.place.ward("approve", "--json", "--ledger", str(self.place.ledger))
        self.assertEqual([p["arguments"] for p in json.loads(pending.stdout)], [{"message": "later"}])


class ApprovalPromptTests(PlaceTest):

    def test_a_host_gone_while_its_user_is_asked_lets_ward_exit_and_the_call_waits(self) -> None:
        ward = subprocess.Popen([WARD, *self.place.args()], cwd=self.place.root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert ward.stdin is not None and ward.stdout is not None

        def send(message: dict[str, Any]) -> None:
            assert ward.stdin is not None
            ward.stdin.write(json.dumps(message) + "\n")
            ward.stdin.flush()

        send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {"elicitation": {}}, "clientInfo": {"name": "gone-host", "version": "1"}}})
        ward.stdout.readline()
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        # Two requests for one call: its user is asked once.
        for i in (2, 3):
            send({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "gated_send", "arguments": {"message": "m"}}})
        asked = json.loads(ward.stdout.readline())
        self.assertEqual(asked["method"], "elicitation/create")
        ward.stdin.close()
        self.assertEqual(ward.wait(timeout=20), 0)
        rest = [json.loads(line) for line in ward.stdout.read().splitlines()]
        self.assertEqual([m.get("method") for m in rest if "method" in m], [], "one prompt per call")
        self.assertEqual({m["result"]["_meta"]["ward/error"] for m in rest if "result" in m}, {"awaiting-approval"})
        ward.stdout.close()
        self.assertEqual([c["status"] for c in self.place.calls()], ["awaiting-approval"])
