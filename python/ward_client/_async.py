"""`AsyncWard`: the agent protocol from asyncio tasks. One connection; requests from many
tasks are in flight on it at once, each answer matched to its request by id."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from . import _wire
from ._errors import ConnectionDroppedError, InternalError, ServerNotFoundError, ServerTimeoutError


class AsyncWard:
    """`async with AsyncWard() as ward:` (or `await AsyncWard.connect()` and `await ward.close()`).
    The same methods and errors as `Ward`, awaited."""

    def __init__(self, socket_path: str | None = None, *, token: str | None = None, timeout: float | None = _wire.DEFAULT_TIMEOUT) -> None:
        self.socket_path, self._token = _wire.endpoint(socket_path, token)
        self.timeout = timeout
        self.run_id: str | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._dropped: str | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, socket_path: str | None = None, *, token: str | None = None,
                      timeout: float | None = _wire.DEFAULT_TIMEOUT) -> AsyncWard:
        ward = cls(socket_path, token=token, timeout=timeout)
        await ward._open()
        return ward

    async def _open(self) -> None:
        try:
            # A line may be up to 16 MiB (docs/design.md, *The protocol*).
            reader, self._writer = await asyncio.open_unix_connection(self.socket_path, limit=(16 << 20) + 1024)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise ServerNotFoundError(f"no ward serves {self.socket_path} ({e.strerror})") from None
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))
        try:
            self.run_id = _wire.member(await self.request("session.auth", {"token": self._token}), "runId", "session.auth")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task

    async def __aenter__(self) -> AsyncWard:
        await self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        why = "ward closed the connection"
        try:
            while raw := await reader.readline():
                request_id, result, error = _wire.parse_answer(raw)
                if not isinstance(request_id, int):
                    # A line that names no request (not JSON, or ward's refusal of a line it
                    # could not read): answers can no longer be paired with requests.
                    failure = error or InternalError("ward answered with no request id")
                    self._dropped = failure.message
                    waiting, self._waiting = self._waiting, {}
                    for pending in waiting.values():
                        if not pending.done():
                            pending.set_exception(failure)
                    return
                future = self._waiting.pop(request_id, None)
                if future is None or future.done():
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result)
        except (OSError, ValueError) as e:
            why = f"the connection to ward failed: {e}"
        self._dropped = why
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(ConnectionDroppedError(why))

    async def request(self, method: str, params: Mapping[str, Any] | None = None, *, timeout: float | None = -1.0) -> Any:
        """Sends one request and returns its result, or raises the error's class."""
        if self._writer is None:
            raise ConnectionDroppedError("not connected: use `async with AsyncWard()` or `await AsyncWard.connect()`")
        if self._dropped is not None:
            raise ConnectionDroppedError(self._dropped)
        limit = self.timeout if timeout == -1.0 else timeout
        request_id = next(self._ids)
        line = _wire.request_line(request_id, method, params or {})  # refused here, nothing sent
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            self._writer.write(line)
            await self._writer.drain()
        except OSError as e:
            self._waiting.pop(request_id, None)
            raise ConnectionDroppedError(f"sending to ward failed: {e}") from None
        try:
            return await asyncio.wait_for(future, limit)
        except asyncio.TimeoutError:  # noqa: UP041 (not the built-in TimeoutError before Python 3.11)
            self._waiting.pop(request_id, None)
            raise ServerTimeoutError(f"no answer to {method} within {limit} s") from None

    async def resume(self) -> dict[str, Any]:
        result = await self.request("run.resume")
        if not isinstance(result, dict):
            raise InternalError("malformed run.resume result from ward: not an object")
        return result

    async def call(self, tool: str, arguments: Mapping[str, Any] | None = None, *, call_id: str, checkpoint: Any = None,
                   timeout: float | None = -1.0, approval_timeout: float = 0) -> dict[str, Any]:
        params = _wire.call_params(tool, arguments, call_id, checkpoint, approval_timeout)
        limit = _wire.call_timeout(timeout, self.timeout, approval_timeout)
        return _wire.call_result(await self.request("tool.call", params, timeout=limit))

    async def checkpoint(self, state: Any, label: str | None = None) -> int:
        params: dict[str, Any] = {"state": state}
        if label is not None:
            params["label"] = label
        return int(_wire.member(await self.request("checkpoint.save", params), "seq", "checkpoint.save"))

    async def load(self, seq: int | None = None) -> dict[str, Any] | None:
        result = await self.request("checkpoint.load", {} if seq is None else {"seq": seq})
        return result if isinstance(result, dict) else None

    async def journal(self, key: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """The value recorded under `key`; the first time, records `await fn()`."""
        existing = await self.request("journal.record", {"key": key})
        if _wire.member(existing, "found", "journal.record"):
            return _wire.member(existing, "value", "journal.record")
        return _wire.member(await self.request("journal.record", {"key": key, "value": await fn()}), "value", "journal.record")
