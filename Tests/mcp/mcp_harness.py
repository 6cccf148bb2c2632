"""What the MCP tests share: a workspace, ledger and policies of their own per test, `ward mcp`
started by the official MCP client over stdio, ward's command line, and the checks every test
ends with (the ledger verifies, no process of the test is left)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

HERE = Path(__file__).resolve().parent
WARD = os.environ.get("WARD", str(HERE.parent.parent / ".build" / "debug" / "ward"))


# What `ward mcp` tells hosts of each test tool (Tests/mcp/policies), from its policy:
# (readOnlyHint, idempotentHint, destructiveHint, openWorldHint).
HINTS = {
    "send": (False, False, True, False),
    "gated_send": (False, False, True, False),
    "gated_touch": (False, True, False, False),
    "slow_send": (False, False, True, False),
    "slow_touch": (False, True, False, False),
    "read_note": (True, True, False, False),
    "fail": (True, True, False, False),
    "fetch": (True, True, False, True),
    "remove": (False, True, True, False),
}


def eventually(condition: Callable[[], bool], seconds: float = 15) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


class Place:
    """A test's own directory: the test policies, a workspace and a ledger."""

    def __init__(self, run_id: str = "mcp-test") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ward-mcp-"))
        # A root ward's tools run as their own user, who must reach the workspace.
        os.chmod(self.root, 0o755)
        self.policies = self.root / "policies"
        shutil.copytree(HERE / "policies", self.policies)
        # The named syscall sets the tools use are the shipped ones.
        shutil.copy(HERE.parent.parent / "policies" / "syscall-sets.toml", self.policies)
        self.workspace = self.root / "workspace"
        self.workspace.mkdir()
        self.ledger = self.root / "ward" / "ledger.sqlite"
        self.run_id = run_id

    def args(self, *extra: str) -> list[str]:
        return ["mcp", "--policies", str(self.policies), "--workspace", str(self.workspace), "--ledger", str(self.ledger),
                "--run-id", self.run_id, *extra]

    def params(self, *extra: str) -> StdioServerParameters:
        return StdioServerParameters(command=WARD, args=self.args(*extra), cwd=str(self.root))

    def ward(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([WARD, *args], capture_output=True, text=True, cwd=self.root, timeout=120)

    def calls(self) -> list[dict[str, Any]]:
        if not self.ledger.exists():
            return []
        listed = self.ward("ledger", "list", "--ledger", str(self.ledger), "--run", self.run_id, "--json")
        assert listed.returncode == 0, listed.stderr
        calls: list[dict[str, Any]] = json.loads(listed.stdout)
        return calls

    def lines(self, name: str) -> list[str]:
        path = self.workspace / name
        return path.read_text().splitlines() if path.exists() else []

    def processes(self) -> list[int]:
        """Live processes started for this test: ward itself and its tools (whose argv or
        working directory is under the test's directory)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
                with open(f"/proc/{entry}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if state != "Z" and (str(self.root).encode() in cmdline or cwd.startswith(str(self.root))):
                found.append(int(entry))
        return found

    def ward_pids(self) -> list[int]:
        """The `ward mcp` processes serving this test's ledger (not its helpers, zygotes and
        watchdog, which are forks of ward with its argv)."""
        pids = {}
        for pid in self.processes():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
                with open(f"/proc/{pid}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if argv[0] == WARD.encode() and b"mcp" in argv and str(self.ledger).encode() in argv:
                pids[pid] = parent
        return [pid for pid, parent in pids.items() if parent not in pids]

    def tools(self) -> list[int]:
        """Live processes of this test's tools (not ward and its helpers)."""
        found = []
        for pid in self.processes():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().split(b"\0")[0] != WARD.encode():
                        found.append(pid)
            except OSError:
                continue
        return found

    def kill_ward(self) -> None:
        pids = self.ward_pids()
        assert len(pids) == 1, f"expected one ward mcp, found {pids}"
        os.kill(pids[0], signal.SIGKILL)
        assert eventually(lambda: pids[0] not in self.ward_pids()), "ward mcp outlived SIGKILL"

    def finish(self) -> None:
        """Every test's end: the ledger verifies and nothing it started is left."""
        assert eventually(lambda: not self.processes()), f"processes left: {self.processes()}"
        if self.ledger.exists():  # a test that ended before ward opened it has none
            verify = self.ward("ledger", "verify", "--ledger", str(self.ledger))
            assert verify.returncode == 0, verify.stdout + verify.stderr
        shutil.rmtree(self.root, ignore_errors=True)


class PlaceTest(unittest.IsolatedAsyncioTestCase):
    """A test with a `Place` of its own, checked by `Place.finish` at its end."""

    def setUp(self) -> None:
        self.place = Place()

    def tearDown(self) -> None:
        self.place.finish()


@asynccontextmanager
async def session(place: Place, *extra: str) -> AsyncIterator[ClientSession]:
    """An initialized MCP client session with a `ward mcp` of its own."""
    async with stdio_client(place.params(*extra)) as (read, write), ClientSession(read, write) as s:
        await s.initialize()
        yield s


def text(result: Any) -> str:
    """The text content of a CallToolResult."""
    return "".join(getattr(c, "text", "") for c in result.content)
