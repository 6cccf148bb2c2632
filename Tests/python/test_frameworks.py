"""The README's LangGraph and OpenAI Agents SDK examples (docs/examples), run under `ward run`
with a non-idempotent tool: as written, and killed (SIGKILL) at each step in turn, just
before its ward integration makes the step's record durable (LangGraph: a task's writes;
Agents SDK: the items a turn adds to the session, and before each tool call). Each crashed run, restarted
by ward, must end in the same final state as the uncrashed one, with every message sent
exactly once. Run by Scripts/test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "Scripts"))
from ward_harness import policy_directory  # noqa: E402
from ward_server import WARD  # noqa: E402

SEND = """
[tools.send]
command = ["/bin/sh", "-c", "printf '%s\\\\n' \\"$1\\" >> outbox.txt; printf 'sent: %s' \\"$1\\"", "sh", "{text}"]
effect = "non-idempotent"
"""
EXPECTED_OUTBOX = [f"message {i}" for i in range(5)]


class Example:
    """One example program run under `ward run`, in a directory of its own each time."""

    def __init__(self, program: str, crash_op: str | None = None, crash_calls: bool = False) -> None:
        self.program = str(ROOT / "docs" / "examples" / program)
        self.crash_op = crash_op
        self.crash_calls = crash_calls

    def run(self, crash_at: int | None = None) -> tuple[list[str], Any, bool, int]:
        """Runs it (killed before record `crash_at` on the first attempt; 0: never, but
        counted); returns the outbox, the final state it wrote, whether it was killed and
        how many records it counted."""
        root = Path(tempfile.mkdtemp(prefix="ward-example-"))
        try:
            os.chmod(root, 0o755)
            policies = policy_directory(str(root), SEND)
            (root / "workspace").mkdir()
            (root / "sock").mkdir(mode=0o700)
            env = dict(os.environ, PYTHONPATH=str(ROOT / "python") + os.pathsep + str(HERE), RESULT=str(root / "result.json"),
                       CRASHED=str(root / "crashed"), COUNTED=str(root / "counted"))
            argv = [sys.executable, self.program]
            if crash_at is not None:
                env["CRASH_AT"] = str(crash_at)
                if self.crash_op is not None:
                    env["CRASH_OP"] = self.crash_op
                if self.crash_calls:
                    env["CRASH_CALLS"] = "1"
                argv = [sys.executable, str(HERE / "crash_agent.py"), self.program]
            done = subprocess.run([WARD, "run", "--policies", policies, "--workspace", str(root / "workspace"),
                                   "--ledger", str(root / "ledger.sqlite"), "--socket", str(root / "sock" / "run.sock"),
                                   "--run-id", "example", "--", *argv],
                                  env=env, capture_output=True, text=True, timeout=180, cwd=root)
            if done.returncode != 0:
                raise AssertionError(f"ward run exited {done.returncode}: {done.stderr}")
            if done.stdout.strip().splitlines()[-1:] != ["done"]:
                raise AssertionError(f"the agent did not end with 'done': {done.stdout!r}")
            outbox = (root / "workspace" / "outbox.txt").read_text().splitlines()
            state = json.loads((root / "result.json").read_text())
            counted = int((root / "counted").read_text()) if (root / "counted").exists() else 0
            return outbox, state, (root / "crashed").exists(), counted
        finally:
            shutil.rmtree(root, ignore_errors=True)


class FrameworkTest(unittest.TestCase):
    def crash_everywhere(self, example: Example) -> None:
        outbox, final, _, records = example.run(crash_at=0)
        self.assertEqual(outbox, EXPECTED_OUTBOX)
        self.assertGreaterEqual(records, 10, "fewer crash points than steps")
        # Two at a time: each is a ward run of its own, and most of each is Python starting.
        with ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(example.run, range(1, records + 1)))
        for k, (got_outbox, got_final, killed, _) in enumerate(runs, start=1):
            with self.subTest(crash_before_record=k):
                self.assertTrue(killed, "the agent was not killed there")
                self.assertEqual(got_outbox, EXPECTED_OUTBOX, "a message was sent twice, or never")
                self.assertEqual(got_final, final)

    def test_the_readme_shows_the_examples_as_tested(self) -> None:
        readme = (ROOT / "README.md").read_text()
        for name in ("langgraph_agent.py", "agents_agent.py"):
            shown = "```python\n" + (ROOT / "docs" / "examples" / name).read_text() + "```" in readme
            self.assertTrue(shown, f"README.md does not show docs/examples/{name} as it is")

    def test_a_langgraph_agent_killed_at_every_record_sends_each_message_once(self) -> None:
        self.crash_everywhere(Example("langgraph_agent.py", crash_op="writes"))

    def test_an_agents_sdk_agent_killed_at_every_record_sends_each_message_once(self) -> None:
        # A turn's items are recorded once its tools ran: a crash before each tool call too.
        self.crash_everywhere(Example("agents_agent.py", crash_calls=True))


if __name__ == "__main__":
    unittest.main()
