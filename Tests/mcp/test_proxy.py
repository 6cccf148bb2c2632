"""`ward mcp proxy` running real MCP servers from PyPI (mcp-server-git, -time, -fetch, installed by
Scripts/setup --servers with the shipped policies) and a test server of the standard library's
(stdio_server.py), with the official Python MCP SDK's client as host: ordinary use, containment,
forwarding, crashes at each moment of a call, and servers that misbehave."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import unittest
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.context import RequestContext
from mcp.shared.exceptions import McpError

from mcp_harness import HERE, WARD, Place, eventually, text

SHIPPED = HERE.parent.parent / "policies" / "mcp-servers.toml"
SYSTEM_READ = ["/usr", "/bin", "/lib", "?/lib64", "/etc/ld.so.cache", "/etc/passwd", "/etc/group", "?/etc/localtime", "/dev/urandom"]


def server_table(name: str, script: Path, mode: str, timeout: str = "10s") -> str:
    read = json.dumps(SYSTEM_READ + [str(script), "{workspace}"])
    return f"""
[servers.{name}]
command = ["/usr/bin/python3", "-I", "{script}", "{mode}"]
syscalls = ["@system-service"]
read = {read}
write = ["{{workspace}}", "/dev/null"]
env = ["LANG=C.UTF-8", "HOME={{workspace}}"]
timeout = "{timeout}"

[servers.{name}.tools.send]
effect = "non-idempotent"
[servers.{name}.tools.echo]
effect = "read-only"
[servers.{name}.tools.probe]
effect = "read-only"
[servers.{name}.tools.ask]
effect = "read-only"
[servers.{name}.tools.grow]
effect = "idempotent"
"""


class ProxyPlace(Place):
    """A test's place with the shipped server policies, and the test server under a name per mode."""

    def __init__(self) -> None:
        super().__init__(run_id="proxy-test")
        shutil.copy(SHIPPED, self.policies)
        script = self.root / "stdio_server.py"
        shutil.copy(HERE / "stdio_server.py", script)
        os.chmod(script, 0o644)
        tables = [server_table("test", script, "normal"), server_table("garbage", script, "garbage"),
                  server_table("silent", script, "silent", timeout="1s"), server_table("flood", script, "flood"),
                  server_table("exits", script, "exit"), server_table("stopread", script, "stopread", timeout="1s"),
                  server_table("malformed", script, "malformed"), server_table("ignorecancel", script, "ignorecancel"),
                  server_table("crashafter", script, "crashafter"), server_table("deaf", script, "silent", timeout="60s"),
                  server_table("batch", script, "batch")]
        (self.policies / "servers.toml").write_text("".join(tables))

    def proxy_args(self, name: str, *extra: str) -> list[str]:
        return ["mcp", "proxy", "--policies", str(self.policies), "--workspace", str(self.workspace), "--ledger", str(self.ledger),
                "--run-id", self.run_id, *extra, name]

    def git(self, *args: str) -> str:
        # The workspace belongs to the tools' identity, which the operator's git distrusts.
        argv = ["git", "-c", "safe.directory=*", "-C", str(self.workspace), *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def server_pids(self) -> list[int]:
        """The proxied server's processes (not ward and its helpers)."""
        return self.tools()


@asynccontextmanager
async def proxy(place: ProxyPlace, name: str, *extra: str, **callbacks: Any) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=WARD, args=place.proxy_args(name, *extra), cwd=str(place.root))
    try:
        async with stdio_client(params) as (read, write), ClientSession(read, write, **callbacks) as s:
            await s.initialize()
            yield s
    except BaseExceptionGroup as group:
        # The SDK's stdio reader may still be handing a message of ward's (a notification)
        # to a session that has just closed: a race of the client's own shutdown, after the
        # test's body ended. Anything else the group holds is the test's failure.
        if not all(isinstance(e, anyio.BrokenResourceError) for e in group.exceptions):
            raise


class ProxyTest(unittest.IsolatedAsyncioTestCase):
    """A test with a `ProxyPlace` of its own, checked by `Place.finish` at its end."""

    def setUp(self) -> None:
        self.place = ProxyPlace()

    def tearDown(self) -> None:
        self.place.finish()

    async def call(self, s: ClientSession, tool: str, arguments: dict[str, Any], call_id: str | None = None) -> types.CallToolResult:
        return await s.call_tool(tool, arguments, meta={"ward/callId": call_id} if call_id else None)


