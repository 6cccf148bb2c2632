"""`ward mcp` driven by the official Python MCP SDK (`mcp`, from PyPI) over stdio: the tools and
their annotations, calls of each effect class, protocol errors, cancellation, progress, and the
crash windows of a non-idempotent call. Run by Scripts/test (WARD names the ward binary)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import unittest
from typing import Any

import mcp.types as types
from mcp.shared.exceptions import McpError

from mcp_harness import HINTS, WARD, Place, PlaceTest, eventually, session, text


class MCPClientTests(PlaceTest):

    async def test_tools_are_listed_with_what_ward_enforces(self) -> None:
        async with session(self.place) as s:
            listed = {t.name: t for t in (await s.list_tools()).tools}
        self.assertEqual(sorted(listed), sorted(HINTS))
        for name, (read_only, idempotent, destructive, open_world) in HINTS.items():
            a = listed[name].annotations
            assert a is not None, name
            self.assertEqual((a.readOnlyHint, a.idempotentHint, a.destructiveHint, a.openWorldHint),
                             (read_only, idempotent, destructive, open_world), name)
            schema = listed[name].outputSchema
            assert schema is not None, name
            self.assertEqual(schema["type"], "object", name)
        send = listed["send"].inputSchema
        self.assertEqual(send["required"], ["message"])
        self.assertEqual(send["additionalProperties"], False)
        self.assertIn("message", send["properties"])
        # A policy's own schema is published as written.
        self.assertEqual(listed["remove"].inputSchema["properties"]["path"]["description"], "A path in the workspace.")
        self.assertIn("Not idempotent", listed["send"].description or "")

    async def test_tools_can_be_restricted(self) -> None:
        async with session(self.place, "--tools", "send,read_note") as s:
            self.assertEqual(sorted(t.name for t in (await s.list_tools()).tools), ["read_note", "send"])
        refused = self.place.ward(*self.place.args("--tools", "nope"))
        self.assertEqual(refused.returncode, 2)
        self.assertIn('no tool "nope"', refused.stderr)

    async def test_calls_of_each_effect_class(self) -> None:
        (self.place.workspace / "note.txt").write_text("remember the milk\n")
        async with session(self.place) as s:
            note = await s.call_tool("read_note", {})
            self.assertFalse(note.isError)
            self.assertEqual(text(note), "remember the milk\n")
            assert note.structuredContent is not None
            self.assertEqual(note.structuredContent["status"], "succeeded")
            touched = await s.call_tool("slow_touch", {"seconds": 0})
            self.assertFalse(touched.isError)
            sent = await s.call_tool("send", {"message": "hello"})
            self.assertFalse(sent.isError)
            self.assertEqual(text(sent), "sent hello\n")
            assert sent.meta is not None
            self.assertFalse(sent.meta["ward/replayed"])
        self.assertEqual(self.place.lines("outbox.log"), ["hello"])
        self.assertEqual({c["tool"]: c["status"] for c in self.place.calls()},
                         {"read_note": "succeeded", "slow_touch": "succeeded", "send": "succeeded"})

    async def test_a_failing_tool_is_an_error_result_the_model_can_read(self) -> None:
        async with session(self.place) as s:
            failed = await s.call_tool("fail", {"why": "disk on fire"})
        self.assertTrue(failed.isError)
        self.assertIn("exited with status 3", text(failed))
        self.assertIn("broken: disk on fire", text(failed))
        self.assertIn("partial", text(failed))

    async def test_unknown_tools_and_bad_arguments_are_protocol_errors(self) -> None:
        async with session(self.place) as s:
            with self.assertRaises(McpError) as unknown:
                await s.call_tool("no_such_tool", {})
            self.assertEqual(unknown.exception.error.code, -32602)
            self.assertIn("unknown tool", unknown.exception.error.message)
            with self.assertRaises(McpError) as extra:
                await s.call_tool("send", {"message": "x", "bcc": "everyone"})
            self.assertEqual(extra.exception.error.code, -32602)
            self.assertIn("bcc", extra.exception.error.message)
            # Still serving.
            await s.send_ping()
        self.assertEqual(self.place.lines("outbox.log"), [])
        self.assertEqual(self.place.calls(), [])

    async def test_malformed_and_oversized_lines_are_answered_and_serving_goes_on(self) -> None:
        ward = subprocess.Popen([WARD, *self.place.args()], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert ward.stdin is not None and ward.stdout is not None

        def ask(line: bytes) -> dict[str, Any]:
            assert ward.stdin is not None and ward.stdout is not None
            ward.stdin.write(line + b"\n")
            ward.stdin.flush()
            answer: dict[str, Any] = json.loads(ward.stdout.readline())
            return answer

        try:
            self.assertEqual(ask(b"not json")["error"]["code"], -32700)
            self.assertIsNone(ask(b"not json")["id"])
            self.assertEqual(ask(b'{"jsonrpc":"2.0","id":9}')["error"]["code"], -32600)
            self.assertEqual(ask(b'{"jsonrpc":"2.0","id":10,"method":"resources/list"}')["error"]["code"], -32601)
            # An over-long line and a request behind it in one write: the line is refused, the
            # request answered.
            too_long = ask(b'{"jsonrpc":"2.0","id":11,"method":"ping","params":{"pad":"' + b"x" * (17 << 20) + b'"}}\n'
                           + b'{"jsonrpc":"2.0","id":12,"method":"ping"}')
            self.assertEqual(too_long["error"]["data"]["kind"], "too-large")
            self.assertEqual(json.loads(ward.stdout.readline()), {"jsonrpc": "2.0", "id": 12, "result": {}})
            self.assertEqual(ask(b'{"jsonrpc":"2.0","id":null,"method":"ping"}')["error"]["code"], -32600)
            # A response (to a request ward never sent) is not answered: the next line is the ping's.
            self.assertEqual(ask(b'{"jsonrpc":"2.0","id":99,"result":{}}\n{"jsonrpc":"2.0","id":13,"method":"ping"}'),
                             {"jsonrpc": "2.0", "id": 13, "result": {}})
        finally:
            ward.stdin.close()
            self.assertEqual(ward.wait(timeout=30), 0)
            ward.stdout.close()

    async def test_cancellation_kills_the_tree_and_records_it_killed(self) -> None:
        async with session(self.place) as s:
            request_id = s._request_id  # the id the next request gets
            call = asyncio.create_task(s.call_tool("slow_send", {"message": "m", "seconds": 30}))
            await asyncio.to_thread(eventually, lambda: self.place.lines("started.log") == ["m"])
            await s.send_notification(types.ClientNotification(types.CancelledNotification(
                params=types.CancelledNotificationParams(requestId=request_id, reason="the user changed their mind"))))
            self.assertTrue(await asyncio.to_thread(eventually, lambda: [c["status"] for c in self.place.calls()] == ["killed"]))
            # No answer comes for a cancelled request.
            done, _ = await asyncio.wait({call}, timeout=1)
            self.assertFalse(done, "a cancelled request was answered")
            call.cancel()
            self.assertFalse(self.place.tools(), "the tool's tree outlived its cancellation")
            await s.send_ping()
        self.assertEqual(self.place.lines("outbox.log"), [])

    async def test_progress_is_reported_every_second(self) -> None:
        seen: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        async with session(self.place) as s:
            result = await s.call_tool("slow_send", {"message": "p", "seconds": 2.5}, progress_callback=on_progress)
        self.assertFalse(result.isError)
        self.assertGreaterEqual(len(seen), 3, seen)
        self.assertEqual(seen, sorted(seen))

    async def test_a_repeat_after_the_host_went_on_runs_again(self) -> None:
        async with session(self.place) as s:
            first = await s.call_tool("send", {"message": "twice on purpose"})
            # Something else: the host had the answer, so a repeat is a call of its own.
            await s.call_tool("read_note", {})
            second = await s.call_tool("send", {"message": "twice on purpose"})
        assert first.meta is not None and second.meta is not None
        self.assertFalse(second.meta["ward/replayed"])
        self.assertNotEqual(first.meta["ward/callId"], second.meta["ward/callId"])
        self.assertEqual(self.place.lines("outbox.log"), ["twice on purpose"] * 2)

    async def test_a_repeat_right_after_the_answer_is_a_retry(self) -> None:
        # A host that gave up on a request (its timeout) still reads the late answer, throws
        # it away and asks again: nothing tells that from a host that had it.
        async with session(self.place) as s:
            first = await s.call_tool("send", {"message": "retried"})
            again = await s.call_tool("send", {"message": "retried"})
        assert first.meta is not None and again.meta is not None
        self.assertTrue(again.meta["ward/replayed"])
        self.assertEqual(first.meta["ward/callId"], again.meta["ward/callId"])
        self.assertEqual(self.place.lines("outbox.log"), ["retried"])

    async def test_retries_of_parallel_calls_are_each_answered_from_the_ledger(self) -> None:
        # Two calls at once whose answers the host read but did not act on (it timed out):
        # retrying one is not going on, so the other's retry is still a retry.
        async with session(self.place) as s:
            await asyncio.gather(s.call_tool("send", {"message": "x"}), s.call_tool("send", {"message": "y"}))
            again_y = await s.call_tool("send", {"message": "y"})
            again_x = await s.call_tool("send", {"message": "x"})
        assert again_x.meta is not None and again_y.meta is not None
        self.assertTrue(again_y.meta["ward/replayed"])
        self.assertTrue(again_x.meta["ward/replayed"])
        self.assertEqual(sorted(self.place.lines("outbox.log")), ["x", "y"])

    async def test_a_stable_call_id_replays(self) -> None:
        async with session(self.place) as s:
            first = await s.call_tool("send", {"message": "once"}, meta={"ward/callId": "greeting-1"})
        async with session(self.place) as s:
            again = await s.call_tool("send", {"message": "once"}, meta={"ward/callId": "greeting-1"})
        assert again.meta is not None and again.structuredContent is not None
        self.assertTrue(again.meta["ward/replayed"])
        self.assertIn("the tool did not run again", text(again))
        self.assertEqual(again.meta["ward/callId"], "greeting-1")
        self.assertEqual(again.structuredContent["stdout"], first.structuredContent["stdout"] if first.structuredContent else None)
        self.assertEqual(self.place.lines("outbox.log"), ["once"])
        # Another ID is another call, whatever its arguments.
        async with session(self.place) as s:
            other = await s.call_tool("send", {"message": "once"}, meta={"ward/callId": "greeting-2"})
        assert other.meta is not None
        self.assertFalse(other.meta["ward/replayed"])
        self.assertEqual(self.place.lines("outbox.log"), ["once", "once"])

    async def test_identical_requests_at_once_run_once(self) -> None:
        async with session(self.place) as s:
            a, b = await asyncio.gather(s.call_tool("slow_send", {"message": "dup", "seconds": 0.5}),
                                        s.call_tool("slow_send", {"message": "dup", "seconds": 0.5}))
        assert a.meta is not None and b.meta is not None
        self.assertEqual(a.meta["ward/callId"], b.meta["ward/callId"])
        self.assertEqual(self.place.lines("started.log"), ["dup"])

    async def test_a_crash_mid_call_leaves_it_in_doubt_and_it_never_runs_twice(self) -> None:
        arguments = {"message": "invoice", "seconds": 30}
        async with session(self.place) as s:
            call = asyncio.create_task(s.call_tool("slow_send", arguments))
            await asyncio.to_thread(eventually, lambda: self.place.lines("started.log") == ["invoice"])
            self.place.kill_ward()
            with self.assertRaises(McpError):
                await asyncio.wait_for(call, timeout=10)
        # The host starts ward again and repeats the request (a new session, a new request id).
        async with session(self.place) as s:
            repeat = await s.call_tool("slow_send", arguments)
            self.assertTrue(repeat.isError)
            self.assertIn("in doubt", text(repeat))
            self.assertIn("ward ledger resolve", text(repeat))
            self.assertEqual(self.place.lines("started.log"), ["invoice"])
            [call_record] = self.place.calls()
            self.assertEqual(call_record["status"], "in-doubt")
            assert repeat.meta is not None
            self.assertEqual(repeat.meta["ward/callId"], call_record["callId"])
            self.assertEqual(repeat.meta["ward/error"], "in-doubt")
            resolved = self.place.ward("ledger", "resolve", "--ledger", str(self.place.ledger), self.place.run_id, call_record["callId"],
                                       "--as", "executed", "--note", "the invoice went out")
            self.assertEqual(resolved.returncode, 0, resolved.stderr)
            settled = await s.call_tool("slow_send", arguments)
        self.assertFalse(settled.isError)
        assert settled.meta is not None
        self.assertTrue(settled.meta["ward/replayed"])
        self.assertIn("settled as executed", text(settled))
        self.assertEqual(self.place.lines("started.log"), ["invoice"])

    async def test_an_answer_written_but_never_read_is_replayed(self) -> None:
        # A host whose session dies before it reads the answer: ward wrote it, nobody read it.
        ward = subprocess.Popen([WARD, *self.place.args()], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert ward.stdin is not None
        ward.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                     "params": {"name": "send", "arguments": {"message": "lost answer"}}}).encode() + b"\n")
        ward.stdin.flush()
        self.assertTrue(eventually(lambda: [c["status"] for c in self.place.calls()] == ["succeeded"]))
        ward.stdin.close()
        self.assertEqual(ward.wait(timeout=30), 0)
        assert ward.stdout is not None
        ward.stdout.close()
        async with session(self.place) as s:
            repeat = await s.call_tool("send", {"message": "lost answer"})
            assert repeat.meta is not None
            self.assertTrue(repeat.meta["ward/replayed"])
            self.assertEqual(self.place.lines("outbox.log"), ["lost answer"])
            # Once the host has read the answer and gone on, asking again is a new call.
            await s.call_tool("read_note", {})
            fresh = await s.call_tool("send", {"message": "lost answer"})
            assert fresh.meta is not None
            self.assertFalse(fresh.meta["ward/replayed"])
        self.assertEqual(self.place.lines("outbox.log"), ["lost answer"] * 2)

    async def test_an_idempotent_call_after_a_crash_simply_runs_again(self) -> None:
        async with session(self.place) as s:
            call = asyncio.create_task(s.call_tool("slow_touch", {"seconds": 30}))
            await asyncio.to_thread(eventually, lambda: self.place.lines("touched.log") == ["x"])
            self.place.kill_ward()
            with self.assertRaises(McpError):
                await asyncio.wait_for(call, timeout=10)
        async with session(self.place) as s:
            again = await s.call_tool("slow_touch", {"seconds": 0})
        self.assertFalse(again.isError)
        self.assertEqual(self.place.lines("touched.log"), ["x", "x"])

    async def test_stdin_closing_waits_for_the_calls_in_flight(self) -> None:
        ward = subprocess.Popen([WARD, *self.place.args()], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert ward.stdin is not None and ward.stdout is not None
        ward.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                                     "params": {"name": "slow_send", "arguments": {"message": "late", "seconds": 1}}}).encode() + b"\n")
        ward.stdin.close()
        answer = json.loads(ward.stdout.readline())
        self.assertEqual(ward.wait(timeout=30), 0)
        ward.stdout.close()
        self.assertEqual(answer["id"], 7)
        self.assertFalse(answer["result"]["isError"])
        self.assertEqual([c["status"] for c in self.place.calls()], ["succeeded"])


class StartTests(unittest.TestCase):
    def test_initialize_agrees_on_a_revision(self) -> None:
        place = Place()
        try:
            for asked, agreed in [("2025-11-25", "2025-11-25"), ("2025-06-18", "2025-06-18"), ("1999-01-01", "2025-11-25")]:
                line = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                   "params": {"protocolVersion": asked, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
                out = subprocess.run([WARD, *place.args()], input=line + "\n", capture_output=True, text=True, timeout=30)
                self.assertEqual(out.returncode, 0, out.stderr)
                self.assertEqual(json.loads(out.stdout)["result"]["protocolVersion"], agreed)
        finally:
            place.finish()


if __name__ == "__main__":
    os.environ.setdefault("WARD", WARD)
    unittest.main()
