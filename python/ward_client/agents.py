"""The OpenAI Agents SDK on ward: ward tools as function tools, with call IDs that survive a
crash, and a session whose history lives in ward's ledger.

    from ward_client import Ward
    from ward_client.agents import WardSession, ward_function_tool

    ward = Ward()                                   # inside `ward run`
    session = WardSession(ward, "support-42")
    send = ward_function_tool(ward, "send", "Send a message", {"type": "object", ...}, session=session)
    await Runner.run(Agent(name="ops", tools=[send]), "...", session=session)

A function tool made by `ward_function_tool` runs the ward tool of that name with the
model's arguments, under a call ID from where the call stands in the session's
conversation (or the model's tool call ID without a session). `WardSession` records each
change to the conversation (items added, one popped, the session cleared) as one ward
checkpoint, durably, before it returns; a restarted agent reads them back. An agent that
finds its session already holds items goes on from them (`Runner.run(agent, [],
session=session)`): the model is asked again where the history stops, and a tool call it
makes again there with the same arguments is replayed from the ledger, never run twice.

Needs `openai-agents` installed beside `ward-client`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Mapping
from typing import Any

from agents import FunctionTool
from agents.items import TResponseInputItem
from agents.memory import SessionABC, SessionSettings
from agents.tool_context import ToolContext

from ._errors import InvalidArgumentsError
from ._records import RecordLog
from ._sync import Ward


def call_id(scope: str, tool_call_id: str) -> str:
    """The ward call ID of a model's tool call in an Agents SDK conversation, by its ID."""
    return f"agents/{scope}/{tool_call_id}"


def ward_function_tool(ward: Ward, name: str, description: str, params_json_schema: Mapping[str, Any], *, tool: str | None = None,
                       session: WardSession | None = None, scope: str = "default", strict_json_schema: bool = True) -> FunctionTool:
    """A `FunctionTool` named `name` that runs the ward tool `tool` (default: the same name).

    The model sees `description` and `params_json_schema`; its arguments are the call's. The
    output is the tool's stdout; a call that did not succeed returns its status, exit code
    and stderr as the output, so the model can read what went wrong.

    The call ID. With `session` (the conversation's `WardSession`): where the call stands in
    the conversation, `agents/SESSION/N/TOOL/ARGS` (N: the items the session held when the
    call was made; ARGS: a hash of the arguments; `#2`, `#3`... for repeats within a turn).
    The SDK records a turn's tool calls in the session only once they ran, so after a crash
    mid-turn the model is asked again: the same call at the same point of the conversation
    is then the same ward call, replayed, whatever ID the model gives it this time. Without
    a session: `agents/SCOPE/TOOL_CALL_ID`, the model's own ID, safe only with a model whose
    IDs do not change when asked again.
    """
    target = tool or name
    seen: dict[str, int] = {}
    seen_lock = threading.Lock()

    def identity(ctx: ToolContext[Any], arguments: dict[str, Any]) -> str:
        if session is None:
            return call_id(scope, ctx.tool_call_id)
        digest = hashlib.sha256(json.dumps(arguments, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
        base = f"agents/{session.session_id}/{len(session.items())}/{name}/{digest}"
        with seen_lock:
            seen[base] = seen.get(base, 0) + 1
            return base if seen[base] == 1 else f"{base}#{seen[base]}"

    async def invoke(ctx: ToolContext[Any], arguments: str) -> str:
        try:
            parsed = json.loads(arguments) if arguments else {}
        except json.JSONDecodeError as e:
            raise InvalidArgumentsError(f"tool {name}: the model's arguments are not JSON: {e}") from None
        if not isinstance(parsed, dict):
            raise InvalidArgumentsError(f"tool {name}: the model's arguments are not a JSON object")
        result = await asyncio.to_thread(ward.call, target, parsed, call_id=identity(ctx, parsed))
        out, err = (result.get(s, "") for s in ("stdout", "stderr"))
        out = out.decode("utf-8", "replace") if isinstance(out, bytes) else str(out)
        if result.get("status") == "succeeded":
            return out
        err = err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err)
        return json.dumps({k: result.get(k) for k in ("status", "exitCode", "signal")}) + "\n" + err

    return FunctionTool(name=name, description=description, params_json_schema=dict(params_json_schema), on_invoke_tool=invoke,
                        strict_json_schema=strict_json_schema)


class WardSession(RecordLog, SessionABC):
    """An Agents SDK session whose items live in ward's ledger, one record per change."""

    kind = "agents-session"

    def __init__(self, ward: Ward | None, session_id: str, *, session_settings: SessionSettings | None = None) -> None:
        RecordLog.__init__(self, ward)
        self.session_id = session_id
        self.session_settings = session_settings
        self._items: list[TResponseInputItem] = []
        self._replay()

    def _owns(self, record: Mapping[str, Any]) -> bool:
        return record.get("session") == self.session_id

    def _apply(self, record: Mapping[str, Any], seq: int, live: Any = None) -> None:
        op = record["op"]
        if op == "add":
            self._items.extend(record["items"])
        elif op == "pop":
            if self._items:
                self._items.pop()
        elif op == "clear":
            self._items.clear()
        else:
            raise ValueError(f"unknown operation {op!r}")

    def items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The history, oldest first (the latest `limit` items when given)."""
        if limit is None and self.session_settings is not None:
            limit = self.session_settings.limit
        with self._data:
            return list(self._items if limit is None else self._items[-limit:] if limit > 0 else [])

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        return self.items(limit)

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        if items:
            await asyncio.to_thread(self._record, {"op": "add", "session": self.session_id, "items": list(items)})

    async def pop_item(self) -> TResponseInputItem | None:
        def pop() -> TResponseInputItem | None:
            with self._order:
                with self._data:
                    last = self._items[-1] if self._items else None
                if last is not None:
                    self._commit({"op": "pop", "session": self.session_id})
                return last
        return await asyncio.to_thread(pop)

    async def clear_session(self) -> None:
        await asyncio.to_thread(self._record, {"op": "clear", "session": self.session_id})


__all__ = ["WardSession", "call_id", "ward_function_tool"]