class ShippedServerTests(ProxyTest):
    """The three shipped servers, each for its ordinary use."""

    async def test_git_commits_in_the_workspace_repository(self) -> None:
        self.place.git("init", "-q")
        (self.place.workspace / "notes.txt").write_text("first\n")
        async with proxy(self.place, "git") as s:
            listed = {t.name: t for t in (await s.list_tools()).tools}
            # ward's annotations from the policy, never the server's.
            status = listed["git_status"].annotations
            commit = listed["git_commit"].annotations
            assert status is not None and commit is not None
            self.assertEqual((status.readOnlyHint, status.idempotentHint), (True, True))
            self.assertEqual((commit.readOnlyHint, commit.idempotentHint), (False, False))
            self.assertIn("Not idempotent", listed["git_commit"].description or "")
            repo = str(self.place.workspace)
            self.assertIn("notes.txt", text(await self.call(s, "git_status", {"repo_path": repo})))
            added = await self.call(s, "git_add", {"repo_path": repo, "files": ["notes.txt"]})
            self.assertFalse(added.isError, text(added))
            committed = await self.call(s, "git_commit", {"repo_path": repo, "message": "notes through ward"})
            self.assertFalse(committed.isError, text(committed))
            assert committed.meta is not None
            self.assertEqual(committed.meta["ward/status"], "succeeded")
            self.assertFalse(committed.meta["ward/replayed"])
            log = await self.call(s, "git_log", {"repo_path": repo})
            self.assertIn("notes through ward", text(log))
        self.assertEqual(self.place.git("log", "--format=%s").split("\n")[0], "notes through ward")
        calls = {c["tool"]: c for c in self.place.calls()}
        self.assertEqual(sorted(calls), ["git/git_add", "git/git_commit", "git/git_log", "git/git_status"])
        self.assertEqual(calls["git/git_commit"]["effect"], "non-idempotent")
        self.assertEqual(calls["git/git_commit"]["status"], "succeeded")

    async def test_time_converts_between_zones(self) -> None:
        async with proxy(self.place, "time") as s:
            converted = await self.call(s, "convert_time", {"source_timezone": "Europe/Paris", "time": "12:00",
                                                           "target_timezone": "Asia/Tokyo"})
            self.assertFalse(converted.isError, text(converted))
            self.assertIn("20:00", text(converted))
            now = await self.call(s, "get_current_time", {"timezone": "UTC"})
            self.assertFalse(now.isError, text(now))
        self.assertEqual([c["status"] for c in self.place.calls()], ["succeeded", "succeeded"])

    async def test_fetch_reads_a_page_on_loopback_but_not_local_files(self) -> None:
        class Page(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"<html><body><h1>ward proxy page</h1><p>fetched through the sandbox</p></body></html>"
                self.send_response(200 if self.path == "/page" else 404)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            async with proxy(self.place, "fetch") as s:
                page = await self.call(s, "fetch", {"url": f"http://127.0.0.1:{httpd.server_address[1]}/page"})
                self.assertFalse(page.isError, text(page))
                self.assertIn("fetched through the sandbox", text(page))
                shadow = await self.call(s, "fetch", {"url": "file:///etc/shadow"})
                self.assertTrue(shadow.isError)
                self.assertNotIn("root:", text(shadow))
        finally:
            httpd.shutdown()

    async def test_a_server_given_after_two_dashes_runs_in_the_default_sandbox(self) -> None:
        params = StdioServerParameters(command=WARD, cwd=str(self.place.root), args=[
            "mcp", "proxy", "--policies", str(self.place.policies), "--workspace", str(self.place.workspace),
            "--ledger", str(self.place.ledger), "--run-id", self.place.run_id, "--", "/opt/ward-mcp-servers/bin/mcp-server-time"])
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            listed = {t.name: t for t in (await s.list_tools()).tools}
            # Nothing names its tools: each is non-idempotent and destructive to ward.
            a = listed["get_current_time"].annotations
            assert a is not None
            self.assertEqual((a.readOnlyHint, a.idempotentHint, a.destructiveHint), (False, False, True))
            now = await self.call(s, "get_current_time", {"timezone": "UTC"})
            self.assertFalse(now.isError, text(now))
        self.assertEqual([c["tool"] for c in self.place.calls()], ["mcp-server-time/get_current_time"])


class ContainmentTests(ProxyTest):
    async def test_git_cannot_reach_outside_the_workspace(self) -> None:
        self.place.git("init", "-q")
        outside = self.place.root / "outside"
        outside.mkdir()
        subprocess.run(["git", "init", "-q", str(outside)], check=True)
        (outside / "secret.txt").write_text("operator's\n")
        async with proxy(self.place, "git") as s:
            repo = str(self.place.workspace)
            attempts: list[tuple[str, dict[str, Any]]] = [
                ("git_add", {"repo_path": repo, "files": ["/etc/shadow"]}),
                ("git_add", {"repo_path": repo, "files": ["../outside/secret.txt"]}),
                ("git_status", {"repo_path": str(outside)}),
                ("git_diff", {"repo_path": repo, "target": "--output=/etc/ward-proxy-test"}),
                ("git_log", {"repo_path": "/etc"}),
            ]
            for tool, arguments in attempts:
                result = await self.call(s, tool, arguments)
                self.assertTrue(result.isError, f"{tool} {arguments}: {text(result)}")
            self.assertNotIn("secret.txt", self.place.git("status", "--porcelain"))
        self.assertFalse(Path("/etc/ward-proxy-test").exists())

    async def test_the_server_reads_writes_and_connects_only_where_its_policy_lets_it(self) -> None:
        import socket as sockets

        listener = sockets.socket(sockets.AF_INET, sockets.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        unix_path = self.place.root / "ward.sock"
        unix = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
        unix.bind(str(unix_path))
        unix.listen()
        try:
            async with proxy(self.place, "test") as s:
                probed = await self.call(s, "probe", {"path": "/etc/shadow", "host": "127.0.0.1",
                                                      "port": listener.getsockname()[1], "socket": str(unix_path)})
                found = probed.structuredContent
                assert found is not None, text(probed)
                self.assertTrue(found["read"].startswith("refused"), found)
                self.assertTrue(found["connect"].startswith("refused"), found)
                self.assertTrue(found["socket"].startswith("refused"), found)
                # Its own workspace is readable.
                (self.place.workspace / "mine.txt").write_text("ok")
                mine = await self.call(s, "probe", {"path": str(self.place.workspace / "mine.txt")})
                assert mine.structuredContent is not None
                self.assertEqual(mine.structuredContent["read"], "read 2 bytes")
        finally:
            listener.close()
            unix.close()


class ForwardingTests(ProxyTest):
    async def test_results_keep_their_structure_errors_and_meta(self) -> None:
        async with proxy(self.place, "test") as s:
            listed = {t.name: t for t in (await s.list_tools()).tools}
            # The server calls every tool harmless; ward says what the policy says.
            send = listed["send"].annotations
            assert send is not None
            self.assertEqual((send.readOnlyHint, send.idempotentHint, send.destructiveHint), (False, False, True))
            crash = listed["crash"].annotations
            assert crash is not None
            self.assertEqual((crash.readOnlyHint, crash.destructiveHint), (False, True))
            echoed = await self.call(s, "echo", {"a": [1, 2]})
            self.assertEqual(echoed.structuredContent, {"arguments": {"a": [1, 2]}})
            assert echoed.meta is not None
            self.assertTrue(echoed.meta["test/echo"])
            self.assertEqual(echoed.meta["ward/status"], "succeeded")
            failed = await self.call(s, "echo", {"error": True})
            self.assertTrue(failed.isError)
            self.assertEqual([c["status"] for c in self.place.calls()], ["succeeded", "failed"])
            # A JSON-RPC error of the server's reaches the host as one.
            with self.assertRaises(McpError):
                await s.send_request(types.ClientRequest(types.CallToolRequest(
                    params=types.CallToolRequestParams(name="nope", arguments={}))), types.CallToolResult)

    async def test_an_answer_over_the_output_limit_is_not_kept(self) -> None:
        async with proxy(self.place, "test") as s:
            big = await self.call(s, "echo", {"text": "x" * (2 << 20)})
            self.assertTrue(big.isError)
            self.assertIn("larger than its policy's output limit", text(big))
            self.assertFalse((await self.call(s, "echo", {"text": "small"})).isError)
        calls = self.place.calls()
        self.assertEqual([c["status"] for c in calls], ["failed", "succeeded"])

    async def test_answers_in_a_batch_are_taken(self) -> None:
        async with proxy(self.place, "batch") as s:
            echoed = await self.call(s, "echo", {"a": 1})
            self.assertEqual(echoed.structuredContent, {"arguments": {"a": 1}})

    async def test_progress_and_a_changed_tool_list_are_passed_on(self) -> None:
        seen: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        changed = asyncio.Event()

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ServerNotification) and isinstance(message.root, types.ToolListChangedNotification):
                changed.set()

        async with proxy(self.place, "test", message_handler=on_message) as s:
            sent = await s.call_tool("send", {"message": "m", "seconds": 0.5}, progress_callback=on_progress)
            self.assertFalse(sent.isError, text(sent))
            self.assertGreaterEqual(len(seen), 3)
            self.assertNotIn("grown", [t.name for t in (await s.list_tools()).tools])
            await self.call(s, "grow", {})
            await asyncio.wait_for(changed.wait(), 10)
            self.assertIn("grown", [t.name for t in (await s.list_tools()).tools])

    async def test_server_requests_pass_only_where_the_host_declared_the_capability(self) -> None:
        async def sampling(context: RequestContext[Any, Any], params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
            return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="sampled"), model="test")

        async with proxy(self.place, "test", sampling_callback=sampling) as s:
            asked = await self.call(s, "ask", {"method": "sampling/createMessage", "params": {
                "messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}], "maxTokens": 5}})
            self.assertIn("sampled", text(asked))
            # The host has no elicitation: declined, and the host never sees it.
            elicit = {"message": "?", "requestedSchema": {"type": "object"}}
            declined = await self.call(s, "ask", {"method": "elicitation/create", "params": elicit})
            assert declined.structuredContent is not None
            self.assertIn("did not declare the elicitation capability", declined.structuredContent["error"]["message"])
            unknown = await self.call(s, "ask", {"method": "resources/read", "params": {}})
            assert unknown.structuredContent is not None
            self.assertEqual(unknown.structuredContent["error"]["code"], -32601)

    async def test_a_cancelled_call_is_cancelled_at_the_server(self) -> None:
        async with proxy(self.place, "test") as s:
            request_id = s._request_id
            call = asyncio.create_task(s.call_tool("send", {"message": "late", "seconds": 30}))
            self.assertTrue(await asyncio.to_thread(eventually, lambda: [c["status"] for c in self.place.calls()] == ["running"]))
            await s.send_notification(types.ClientNotification(types.CancelledNotification(
                params=types.CancelledNotificationParams(requestId=request_id, reason="changed my mind"))))
            # The server stopped the call itself and said so (an error): that is what is recorded.
            self.assertTrue(await asyncio.to_thread(eventually, lambda: [c["status"] for c in self.place.calls()] == ["failed"]))
            done, _ = await asyncio.wait({call}, timeout=1)
            self.assertFalse(done, "a cancelled request was answered")
            call.cancel()
            # It did not send, and serves on.
            self.assertEqual(self.place.lines("sent.txt"), [])
            self.assertFalse((await self.call(s, "echo", {})).isError)

    async def test_a_cancelled_call_the_server_does_not_stop_is_killed_with_its_tree(self) -> None:
        async with proxy(self.place, "deaf") as s:
            server = self.place.server_pids()
            request_id = s._request_id
            call = asyncio.create_task(s.call_tool("send", {"message": "m"}))
            self.assertTrue(await asyncio.to_thread(eventually, lambda: [c["status"] for c in self.place.calls()] == ["running"]))
            await s.send_notification(types.ClientNotification(types.CancelledNotification(
                params=types.CancelledNotificationParams(requestId=request_id, reason="changed my mind"))))
            # Five seconds to stop, then the server's whole tree is killed.
            self.assertTrue(await asyncio.to_thread(eventually, lambda: [c["status"] for c in self.place.calls()] == ["killed"], 20))
            self.assertTrue(await asyncio.to_thread(eventually, lambda: not set(server) & set(self.place.server_pids())))
            call.cancel()
            # A new server serves what comes next.
            await s.set_logging_level("info")
            self.assertTrue(set(self.place.server_pids()) - set(server))
        self.assertEqual(self.place.lines("sent.txt"), [])

    async def test_a_call_the_server_finished_despite_the_cancellation_is_never_run_again(self) -> None:
        async with proxy(self.place, "ignorecancel") as s:
            request_id = s._request_id
            call = asyncio.create_task(s.call_tool("send", {"message": "once", "seconds": 1}))
            self.assertTrue(await asyncio.to_thread(eventually, lambda: [c["status"] for c in self.place.calls()] == ["running"]))
            await s.send_notification(types.ClientNotification(types.CancelledNotification(
                params=types.CancelledNotificationParams(requestId=request_id, reason="changed my mind"))))
            self.assertTrue(await asyncio.to_thread(eventually, lambda: [c["status"] for c in self.place.calls()] == ["succeeded"]))
            call.cancel()
            # The host went on, then asked for the same call again: it is answered from the
            # ledger (the host never saw the answer), not sent a second time.
            await self.call(s, "echo", {})
            again = await self.call(s, "send", {"message": "once", "seconds": 1})
            assert again.meta is not None
            self.assertTrue(again.meta["ward/replayed"], text(again))
        self.assertEqual(self.place.lines("sent.txt"), ["once"])

    async def test_a_host_retry_of_a_finished_call_is_replayed(self) -> None:
        async with proxy(self.place, "test") as s:
            first = await self.call(s, "send", {"message": "once"}, call_id="send-1")
            again = await self.call(s, "send", {"message": "once"}, call_id="send-1")
        assert first.meta is not None and again.meta is not None
        self.assertFalse(first.meta["ward/replayed"])
        self.assertTrue(again.meta["ward/replayed"])
        self.assertIn("already ran", text(again))
        self.assertEqual(again.structuredContent, first.structuredContent)
        self.assertEqual(self.place.lines("sent.txt"), ["once"])


class CrashTests(ProxyTest):
    async def test_a_server_killed_during_git_commit_leaves_the_call_in_doubt(self) -> None:
        self.place.git("init", "-q")
        (self.place.workspace / "a.txt").write_text("a\n")
        repo = str(self.place.workspace)
        # The commit runs the pre-commit hook, which says it started and then waits.
        hook = self.place.workspace / ".git" / "hooks" / "pre-commit"
        hook.write_text("#!/bin/sh\ntouch .git/commit-started\nexec sleep 60\n")
        hook.chmod(0o755)
        started = self.place.workspace / ".git" / "commit-started"
        async with proxy(self.place, "git") as s:
            await self.call(s, "git_add", {"repo_path": repo, "files": ["a.txt"]})
            commit = asyncio.create_task(self.call(s, "git_commit", {"repo_path": repo, "message": "m"}))
            self.assertTrue(await asyncio.to_thread(eventually, started.exists))
            # Mid-commit, the server and everything it started die.
            server = self.place.server_pids()
            self.assertTrue(server)
            for pid in server:
                os.kill(pid, signal.SIGKILL)
            refused = await commit
            self.assertTrue(refused.isError)
            self.assertIn("in doubt", text(refused))
            # Asked again, it is refused: never sent twice on a guess.
            again = await self.call(s, "git_commit", {"repo_path": repo, "message": "m"})
            self.assertIn("in doubt", text(again))
            in_doubt = [c for c in self.place.calls() if c["tool"] == "git/git_commit"]
            self.assertEqual([c["status"] for c in in_doubt], ["in-doubt"])
            # The server came back for the next call.
            self.assertFalse((await self.call(s, "git_status", {"repo_path": repo})).isError)
        resolved = self.place.ward("ledger", "resolve", "--ledger", str(self.place.ledger), self.place.run_id,
                                   in_doubt[0]["callId"], "--as", "not-executed", "--note", "the commit is not in the log")
        self.assertEqual(resolved.returncode, 0, resolved.stderr)
        hook.unlink()
        async with proxy(self.place, "git") as s:
            settled = await self.call(s, "git_commit", {"repo_path": repo, "message": "m"})
            self.assertFalse(settled.isError, text(settled))
        self.assertEqual(self.place.git("log", "--format=%s").strip(), "m")

    async def test_a_request_the_dead_server_never_read_goes_to_a_new_one(self) -> None:
        async with proxy(self.place, "test") as s:
            await self.call(s, "echo", {})
            server = self.place.server_pids()
            # Stopped, the server cannot read the request written to its stdin; then it dies.
            for pid in server:
                os.kill(pid, signal.SIGSTOP)
            sent = asyncio.create_task(self.call(s, "send", {"message": "once"}))
            self.assertTrue(await asyncio.to_thread(eventually, lambda: [c["status"] for c in self.place.calls()][-1:] == ["running"]))
            await asyncio.sleep(0.2)
            for pid in server:
                os.kill(pid, signal.SIGKILL)
            result = await sent
            self.assertFalse(result.isError, text(result))
        # Still in the pipe when the server died: never read, so sent to the next server, once.
        self.assertEqual(self.place.lines("sent.txt"), ["once"])
        self.assertEqual([c["status"] for c in self.place.calls()], ["succeeded", "succeeded"])

    async def test_ward_killed_mid_call_leaves_it_in_doubt_after_restart(self) -> None:
        async with proxy(self.place, "test") as s:
            call = asyncio.create_task(self.call(s, "send", {"message": "m", "seconds": 60}))
            self.assertTrue(await asyncio.to_thread(eventually, lambda: [c["status"] for c in self.place.calls()] == ["running"]))
            self.place.kill_ward()
            # The server and everything it started died with ward.
            self.assertTrue(await asyncio.to_thread(eventually, lambda: not self.place.processes()), self.place.processes())
            call.cancel()
        async with proxy(self.place, "test") as s:
            again = await self.call(s, "send", {"message": "m", "seconds": 60})
            self.assertTrue(again.isError)
            self.assertIn("in doubt", text(again))
        self.assertEqual([c["status"] for c in self.place.calls()], ["in-doubt"])
        self.assertEqual(self.place.lines("sent.txt"), [])

    async def test_a_crashing_server_is_started_again_and_its_call_is_not_retried(self) -> None:
        async with proxy(self.place, "test") as s:
            crashed = await self.call(s, "crash", {})
            self.assertTrue(crashed.isError)
            self.assertIn("in doubt", text(crashed))
            echoed = await self.call(s, "echo", {"after": "crash"})
            self.assertFalse(echoed.isError, text(echoed))


class MisbehavingServerTests(ProxyTest):
    async def assert_serves_on(self, s: ClientSession) -> None:
        await s.send_ping()
        self.assertTrue((await s.list_tools()).tools)

    async def test_garbage_on_stdout(self) -> None:
        async with proxy(self.place, "garbage") as s:
            result = await self.call(s, "echo", {})
            self.assertTrue(result.isError)
            self.assertIn("not a JSON-RPC message", text(result))
            await self.assert_serves_on(s)

    async def test_a_server_that_never_answers(self) -> None:
        async with proxy(self.place, "silent") as s:
            started = time.monotonic()
            result = await self.call(s, "echo", {})
            self.assertTrue(result.isError)
            self.assertIn("timed out", text(result))
            self.assertLess(time.monotonic() - started, 30)
            await self.assert_serves_on(s)
        self.assertEqual([c["status"] for c in self.place.calls()], ["timed-out"])

    async def test_a_flood_of_output(self) -> None:
        async with proxy(self.place, "flood") as s:
            result = await self.call(s, "send", {"message": "m"})
            self.assertTrue(result.isError)
            self.assertIn("in doubt", text(result))
            self.assertIn("longer than", text(result))
            await self.assert_serves_on(s)

    async def test_a_server_that_stops_reading_its_stdin(self) -> None:
        async with proxy(self.place, "stopread") as s:
            started = time.monotonic()
            # Larger than a pipe holds: the write cannot finish, and the timeout still holds.
            result = await self.call(s, "send", {"message": "x" * (1 << 20)})
            self.assertTrue(result.isError)
            self.assertLess(time.monotonic() - started, 30)
            await s.send_ping()
        # Never written whole, so never run: settled as not executed, not in doubt.
        self.assertEqual([c["status"] for c in self.place.calls()], ["resolved"])

    async def test_a_malformed_answer_is_never_passed_on(self) -> None:
        async with proxy(self.place, "malformed") as s:
            result = await self.call(s, "send", {"message": "m"})
            self.assertTrue(result.isError)
            self.assertIn("malformed error", text(result))
            read = await self.call(s, "echo", {})
            self.assertIn("malformed error", text(read))
            await self.assert_serves_on(s)
        self.assertEqual([c["status"] for c in self.place.calls()], ["in-doubt", "killed"])

    async def test_a_call_right_after_the_server_exited_goes_to_a_new_one(self) -> None:
        async with proxy(self.place, "crashafter") as s:
            for i in range(6):
                sent = await self.call(s, "send", {"message": f"m{i}"})
                self.assertFalse(sent.isError, text(sent))
        self.assertEqual(self.place.lines("sent.txt"), [f"m{i}" for i in range(6)])
        self.assertEqual({c["status"] for c in self.place.calls()}, {"succeeded"})

    async def test_a_server_that_exits_at_start(self) -> None:
        async with proxy(self.place, "exits") as s:
            with self.assertRaises(McpError) as raised:
                await s.list_tools()
            message = str(raised.exception)
            self.assertIn("exited with status 3", message)
            self.assertIn("cannot start: no configuration", message)
            await s.send_ping()
            # Asked again at once, it is refused without another start.
            with self.assertRaises(McpError):
                await s.list_tools()

    def test_an_unknown_or_missing_server_is_refused_at_once(self) -> None:
        unknown = self.place.ward(*self.place.proxy_args("nope"))
        self.assertEqual(unknown.returncode, 2)
        self.assertIn('unknown server "nope"', unknown.stderr)
        (self.place.policies / "missing.toml").write_text('[servers.missing]\ncommand = ["/nonexistent/server"]\nsyscalls = ["@default"]\n')
        missing = self.place.ward(*self.place.proxy_args("missing"))
        self.assertNotEqual(missing.returncode, 0)
        self.assertIn("not installed", missing.stderr)


class UnprivilegedTests(ProxyTest):
    async def test_an_unprivileged_ward_confines_its_server_which_dies_with_it(self) -> None:
        self.place.ledger.parent.mkdir()
        for path in (self.place.workspace, self.place.ledger.parent):
            shutil.chown(path, "nobody", "nogroup")
        drop = ["--reuid=nobody", "--regid=nogroup", "--clear-groups", WARD]
        params = StdioServerParameters(command="setpriv", args=drop + self.place.proxy_args("test"), cwd=str(self.place.root))
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            probed = await self.call(s, "probe", {"path": "/etc/shadow", "host": "127.0.0.1", "port": 9})
            assert probed.structuredContent is not None, text(probed)
            self.assertTrue(probed.structuredContent["read"].startswith("refused"), probed.structuredContent)
            self.assertTrue(probed.structuredContent["connect"].startswith("refused"), probed.structuredContent)
            call = asyncio.create_task(self.call(s, "send", {"message": "m", "seconds": 60}))
            self.assertTrue(await asyncio.to_thread(eventually, lambda: "running" in [c["status"] for c in self.place.calls()]))
            self.place.kill_ward()
            self.assertTrue(await asyncio.to_thread(eventually, lambda: not self.place.processes()), self.place.processes())
            call.cancel()
        params = StdioServerParameters(command="setpriv", args=drop + self.place.proxy_args("test"), cwd=str(self.place.root))
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            again = await self.call(s, "send", {"message": "m", "seconds": 60})
            self.assertIn("in doubt", text(again))
        self.assertEqual(self.place.lines("sent.txt"), [])


class LayoutTests(ProxyTest):
    async def test_a_server_that_could_write_the_ledger_is_never_started(self) -> None:
        inside = self.place.workspace / ".ward" / "ledger.sqlite"
        args = ["mcp", "proxy", "--policies", str(self.place.policies), "--workspace", str(self.place.workspace),
                "--ledger", str(inside), "--run-id", self.place.run_id, "test"]
        params = StdioServerParameters(command=WARD, args=args, cwd=str(self.place.root))
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            with self.assertRaises(McpError) as raised:
                await s.list_tools()
            self.assertIn("server test", str(raised.exception))
            self.assertIn("could change what ward trusts", str(raised.exception))
        self.assertFalse((self.place.workspace / "sent.txt").exists())
