"""The Python client package (python/, `ward_client`) against a real `ward serve`: the whole
protocol from threads and from asyncio, many calls in flight on one connection, an exception
per error kind, and the client's own errors (no server, a dropped connection, no answer in
time). Run by Scripts/test (WARD names the ward binary)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "Scripts"))
import ward_client  # noqa: E402
from ward_client import AsyncWard, Ward, pending_call  # noqa: E402
from ward_server import Server  # noqa: E402


class ClientTest(unittest.TestCase):
    def setUp(self) -> None:
        self.server = Server()

    def tearDown(self) -> None:
        self.server.stop()

    def test_the_whole_protocol_from_a_thread(self) -> None:
        with Ward(self.server.socket) as ward:
            self.assertEqual(ward.run_id, "py")
            self.assertIsNone(ward.resume()["checkpoint"])
            # Arguments named like the client's own parameters are the tool's.
            echoed = ward.call("echo", {"text": "hi", "tool": "x", "call_id": "y", "checkpoint": "z"}, call_id="c1")
            self.assertEqual((echoed["status"], echoed["stdout"], echoed["replayed"]), ("succeeded", "hi", False))
            self.assertTrue(ward.call("echo", {"text": "hi", "tool": "x", "call_id": "y", "checkpoint": "z"}, call_id="c1")["replayed"])
            self.assertEqual(ward.checkpoint({"step": 1}, label="one"), 1)
            self.assertEqual(ward.load(1), {"seq": 1, "state": {"step": 1}})
            asked: list[str] = []

            def ask(answer: str) -> str:
                asked.append(answer)
                return answer

            self.assertEqual(ward.journal("plan", lambda: ask("the plan")), "the plan")
            self.assertEqual(ward.journal("plan", lambda: ask("another")), "the plan")
            self.assertEqual(asked, ["the plan"])
            self.assertEqual(len(ward.call("big", call_id="b1")["stdout"]), 3_000_000)

    def test_a_checkpoint_handed_in_with_a_call_names_the_call_to_make_again(self) -> None:
        with Ward(self.server.socket) as ward:
            ward.call("append", {"line": "first"}, call_id="step-1", checkpoint={"step": 1})
            resumed = ward.resume()
            self.assertEqual(resumed["checkpoint"]["state"], {"step": 1})
            self.assertEqual(pending_call(resumed), "step-1")
            # Made again, it is replayed: the line is written once.
            self.assertTrue(ward.call("append", {"line": "first"}, call_id=pending_call(resumed) or "")["replayed"])
            ward.checkpoint({"step": 2})
            self.assertIsNone(pending_call(ward.resume()))
        self.assertEqual((self.server.root / "workspace" / "log.txt").read_text(), "first\n")

    def test_calls_from_many_threads_run_at_once_on_one_connection(self) -> None:
        with Ward(self.server.socket) as ward:
            results: dict[int, dict[str, Any]] = {}

            def call(i: int) -> None:
                results[i] = ward.call("sleep", {"seconds": 1}, call_id=f"s{i}")

            started = time.monotonic()
            threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - started
        self.assertEqual(sorted(r["callId"] for r in results.values()), ["s0", "s1", "s2", "s3"])
        self.assertLess(elapsed, 3.0, "four 1 s calls were served one after another")

    def test_calls_from_many_tasks_are_matched_to_their_answers(self) -> None:
        async def run() -> list[dict[str, Any]]:
            async with AsyncWard(self.server.socket) as ward:
                return await asyncio.gather(*(ward.call("echo", {"text": f"t{i}"}, call_id=f"a{i}") for i in range(20)))

        results = asyncio.run(run())
        self.assertEqual([r["stdout"] for r in results], [f"t{i}" for i in range(20)])
        self.assertEqual([r["callId"] for r in results], [f"a{i}" for i in range(20)])

    def test_each_error_kind_is_its_own_class(self) -> None:
        with Ward(self.server.socket) as ward:
            with self.assertRaises(ward_client.UnknownToolError) as unknown:
                ward.call("nope", call_id="u1")
            self.assertIn("nope", unknown.exception.message)
            ward.call("echo", {"text": "a"}, call_id="same")
            with self.assertRaises(ward_client.ConflictError):
                ward.call("echo", {"text": "b"}, call_id="same")
            with self.assertRaises(ward_client.InvalidArgumentsError) as invalid:
                ward.load(0)
            self.assertEqual(invalid.exception.field, "seq")
        with self.assertRaises(ward_client.UnauthorizedError):
            Ward(self.server.socket, token="0" * 64)

    def test_a_request_ward_would_refuse_is_refused_here_and_the_connection_kept(self) -> None:
        with Ward(self.server.socket) as ward:
            with self.assertRaises(ward_client.TooLargeError):
                ward.checkpoint({"blob": "x" * (17 << 20)})
            with self.assertRaises(ward_client.InvalidArgumentsError):
                ward.checkpoint({"not json": {1, 2}})
            for bad in (-1, None, True, "5"):
                with self.assertRaises(ward_client.InvalidArgumentsError):
                    ward.call("echo", {"text": "x"}, call_id="bad-wait", approval_timeout=bad)  # type: ignore[arg-type]
            self.assertEqual(ward._waiting, {})  # nothing left waiting for an answer
            self.assertEqual(ward.call("echo", {"text": "still here"}, call_id="after")["stdout"], "still here")

    def test_no_server_a_dropped_connection_and_no_answer_are_told_apart(self) -> None:
        with self.assertRaises(ward_client.ServerNotFoundError):
            Ward(str(self.server.root / "none.sock"), token="t")
        with Ward(self.server.socket) as ward:
            with self.assertRaises(ward_client.ServerTimeoutError):
                ward.call("sleep", {"seconds": 3}, call_id="slow", timeout=0.5)
            # The connection serves on after a timeout.
            self.assertEqual(ward.call("echo", {"text": "on"}, call_id="on")["stdout"], "on")
            threading.Timer(0.5, self.server.process.kill).start()
            with self.assertRaises(ward_client.ConnectionDroppedError):
                ward.call("sleep", {"seconds": 5}, call_id="dropped")
            with self.assertRaises(ward_client.ConnectionDroppedError):
                ward.checkpoint({})

    def test_the_async_client_tells_them_apart_too(self) -> None:
        async def run() -> None:
            with self.assertRaises(ward_client.ServerNotFoundError):
                await AsyncWard.connect(str(self.server.root / "none.sock"), token="t")
            ward = await AsyncWard.connect(self.server.socket)
            try:
                with self.assertRaises(ward_client.ServerTimeoutError):
                    await ward.call("sleep", {"seconds": 3}, call_id="slow", timeout=0.5)
                with self.assertRaises(ward_client.UnknownToolError):
                    await ward.call("nope", call_id="n")
                self.server.process.kill()
                with self.assertRaises(ward_client.ConnectionDroppedError):
                    await ward.call("sleep", {"seconds": 5}, call_id="dropped")
            finally:
                await ward.close()

        asyncio.run(run())


class InstallTest(unittest.TestCase):
    def test_sigterm_stops_ward_serve_every_time(self) -> None:
        # At once after it prints its socket path, and a moment later: never ignored, even
        # when ward inherits a mask that blocks it (as from a test runner's thread).
        for i in range(20):
            blocked = i % 4 < 2
            if blocked:
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
            try:
                server = Server(run_id=f"stop-{i}")
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
            if i % 2:
                time.sleep(0.05)
            server.process.send_signal(signal.SIGTERM)
            try:
                self.assertEqual(server.process.wait(10), 0)
            finally:
                server.process.kill()
                server.stop()

    def test_pip_installs_the_package(self) -> None:
        target = Path(tempfile.mkdtemp(prefix="ward-py-install-"))
        # A copy: the build leaves its build/ and egg-info beside the sources.
        source = target / "source"
        shutil.copytree(ROOT / "python", source)
        try:
            installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(target / "site"), str(source)],
                                       capture_output=True, text=True, timeout=300)
            self.assertEqual(installed.returncode, 0, installed.stderr)
            self.assertTrue((target / "site" / "ward_client" / "py.typed").exists())
            probe = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); import ward_client; "
                                    "print(ward_client.__file__)", str(target / "site")], capture_output=True, text=True, timeout=60)
            self.assertEqual(probe.returncode, 0, probe.stderr)
            self.assertTrue(probe.stdout.startswith(str(target / "site")))
        finally:
            shutil.rmtree(target, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
