"""LangGraph on ward: a checkpointer whose state lives in ward's ledger, and tool calls that
go through ward's sandbox and ledger with call IDs that survive a crash.

    from ward_client import Ward
    from ward_client.langgraph import WardSaver, WardToolCalls

    ward = Ward()                                   # inside `ward run`
    graph = builder.compile(checkpointer=WardSaver(ward))
    tools = ToolNode([send_email], wrap_tool_call=WardToolCalls(ward))

`WardSaver` records every change LangGraph makes (a checkpoint, a task's pending writes, a
thread deleted, copied or pruned) as one ward checkpoint of the run, durably, before it
answers; a restarted agent reads them back in order and serves LangGraph from memory. The
ledger keeps every record (it is an audit log): deleting or pruning changes what the saver
serves, not what the ledger holds. Its scope is the ward run: `ward run --run-id ID` again
resumes it.

`WardToolCalls` runs each tool call the model makes as the ward tool of the same name, with
the call ID `langgraph/THREAD/TOOL_CALL_ID`. After a crash the graph resumes from its last
checkpoint and makes the calls of the step it was in again with the same IDs: a finished
call is replayed from the ledger, never run twice.

Needs `langgraph` (>= 1.0) installed beside `ward-client`.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command

from ._errors import InternalError, InvalidArgumentsError
from ._records import RecordLog
from ._sync import Ward

Typed = tuple[str, bytes]


def _encode(typed: Typed) -> list[str]:
    return [typed[0], base64.b64encode(typed[1]).decode("ascii")]


def _decode(value: Any, seq: int) -> Typed:
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise InternalError(f"checkpoint {seq} holds a LangGraph value that is not [type, base64]")
    return value[0], base64.b64decode(value[1])


class WardSaver(RecordLog, InMemorySaver):
    """A LangGraph checkpointer (sync and async) that keeps its state in ward's ledger.

    Every change is made durable in ward before the method returns, then applied to an
    in-memory index that answers reads. Created inside a run that already has records (an
    agent restarted after a crash), it reads them back first. A checkpoint stores only the
    channels that changed (`new_versions`); ward stores the content-defined chunks of each
    record once, so a long thread's storage grows with what changed, not with its length.
    """

    kind = "langgraph"

    def __init__(self, ward: Ward | None = None, *, serde: SerializerProtocol | None = None) -> None:
        InMemorySaver.__init__(self, serde=serde)
        RecordLog.__init__(self, ward)
        # Each list channel's version, length and serialized value as last put here (not as
        # read back: the first put of a channel after a restart is recorded whole).
        self._last: dict[tuple[str, str, str], tuple[Any, int, Typed]] = {}
        self._replay()

    def _apply(self, r: Mapping[str, Any], seq: int, live: Any = None) -> None:
        op = r["op"]
        if op == "put":
            thread, ns = r["thread"], r["ns"]
            for channel, version, blob in r["blobs"]:
                if live is not None and channel in live:
                    self.blobs[(thread, ns, channel, version)] = live[channel]
                elif isinstance(blob, dict):
                    base = self.serde.loads_typed(self.blobs[(thread, ns, channel, blob["extends"])])
                    tail = self.serde.loads_typed(_decode(blob["tail"], seq))
                    self.blobs[(thread, ns, channel, version)] = self.serde.dumps_typed(base + tail)
                else:
                    self.blobs[(thread, ns, channel, version)] = _decode(blob, seq)
            self.storage[thread][ns][r["id"]] = (_decode(r["checkpoint"], seq), _decode(r["metadata"], seq), r["parent"])
        elif op == "writes":
            key = (r["thread"], r["ns"], r["id"])
            for channel, idx, value in r["writes"]:
                self.writes.setdefault(key, {})[(r["task"], idx)] = (r["task"], channel, _decode(value, seq), r["path"])
        elif op == "delete":
            self._forget(r["thread"])
        elif op == "delete-runs":
            self._delete_runs(set(r["runs"]))
        elif op == "copy":
            self._copy(r["from"], r["to"])
        elif op == "prune":
            self._prune(r["threads"], r["strategy"])
        else:
            raise InternalError(f"checkpoint {seq} holds a LangGraph record of an unknown kind: {op!r}")

    # MARK: writes

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        configurable = config["configurable"]
        thread, ns = configurable["thread_id"], configurable.get("checkpoint_ns", "")
        rest: dict[str, Any] = dict(checkpoint)
        values: dict[str, Any] = rest.pop("channel_values")
        with self._order:
            blobs: list[list[Any]] = []
            full: dict[str, Typed] = {}
            last: dict[tuple[str, str, str], tuple[Any, int, Typed]] = {}
            for k, v in new_versions.items():
                if k not in values:
                    blobs.append([k, v, _encode(("empty", b""))])
                    continue
                value = values[k]
                full[k] = self.serde.dumps_typed(value)
                # A list whose first items serialize exactly as this channel's last version did
                # (a reducer's append, the usual case) is recorded as what was appended to that
                # version: a step then costs ward what it added, not the whole history again.
                # Compared as bytes, not as objects: an item changed in place is a change.
                before = self._last.get((thread, ns, k))
                if (before is not None and type(value) is list and len(value) >= before[1]
                        and self.serde.dumps_typed(value[:before[1]]) == before[2]):
                    tail = _encode(self.serde.dumps_typed(value[before[1]:]))
                    blobs.append([k, v, {"extends": before[0], "tail": tail}])
                else:
                    blobs.append([k, v, _encode(full[k])])
                if type(value) is list:
                    last[(thread, ns, k)] = (v, len(value), full[k])
            self._commit({
                "op": "put", "thread": thread, "ns": ns, "id": checkpoint["id"], "parent": configurable.get("checkpoint_id"),
                "checkpoint": _encode(self.serde.dumps_typed(rest)),
                "metadata": _encode(self.serde.dumps_typed(get_checkpoint_metadata(config, metadata))),
                "blobs": blobs,
            }, full)
            self._last.update(last)  # only once ward has the record
        return {"configurable": {"thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"]}}

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = "") -> None:
        configurable = config["configurable"]
        thread, ns, checkpoint_id = configurable["thread_id"], configurable.get("checkpoint_ns", ""), configurable["checkpoint_id"]
        with self._order:
            existing = set(self.writes.get((thread, ns, checkpoint_id), {}))
            kept = []
            for idx, (channel, value) in enumerate(writes):
                inner = WRITES_IDX_MAP.get(channel, idx)
                # A regular write is kept once (a task's retry does not replace it); a special
                # one (error, interrupt, resume) replaces the one before.
                if inner >= 0 and (task_id, inner) in existing:
                    continue
                kept.append([channel, inner, _encode(self.serde.dumps_typed(value))])
            if kept:
                self._commit({"op": "writes", "thread": thread, "ns": ns, "id": checkpoint_id, "task": task_id, "path": task_path,
                              "writes": kept})

    def delete_thread(self, thread_id: str) -> None:
        self._record({"op": "delete", "thread": thread_id})

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        if run_ids:
            self._record({"op": "delete-runs", "runs": list(run_ids)})

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._record({"op": "copy", "from": source_thread_id, "to": target_thread_id})

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}: keep_latest or delete")
        if thread_ids:
            self._record({"op": "prune", "threads": list(thread_ids), "strategy": strategy})

    def _forget(self, thread: str) -> None:
        InMemorySaver.delete_thread(self, thread)
        for key in [key for key in self._last if key[0] == thread]:
            del self._last[key]

    def _delete_runs(self, runs: set[str]) -> None:
        for thread, namespaces in self.storage.items():
            for ns, checkpoints in namespaces.items():
                for checkpoint_id in [c for c, (_, md, _) in checkpoints.items() if self.serde.loads_typed(md).get("run_id") in runs]:
                    del checkpoints[checkpoint_id]
                    self.writes.pop((thread, ns, checkpoint_id), None)

    def _copy(self, source: str, target: str) -> None:
        if source not in self.storage:
            return
        for ns, checkpoints in self.storage[source].items():
            self.storage[target][ns].update(checkpoints)
        for (thread, ns, checkpoint_id), writes in list(self.writes.items()):
            if thread == source:
                self.writes[(target, ns, checkpoint_id)] = dict(writes)
        for (thread, ns, channel, version), blob in list(self.blobs.items()):
            if thread == source:
                self.blobs[(target, ns, channel, version)] = blob

    def _prune(self, threads: Sequence[str], strategy: str) -> None:
        for thread in threads:
            if thread not in self.storage:
                continue
            if strategy == "delete":
                self._forget(thread)
                continue
            for ns, checkpoints in self.storage[thread].items():
                latest = max(checkpoints, default=None)
                for checkpoint_id in [c for c in checkpoints if c != latest]:
                    del checkpoints[checkpoint_id]
                    self.writes.pop((thread, ns, checkpoint_id), None)

    # MARK: reads, from memory

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        with self._data:
            return super().get_tuple(config)

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None, before: RunnableConfig | None = None,
             limit: int | None = None) -> Iterator[CheckpointTuple]:
        with self._data:
            found = [*super().list(config, filter=filter, before=before, limit=limit)]
        yield from found

    # MARK: async: reads answer at once, writes wait for ward in a thread

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.get_tuple(config)

    async def alist(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None, before: RunnableConfig | None = None,
                    limit: int | None = None) -> AsyncIterator[CheckpointTuple]:
        for found in self.list(config, filter=filter, before=before, limit=limit):
            yield found

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
                   new_versions: ChannelVersions) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = "") -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)


#: Where LangGraph (1.x) keeps a run's durability in the config's `configurable`.
DURABILITY_KEY = "__pregel_durability"


def call_id(thread_id: str, tool_call_id: str) -> str:
    """The ward call ID of a model's tool call in a LangGraph thread."""
    return f"langgraph/{thread_id}/{tool_call_id}"


