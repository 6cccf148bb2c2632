"""A LangGraph agent under ward: its checkpoints in ward's ledger, its tool calls in ward's
sandbox, and a crash anywhere costs nothing twice.

    ward run --policies policies --workspace workspace -- python3 docs/examples/langgraph_agent.py

The model is scripted (no network): it asks for the ward tool `send` five times, one message
each, then answers "done". `send` is whatever policies/ says it is; the tests use one that
appends a line to outbox.txt in the workspace, non-idempotent.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from ward_client import Ward
from ward_client.langgraph import WardSaver, WardToolCalls

MESSAGES = 5


class ScriptedModel(FakeMessagesListChatModel):
    """A fake chat model whose answer depends only on the conversation so far (how many tool
    results it holds), so a resumed graph gets the answer an uncrashed one would; but, like a
    real model, with new tool call IDs each time it is asked."""

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        i = sum(isinstance(m, ToolMessage) for m in messages)
        if i < MESSAGES:
            call = {"name": "send", "args": {"text": f"message {i}"}, "id": f"call-{uuid.uuid4().hex[:8]}"}
            return ChatResult(generations=[ChatGeneration(message=AIMessage("", tool_calls=[call]))])
        return ChatResult(generations=[ChatGeneration(message=AIMessage("done"))])


@tool
def send(text: str) -> str:
    """Send a message (run by ward as its tool `send`)."""
    raise NotImplementedError("WardToolCalls runs this tool in ward")


model = ScriptedModel(responses=[])


def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
    return {"messages": [model.invoke(state["messages"])]}


with Ward() as ward:                                # $WARD_SOCKET and the token, from `ward run`
    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([send], wrap_tool_call=WardToolCalls(ward)))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    saver = WardSaver(ward)                         # reads back what an earlier attempt recorded
    graph = builder.compile(checkpointer=saver)

    config: RunnableConfig = {"configurable": {"thread_id": "outbox"}}
    # durability="sync": each step is recorded before the next starts, so the model's message
    # naming a tool call is in the ledger before the call is made (WardToolCalls insists).
    if saver.get_tuple(config) is None:
        final = graph.invoke({"messages": [HumanMessage("send five messages")]}, config, durability="sync")
    else:
        # The thread has a checkpoint: it goes on from there. The step it was in runs again,
        # and the tool calls that step had made are replayed from the ledger, not sent again.
        final = graph.invoke(None, config, durability="sync")

    if "RESULT" in os.environ:
        with open(os.environ["RESULT"], "w") as out:
            json.dump([[m.type, m.content] for m in final["messages"]], out)  # without the IDs
    print(final["messages"][-1].content)
