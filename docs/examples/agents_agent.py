"""An OpenAI Agents SDK agent under ward: its conversation in ward's ledger, its tool calls in
ward's sandbox, and a crash anywhere costs nothing twice.

    ward run --policies policies --workspace workspace -- python3 docs/examples/agents_agent.py

The model is scripted (no network): it asks for the ward tool `send` five times, one message
each, then answers "done". `send` is whatever policies/ says it is; the tests use one that
appends a line to outbox.txt in the workspace, non-idempotent.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

from agents import Agent, Model, ModelResponse, Runner, Usage, set_tracing_disabled
from agents.items import TResponseInputItem, TResponseStreamEvent
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

from ward_client import Ward
from ward_client.agents import WardSession, ward_function_tool

MESSAGES = 5


class ScriptedModel(Model):
    """Answers from the conversation so far (how many tool results it holds), so a resumed
    agent gets the answer an uncrashed one would; but, like a real model, with new tool call
    IDs each time it is asked."""

    async def get_response(self, system_instructions: str | None, input: str | list[TResponseInputItem], *args: Any,
                           **kwargs: Any) -> ModelResponse:
        done = 0 if isinstance(input, str) else sum(1 for item in input if item.get("type") == "function_call_output")
        if done < MESSAGES:
            fresh = uuid.uuid4().hex[:8]
            call = ResponseFunctionToolCall(type="function_call", name="send", call_id=f"call-{fresh}", id=f"fc-{fresh}",
                                            arguments=json.dumps({"text": f"message {done}"}))
            return ModelResponse(output=[call], usage=Usage(), response_id=None)
        text = ResponseOutputText(type="output_text", text="done", annotations=[])
        answer = ResponseOutputMessage(type="message", id="msg-done", role="assistant", status="completed", content=[text])
        return ModelResponse(output=[answer], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[TResponseStreamEvent]:
        raise NotImplementedError("this example does not stream")


async def main() -> None:
    set_tracing_disabled(True)                      # no network: traces are not sent anywhere
    with Ward() as ward:                            # $WARD_SOCKET and the token, from `ward run`
        session = WardSession(ward, "outbox")       # reads back what an earlier attempt recorded
        send = ward_function_tool(ward, "send", "Send a message.",
                                  {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"],
                                   "additionalProperties": False},
                                  session=session)
        agent = Agent(name="sender", instructions="Send five messages.", model=ScriptedModel(), tools=[send])
        # A session that holds items goes on from them: the model is asked where the history
        # stops, and a tool call it makes again with the same ID is replayed from the ledger.
        started = bool(await session.get_items())
        result = await Runner.run(agent, [] if started else "send five messages", session=session)

        if "RESULT" in os.environ:
            # The conversation, without the IDs that change from run to run.
            shown = [{k: v for k, v in item.items() if k not in ("id", "call_id")} for item in await session.get_items()]
            with open(os.environ["RESULT"], "w") as out:
                json.dump(shown, out)
        print(result.final_output)


asyncio.run(main())
