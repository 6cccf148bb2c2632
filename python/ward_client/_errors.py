"""One exception class per error kind (the repository's docs/design.md, *Errors*), each
carrying ward's message; and the client's own: no server, a dropped connection, no answer
in time."""

from __future__ import annotations

from typing import Any


class WardError(Exception):
    """An error from ward, or from the connection to it. `kind` names it as ward does."""

    kind = "internal"

    def __init__(self, message: str, code: int | None = None, field: str | None = None) -> None:
        super().__init__(f"{self.kind}: {message}")
        self.message = message
        self.code = code
        #: The request member the error is about (`data.field`), if ward named one.
        self.field = field


class ConflictError(WardError):
    """The call ID was recorded with another tool or other arguments."""
    kind = "conflict"


class InProgressError(WardError):
    """The call is running elsewhere."""
    kind = "in-progress"


class InDoubtError(WardError):
    """The call may have run and its outcome is not recorded: an operator settles it."""
    kind = "in-doubt"


class AwaitingApprovalError(WardError):
    """The tool is gated: the call is recorded and waits for `ward approve` or `ward deny`.
    Asking again with the same call ID (and `approval_timeout` to wait) never gates it twice."""
    kind = "awaiting-approval"


class UnknownToolError(WardError):
    kind = "unknown-tool"


class InvalidArgumentsError(WardError):
    kind = "invalid-arguments"


class PolicyDeniedError(WardError):
    kind = "policy-denied"


class TooLargeError(WardError):
    kind = "too-large"


class StorageError(WardError):
    """The ledger could not record it (a full disk): asking again later gets the result."""
    kind = "storage"


class InternalError(WardError):
    kind = "internal"


class UnauthorizedError(WardError):
    """The connection was refused: no token, or a wrong one."""
    kind = "unauthorized"


class ServerNotFoundError(WardError):
    """No ward serves the socket (it is missing, or nothing listens there)."""
    kind = "server-not-found"


class ConnectionDroppedError(WardError):
    """The connection ended before ward answered (ward stopped or closed it). A tool call
    may have run: asking again with the same call ID gets its outcome."""
    kind = "connection-dropped"


class ServerTimeoutError(WardError):
    """No answer within the timeout. The request may still be served: asking again with
    the same call ID gets its outcome."""
    kind = "timeout"


#: The error class of each kind ward sends.
KINDS: dict[str, type[WardError]] = {
    c.kind: c for c in (ConflictError, InProgressError, InDoubtError, UnknownToolError, InvalidArgumentsError,
                        PolicyDeniedError, TooLargeError, StorageError, InternalError, UnauthorizedError, AwaitingApprovalError)
}


def from_response(error: Any) -> WardError:
    """The exception for a JSON-RPC error object of ward's (a malformed one is internal)."""
    if not isinstance(error, dict):
        return InternalError(f"ward answered with a malformed error: {error!r}")
    data = error.get("data")
    kind = data.get("kind") if isinstance(data, dict) else None
    field = data.get("field") if isinstance(data, dict) else None
    code = error.get("code")
    cls = KINDS.get(kind, InternalError) if isinstance(kind, str) else InternalError
    return cls(str(error.get("message", "")), code if isinstance(code, int) else None, field if isinstance(field, str) else None)
