"""What the synchronous and asyncio clients share: finding the socket and token, requests
as lines, answers checked, call results decoded."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from typing import Any

from ._errors import InternalError, InvalidArgumentsError, TooLargeError, UnauthorizedError, WardError, from_response

#: How long a request waits for its answer unless told otherwise (a tool's own timeout is
#: its policy's; this bounds a client that would otherwise wait forever on a stuck server).
DEFAULT_TIMEOUT = 300.0


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


def endpoint(socket_path: str | None, token: str | None) -> tuple[str, str]:
    """The socket and the token to open it with, or the reason there are none."""
    path = socket_path or os.environ.get("WARD_SOCKET")
    if not path:
        raise InvalidArgumentsError("no socket: set WARD_SOCKET (ward run does) or pass socket_path")
    found = token or find_token(path)
    if not found:
        raise UnauthorizedError(f"no token for {path}: set WARD_TOKEN (ward run does) "
                                f"or let this user read {token_file(path)} (ward serve writes it)")
    return path, found


#: The longest request line ward reads (docs/design.md): past it ward answers too-large and
#: closes the connection, so the client refuses such a request itself and keeps it.
MAXIMUM_LINE_BYTES = 16 << 20


def request_line(request_id: int, method: str, params: Mapping[str, Any]) -> bytes:
    """The request as ward reads it; `TooLargeError` past ward's limit, `InvalidArgumentsError`
    when the params are not JSON."""
    try:
        text = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": dict(params)},
                          separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentsError(f"{method}: the params are not JSON: {e}") from None
    line = text.encode() + b"\n"
    if len(line) > MAXIMUM_LINE_BYTES:
        raise TooLargeError(f"{method}: the request is {len(line)} bytes, more than ward reads in a line ({MAXIMUM_LINE_BYTES})")
    return line


def parse_answer(raw: bytes) -> tuple[Any, Any, WardError | None]:
    """An answer line: (its id, its result, its error as an exception)."""
    try:
        answer = json.loads(raw)
    except ValueError as e:
        return None, None, InternalError(f"ward answered with a line that is not JSON: {e}")
    if not isinstance(answer, dict):
        return None, None, InternalError("ward answered with JSON that is not an object")
    if answer.get("error") is not None:
        return answer.get("id"), None, from_response(answer["error"])
    if "result" not in answer:
        return answer.get("id"), None, InternalError("ward answered with neither a result nor an error")
    return answer.get("id"), answer["result"], None


def call_params(tool: str, arguments: Mapping[str, Any] | None, call_id: str, checkpoint: Any,
                approval_timeout: float = 0) -> dict[str, Any]:
    params: dict[str, Any] = {"callId": call_id, "tool": tool, "arguments": dict(arguments or {})}
    if checkpoint is not None:
        params["checkpoint"] = checkpoint
    if isinstance(approval_timeout, bool) or not isinstance(approval_timeout, (int, float)) or not approval_timeout >= 0:
        raise InvalidArgumentsError(f"approval_timeout must be a number of seconds, 0 or more, not {approval_timeout!r}")
    if approval_timeout:
        params["approvalTimeout"] = approval_timeout
    return params


def call_timeout(timeout: float | None, own: float | None, approval_timeout: float) -> float | None:
    """The client's wait for a tool.call: the one given (or the client's own, `own`, for
    -1) for the call, plus the time ward may wait for a gated call's verdict: a client that
    gave up first would leave an approved call running with nobody to read its answer."""
    limit = own if timeout == -1.0 else timeout
    return None if limit is None else limit + approval_timeout


def call_result(result: Any) -> dict[str, Any]:
    """A CallResult with stdout/stderr as str, or bytes when they were not UTF-8."""
    if not isinstance(result, dict):
        raise InternalError("malformed tool.call result from ward: not an object")
    for stream in ("stdout", "stderr"):
        if stream + "Base64" in result:
            try:
                result[stream] = base64.b64decode(result.pop(stream + "Base64"), validate=True)
            except (ValueError, TypeError) as e:
                raise InternalError(f"malformed {stream}Base64 from ward: {e}") from None
    return result


def member(result: Any, name: str, method: str) -> Any:
    if not isinstance(result, dict) or name not in result:
        raise InternalError(f"malformed {method} result from ward: no {name}")
    return result[name]


def pending_call(resumed: Mapping[str, Any]) -> str | None:
    """The call the agent was making when it stopped, from a `resume()` answer: a checkpoint
    handed in with a call is the state *before* that call, so an agent that resumes from it
    must make that call again (it is replayed when it finished, run when it never started,
    refused when in doubt). None when the latest checkpoint was saved on its own."""
    checkpoint = resumed.get("checkpoint")
    call_id = checkpoint.get("callId") if isinstance(checkpoint, dict) else None
    return call_id if isinstance(call_id, str) else None
