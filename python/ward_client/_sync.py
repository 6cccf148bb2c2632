"""`Ward`: the agent protocol from threads. One connection; requests from many threads are
in flight on it at once, each answer matched to its request by id.

No reader thread: a thread waiting for its answer reads the connection itself (the leader),
handing each other answer to the thread that waits for it, and when its own has come it
leaves the reading to one of the others. A lone agent thread thus gets its answer straight
from the socket, without a hand-over between threads on every request."""

from __future__ import annotations

import contextlib
import itertools
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from . import _wire
from ._errors import ConnectionDroppedError, InternalError, ServerNotFoundError, ServerTimeoutError, WardError


class _Waiter:
    def __init__(self) -> None:
        self.done = False
        #: Set when the answer came, or when no thread reads any more (one should take over).
        self.wake = threading.Event()
        self.result: Any = None
        self.error: WardError | None = None


class Ward:
    """A connection to ward (`$WARD_SOCKET`, opened with the agent's token), usable from many
    threads at once. `with Ward() as ward:` closes it however the block ends.

    Every request waits at most `timeout` seconds (`DEFAULT_TIMEOUT` unless given, per client
    or per request) and raises `ServerTimeoutError` after that. A missing server raises
    `ServerNotFoundError`, a connection that ends before an answer `ConnectionDroppedError`;
    ward's own errors raise the class of their kind (`InDoubtError`, `ConflictError`, …).
    """

    def __init__(self, socket_path: str | None = None, *, token: str | None = None, timeout: float | None = _wire.DEFAULT_TIMEOUT) -> None:
        self.socket_path, secret = _wire.endpoint(socket_path, token)
        self.timeout = timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(self.socket_path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            self._sock.close()
            raise ServerNotFoundError(f"no ward serves {self.socket_path} ({e.strerror})") from None
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._waiting: dict[int, _Waiter] = {}
        self._dropped: str | None = None
        self._leading = False  # a thread is reading the connection
        self._buffer = bytearray()
        try:
            self.run_id = _wire.member(self.request("session.auth", {"token": secret}), "runId", "session.auth")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        # Wakes the thread reading, and so every request waiting, with ConnectionDroppedError.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def __enter__(self) -> Ward:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _answer(self, waiter: _Waiter, result: Any, error: WardError | None) -> None:
        """Hands a waiter its answer (`_lock` held)."""
        waiter.result, waiter.error, waiter.done = result, error, True
        waiter.wake.set()

    def _drop(self, why: WardError) -> None:
        """The connection is unusable: every request waiting fails with `why`."""
        with self._lock:
            if self._dropped is None:
                self._dropped = why.message
            waiting, self._waiting = self._waiting, {}
            for waiter in waiting.values():
                self._answer(waiter, None, why)

    def _line(self, deadline: float | None) -> bytes | None:
        """The next line from ward; None when `deadline` (monotonic) passed first."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end + 1])
                del self._buffer[:end + 1]
                return line
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            # select, not a socket timeout: other threads send on this socket meanwhile.
            readable, _, _ = select.select([self._sock], [], [], remaining)
            if not readable:
                return None
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionDroppedError("ward closed the connection")
            self._buffer += chunk

    def _lead(self, waiter: _Waiter, deadline: float | None) -> None:
        """Reads answers, this thread's and others', until its own has come or `deadline`."""
        while not waiter.done:
            try:
                raw = self._line(deadline)
            except ConnectionDroppedError as e:
                self._drop(e)
                return
            except (OSError, ValueError) as e:
                self._drop(ConnectionDroppedError(f"the connection to ward failed: {e}"))
                return
            if raw is None:
                return
            request_id, result, error = _wire.parse_answer(raw)
            if not isinstance(request_id, int):
                # A line that names no request (not JSON, or ward's refusal of a line it
                # could not read): answers can no longer be paired with requests.
                self._drop(error or InternalError("ward answered with no request id"))
                return
            with self._lock:
                answered = self._waiting.pop(request_id, None)
                if answered is not None:
                    self._answer(answered, result, error)

    def _await(self, waiter: _Waiter, deadline: float | None) -> None:
        """Until the waiter's answer came or `deadline`: reads when no other thread does."""
        while True:
            with self._lock:
                if waiter.done:
                    return
                lead = not self._leading
                if lead:
                    self._leading = True
            if lead:
                # Reading ends with this thread's answer, a dropped connection (every waiter
                # answered) or the deadline: this thread is done either way.
                try:
                    self._lead(waiter, deadline)
                finally:
                    with self._lock:
                        self._leading = False
                        for other in self._waiting.values():
                            other.wake.set()  # one of them reads from now on
                return
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            waiter.wake.wait(remaining)
            waiter.wake.clear()

    def request(self, method: str, params: Mapping[str, Any] | None = None, *, timeout: float | None = -1.0) -> Any:
        """Sends one request and returns its result, or raises the error's class.
        `timeout`: seconds (None: no limit); by default the client's."""
        limit = self.timeout if timeout == -1.0 else timeout
        request_id = next(self._ids)
        line = _wire.request_line(request_id, method, params or {})  # refused here, nothing sent
        waiter = _Waiter()
        with self._lock:
            if self._dropped is not None:
                raise ConnectionDroppedError(self._dropped)
            self._waiting[request_id] = waiter
        try:
            try:
                with self._send_lock:
                    self._sock.sendall(line)
            except OSError as e:
                raise ConnectionDroppedError(f"sending to ward failed: {e}") from None
            self._await(waiter, None if limit is None else time.monotonic() + limit)
        finally:
            # Answered, or given up (timed out, interrupted, not sent): no longer waited for.
            with self._lock:
                self._waiting.pop(request_id, None)
        if not waiter.done:
            raise ServerTimeoutError(f"no answer to {method} within {limit} s")
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    def resume(self) -> dict[str, Any]:
        """`run.resume`: the latest checkpoint, the calls finished since, those in doubt and
        those settled as never run. `pending_call(resumed)` names the call to make again."""
        result = self.request("run.resume")
        if not isinstance(result, dict):
            raise InternalError("malformed run.resume result from ward: not an object")
        return result

    def call(self, tool: str, arguments: Mapping[str, Any] | None = None, *, call_id: str, checkpoint: Any = None,
             timeout: float | None = -1.0, approval_timeout: float = 0) -> dict[str, Any]:
        """Runs (or replays) one tool call; returns its CallResult, stdout and stderr as str
        (bytes when they were not UTF-8). `checkpoint`: the agent's state before this call,
        stored atomically with its start. `approval_timeout`: for a gated tool, how many
        seconds ward waits for an operator's verdict before `AwaitingApprovalError`."""
        params = _wire.call_params(tool, arguments, call_id, checkpoint, approval_timeout)
        return _wire.call_result(self.request("tool.call", params, timeout=_wire.call_timeout(timeout, self.timeout, approval_timeout)))

    def checkpoint(self, state: Any, label: str | None = None) -> int:
        params: dict[str, Any] = {"state": state}
        if label is not None:
            params["label"] = label
        seq = _wire.member(self.request("checkpoint.save", params), "seq", "checkpoint.save")
        return int(seq)

    def load(self, seq: int | None = None) -> dict[str, Any] | None:
        result = self.request("checkpoint.load", {} if seq is None else {"seq": seq})
        return result if isinstance(result, dict) else None

    def journal(self, key: str, fn: Callable[[], Any]) -> Any:
        """The value recorded under `key`; the first time, records fn() (later fn is not called)."""
        existing = self.request("journal.record", {"key": key})  # look up only
        if _wire.member(existing, "found", "journal.record"):
            return _wire.member(existing, "value", "journal.record")
        return _wire.member(self.request("journal.record", {"key": key, "value": fn()}), "value", "journal.record")
