"""ward's Python client: one file, standard library only.

    from ward_client import Ward
    ward = Ward()                      # connects to $WARD_SOCKET with $WARD_TOKEN (set by `ward run`)
    state = ward.resume()              # {runId, attempt, checkpoint, completedSince, inDoubt}
    result = ward.call("c1", "shell", command="ls")          # CallResult dict
    ward.checkpoint({"step": 3})       # -> seq
    plan = ward.journal("llm-1", lambda: ask_the_model())    # recorded once, replayed after
    ward.close()                       # or `with Ward() as ward: ...`, which closes it
"""
# Annotations stay unevaluated: agents import this file with whatever Python they run, which
# may predate `X | None` at run time.
from __future__ import annotations

import base64
import itertools
import json
import os
import socket
import threading
from collections.abc import Callable
from typing import Any


class WardError(Exception):
    """A JSON-RPC error from ward; `kind` is one of the error kinds of docs/design.md, "Errors"."""

    def __init__(self, kind: str, message: str, code: int | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.code = code


def token_file(socket_path: str) -> str:
    """Where `ward serve` writes the token of the socket at socket_path (mode 0600)."""
    return (socket_path[:-5] if socket_path.endswith(".sock") else socket_path) + ".token"


def find_token(socket_path: str) -> str | None:
    """The agent's token for a socket: the token file beside it (`ward serve`), else $WARD_TOKEN (`ward run`)."""
    try:
        fd = os.open(token_file(socket_path), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return os.environ.get("WARD_TOKEN")
    with os.fdopen(fd, "rb") as f:
        return f.readline(256).strip().decode() or os.environ.get("WARD_TOKEN")


class Ward:
    def __init__(self, socket_path: str | None = None, timeout: float | None = None, token: str | None = None) -> None:
        """Connects and opens the connection with the agent's token (`token`, else find_token):
        ward serves nothing else. Raises WardError("unauthorized", ...) when it is refused."""
        path = socket_path or os.environ.get("WARD_SOCKET")
        if not path:
            raise WardError("invalid-arguments", "no socket: set WARD_SOCKET (ward run does) or pass socket_path")
        self.socket_path: str = path
        token = token or find_token(self.socket_path)
        if not token:
            raise WardError("unauthorized", f"no token for {self.socket_path}: set WARD_TOKEN (ward run does) "
                            f"or let this user read {token_file(self.socket_path)} (ward serve writes it)")
        self.run_id = os.environ.get("WARD_RUN_ID")
        attempt = os.environ.get("WARD_ATTEMPT", "1")
        self.attempt = int(attempt) if attempt.isdigit() else 1
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(self.socket_path)
        self._file = self._sock.makefile("rb")
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        try:
            self.request("session.auth", {"token": token})
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    # `with Ward() as ward:` closes the connection however the block ends.
    def __enter__(self) -> Ward:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Sends one request and returns its result, or raises WardError."""
        with self._lock:
            request_id = next(self._ids)
            line = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}},
                              separators=(",", ":"), ensure_ascii=False)
            self._sock.sendall(line.encode() + b"\n")
            while True:
                raw = self._file.readline()
                if not raw:
                    raise WardError("internal", "ward closed the connection")
                try:
                    response = json.loads(raw)
                except ValueError as e:
                    raise WardError("internal", f"ward answered with a line that is not JSON: {e}") from None
                if not isinstance(response, dict):
                    raise WardError("internal", "ward answered with JSON that is not an object")
                if response.get("id") in (request_id, None):
                    break
        # Whatever ward answers, the caller gets a result or a WardError, never a KeyError.
        error = response.get("error")
        if error is not None:
            if not isinstance(error, dict):
                raise WardError("internal", f"ward answered with a malformed error: {error!r}")
            data = error.get("data")
            kind = data.get("kind") if isinstance(data, dict) else None
            code = error.get("code")
            raise WardError(kind if isinstance(kind, str) else "internal", str(error.get("message", "")),
                            code if isinstance(code, int) else None)
        if "result" not in response:
            raise WardError("internal", "ward answered with neither a result nor an error")
        return response["result"]

    def _member(self, result: Any, name: str, method: str) -> Any:
        if not isinstance(result, dict) or name not in result:
            raise WardError("internal", f"malformed {method} result from ward: no {name}")
        return result[name]

    def resume(self) -> Any:
        return self.request("run.resume")

    def call(self, call_id: str, tool: str, checkpoint: Any = None, **arguments: Any) -> dict[str, Any]:
        """Runs (or replays) one tool call; returns the CallResult with stdout/stderr as str,
        or bytes when they were not UTF-8."""
        params: dict[str, Any] = {"callId": call_id, "tool": tool, "arguments": arguments}
        if checkpoint is not None:
            params["checkpoint"] = checkpoint
        result = self.request("tool.call", params)
        if not isinstance(result, dict):
            raise WardError("internal", "malformed tool.call result from ward: not an object")
        for stream in ("stdout", "stderr"):
            if stream + "Base64" in result:
                try:
                    result[stream] = base64.b64decode(result.pop(stream + "Base64"), validate=True)
                except (ValueError, TypeError) as e:
                    raise WardError("internal", f"malformed {stream}Base64 from ward: {e}") from None
        return result

    def checkpoint(self, state: Any, label: str | None = None) -> Any:
        params: dict[str, Any] = {"state": state}
        if label is not None:
            params["label"] = label
        return self._member(self.request("checkpoint.save", params), "seq", "checkpoint.save")

    def load(self, seq: int | None = None) -> Any:
        return self.request("checkpoint.load", {} if seq is None else {"seq": seq})

    def journal(self, key: str, fn: Callable[[], Any]) -> Any:
        """The value recorded under `key`; the first time, records fn() (later fn is not called)."""
        existing = self.request("journal.record", {"key": key})  # look up only
        if self._member(existing, "found", "journal.record"):
            return self._member(existing, "value", "journal.record")
        return self._member(self.request("journal.record", {"key": key, "value": fn()}), "value", "journal.record")