class WardToolCalls:
    """A `ToolNode` tool-call wrapper (`wrap_tool_call=` and `awrap_tool_call=`) that runs each
    call as the ward tool of the same name (or `tools[name]`), its arguments the model's.

    The answer is a `ToolMessage` with the tool's stdout, or, when it did not succeed, its
    status, exit code and stderr with `status="error"`. A call whose name is not routed to ward
    (`only=` given and the name not in it) runs as LangGraph would run it.
    """

    def __init__(self, ward: Ward, *, tools: Mapping[str, str] | None = None, only: Sequence[str] | None = None) -> None:
        self.ward = ward
        self.tools = dict(tools or {})
        self.only = None if only is None else set(only)

    def _routed(self, request: ToolCallRequest) -> tuple[str, str, dict[str, Any]] | None:
        name = request.tool_call["name"]
        if self.only is not None and name not in self.only:
            return None
        configurable = (request.runtime.config or {}).get("configurable", {}) if request.runtime is not None else {}
        # With durability "async" (LangGraph's default) the tools step may start before the
        # model's message that named these calls is recorded: after a crash there, a real
        # model is asked again, names new IDs, and the tools run twice.
        durability = configurable.get(DURABILITY_KEY, "async")  # LangGraph's default when not given
        if durability != "sync":
            raise InvalidArgumentsError(f"tool call {name!r}: run the graph with durability=\"sync\" (it runs with {durability!r}):"
                                        " ward's call IDs come from the model's tool call IDs, which must be recorded before the call")
        thread = configurable.get("thread_id")
        tool_call_id = request.tool_call.get("id")
        if not isinstance(thread, str) or not isinstance(tool_call_id, str) or not tool_call_id:
            raise InternalError(f"tool call {name!r} has no thread_id or no tool call id: ward needs both for its call ID")
        return self.tools.get(name, name), call_id(thread, tool_call_id), dict(request.tool_call.get("args") or {})

    @staticmethod
    def _message(request: ToolCallRequest, result: Mapping[str, Any]) -> ToolMessage:
        def text(stream: str) -> str:
            value = result.get(stream, "")
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

        tool_call_id = request.tool_call.get("id") or ""
        if result.get("status") == "succeeded":
            return ToolMessage(content=text("stdout"), name=request.tool_call["name"], tool_call_id=tool_call_id)
        detail = json.dumps({k: result.get(k) for k in ("status", "exitCode", "signal")})
        return ToolMessage(content=f"{detail}\n{text('stderr')}", name=request.tool_call["name"], tool_call_id=tool_call_id, status="error")

    def __call__(self, request: ToolCallRequest,
                 execute: Callable[[ToolCallRequest], ToolMessage | Command[Any]]) -> ToolMessage | Command[Any]:
        routed = self._routed(request)
        if routed is None:
            return execute(request)
        tool, cid, arguments = routed
        return self._message(request, self.ward.call(tool, arguments, call_id=cid))

    async def acall(self, request: ToolCallRequest,
                    execute: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]]) -> ToolMessage | Command[Any]:
        """The `awrap_tool_call=` form."""
        routed = self._routed(request)
        if routed is None:
            return await execute(request)
        tool, cid, arguments = routed
        result = await asyncio.to_thread(self.ward.call, tool, arguments, call_id=cid)
        return self._message(request, result)


__all__ = ["WardSaver", "WardToolCalls", "call_id"]
