"""An MCP server on the official Python SDK (FastMCP) with N tools: Scripts/bench times its
start (exec to the answer to `initialize`) against `ward mcp`'s, which lists as many.

Usage: mcp_peer.py N
"""

from __future__ import annotations

import sys

from mcp.server.fastmcp import FastMCP


def echo(command: str) -> str:
    """Echo the command (never called: only the start is timed)."""
    return command


def main() -> None:
    server = FastMCP("peer")
    for i in range(int(sys.argv[1])):
        server.add_tool(echo, name=f"tool_{i}", description=f"Tool {i}.")
    server.run("stdio")


if __name__ == "__main__":
    main()
