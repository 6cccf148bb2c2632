"""Runs an agent program (argv[1]) that dies by SIGKILL on its first attempt (WARD_ATTEMPT 1)
just before the CRASH_AT-th record its ward integration makes durable: after the effect that
record follows (a tool's answer, a model's step), before ward has it. Later attempts run
undisturbed. Counts records of `WardSaver` (LangGraph) and `WardSession` (Agents SDK), only
those of operation CRASH_OP when it is set (LangGraph's "writes": one per step, made as
the step ends). Creates the file CRASHED just before it dies. With CRASH_AT 0 it never
dies, and writes how many records it counted to the file COUNTED at exit. With CRASH_CALLS
set, each ward tool call counts too, just before it is sent."""

from __future__ import annotations

import atexit
import os
import runpy
import signal
import sys
from typing import Any

crash_at = int(os.environ["CRASH_AT"])
calls = "CRASH_CALLS" in os.environ
only = os.environ.get("CRASH_OP")
first = os.environ.get("WARD_ATTEMPT") == "1"
made = 0


def point() -> None:
    """One more crash point passed: dies here if it is the chosen one."""
    global made
    made += 1
    if first and made == crash_at:
        with open(os.environ["CRASHED"], "w"):
            pass
        os.kill(os.getpid(), signal.SIGKILL)


def patch(kind: Any) -> None:
    original = kind._commit

    def commit(self: Any, record: dict[str, Any], live: Any = None) -> None:
        if only is None or record.get("op") == only:
            point()
        original(self, record, live)

    kind._commit = commit


from ward_client.langgraph import WardSaver  # noqa: E402

patch(WardSaver)
try:
    from ward_client.agents import WardSession
except ImportError:  # the Agents SDK is not installed: LangGraph programs only
    pass
else:
    patch(WardSession)


def report() -> None:
    with open(os.environ["COUNTED"], "w") as out:
        out.write(str(made))


if crash_at == 0:
    atexit.register(report)
if calls:
    from ward_client import Ward

    call = Ward.call

    def counted_call(self: Ward, *args: Any, **kwargs: Any) -> dict[str, Any]:
        point()
        return call(self, *args, **kwargs)

    Ward.call = counted_call  # type: ignore[method-assign]
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
