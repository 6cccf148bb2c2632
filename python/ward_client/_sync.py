"""`Ward`: the agent protocol from threads. One connection; requests from many threads are
in flight on it at once, each answer matched to its request by id."""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

from . import _wire
from ._errors import ConnectionDroppedError, InternalError, ServerNotFoundError, ServerTimeoutError, WardError


class _Waiter:
    def __init__(self) -> None:
        self.done = threading.Event()
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
        self._reader = threading.Thread(target=self._read, name="ward-client", daemon=True)
        self._reader.start()
        try:
            self.run_id = _wire.member(self.request("session.auth", {"token": secret}), "runId", "session.auth")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        # Wakes the reader, and any request waiting, with ConnectionDroppedError.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def __enter__(self) -> Ward:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _read(self) -> None:
        reader = self._sock.makefile("rb")
        why = "ward closed the connection"
        try:
            for raw in reader:
                request_id, result, error = _wire.parse_answer(raw)
                if not isinstance(request_id, int):
                    # A line that names no request (not JSON, or ward's refusal of a line it
                    # could not read): answers can no longer be paired with requests.
                    failure = error or InternalError("ward answered with no request id")
                    with self._lock:
                        self._dropped = failure.message
                        waiting, self._waiting = self._waiting, {}
                    for pending in waiting.values():
                        pending.error = failure
                        pending.done.set()
                    return
                with self._lock:
                    answered = self._waiting.pop(request_id, None)
                if answered is not None:
                    answered.result, answered.error = result, error
                    answered.done.set()
        except (OSError, ValueError) as e:
            why = f"the connection to ward failed: {e}"
        finally:
            reader.close()
        with self._lock:
            self._dropped = why
            waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            waiter.error = ConnectionDroppedError(why)
            waiter.done.set()

    def request(self, method: str, params: Mapping[str, Any] | None = None, *, timeout: float | None = -1.0) -> Any:
        """Sends one request and returns its result, or raises the error's class.
        `timeout`: seconds (None: no limit); by default the client's."""
        limit = self.timeout if timeout == -1.0 else timeout
        request_id = next(self._ids)
        waiter = _Waiter()
        with self._lock:
            if self._dropped is not None:
                raise ConnectionDroppedError(self._dropped)
            self._waiting[request_id] = waiter
        try:
            with self._send_lock:
                self._sock.sendall(_wire.request_line(request_id, method, params or {}))
        except OSError as e:
            with self._lock:
                self._waiting.pop(request_id, None)
            raise ConnectionDroppedError(f"sending to ward failed: {e}") from None
        if not waiter.done.wait(limit):
            with self._lock:
                self._waiting.pop(request_id, None)
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
             timeout: float | None = -1.0) -> dict[str, Any]:
        """Runs (or replays) one tool call; returns its CallResult, stdout and stderr as str
        (bytes when they were not UTF-8). `checkpoint`: the agent's state before this call,
        stored atomically with its start."""
        return _wire.call_result(self.request("tool.call", _wire.call_params(tool, arguments, call_id, checkpoint), timeout=timeout))

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
