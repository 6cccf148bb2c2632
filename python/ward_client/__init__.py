"""ward's Python client: tool calls through ward's sandbox and ledger, checkpoints and the
journal, from threads (`Ward`) or asyncio (`AsyncWard`).

    from ward_client import Ward
    with Ward() as ward:                     # $WARD_SOCKET and $WARD_TOKEN, set by `ward run`
        resumed = ward.resume()
        result = ward.call("shell", {"command": "ls"}, call_id="step-1", checkpoint={"step": 1})
"""

from ._async import AsyncWard
from ._errors import (
    AwaitingApprovalError,
    ConflictError,
    ConnectionDroppedError,
    InDoubtError,
    InProgressError,
    InternalError,
    InvalidArgumentsError,
    PolicyDeniedError,
    ServerNotFoundError,
    ServerTimeoutError,
    StorageError,
    TooLargeError,
    UnauthorizedError,
    UnknownToolError,
    WardError,
)
from ._sync import Ward
from ._wire import DEFAULT_TIMEOUT, find_token, pending_call, token_file

__all__ = [
    "DEFAULT_TIMEOUT", "AsyncWard", "AwaitingApprovalError",
    "ConflictError", "ConnectionDroppedError", "InDoubtError", "InProgressError", "InternalError",
    "InvalidArgumentsError", "PolicyDeniedError", "ServerNotFoundError", "ServerTimeoutError", "StorageError", "TooLargeError",
    "UnauthorizedError", "UnknownToolError", "Ward", "WardError", "find_token", "pending_call", "token_file",
]
