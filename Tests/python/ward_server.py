"""A `ward serve` of a test's own, for the Python client's tests: policies, workspace, ledger
and socket in a temporary directory (WARD names the ward binary)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "Scripts"))
from ward_harness import policy_directory  # noqa: E402

WARD = os.environ.get("WARD", str(ROOT / ".build" / "debug" / "ward"))

TOOLS = """
[tools.echo]
command = ["/bin/sh", "-c", "printf %s \\"$1\\"", "sh", "{text}"]
effect = "read-only"

[tools.sleep]
command = ["/bin/sleep", "{seconds}"]
effect = "read-only"

[tools.big]
command = ["/bin/sh", "-c", "yes x | tr -d '\\\\n' | head -c 3000000"]
effect = "read-only"
limits = { output = "4M" }

[tools.append]
command = ["/bin/sh", "-c", "printf '%s\\\\n' \\"$1\\" >> log.txt", "sh", "{line}"]
effect = "non-idempotent"
"""


class Server:
    """`ward serve` on run `run_id` with `tools` (TOML), until `stop`."""

    def __init__(self, tools: str = TOOLS, run_id: str = "py") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ward-py-"))
        os.chmod(self.root, 0o755)
        policies = policy_directory(str(self.root), tools)
        self.socket = str(self.root / "sock" / "run.sock")
        self.workspace = self.root / "workspace"
        self.ledger = self.root / "ledger.sqlite"
        self.process = subprocess.Popen(
            [WARD, "serve", "--policies", policies, "--workspace", str(self.workspace),
             "--ledger", str(self.ledger), "--socket", self.socket, "--run-id", run_id],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=self.root)
        assert self.process.stdout is not None
        self.process.stdout.readline()  # the socket path, once it listens

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)
        assert self.process.stdout is not None
        self.process.stdout.close()
        shutil.rmtree(self.root, ignore_errors=True)
