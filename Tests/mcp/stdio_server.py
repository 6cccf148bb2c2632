"""An MCP server over stdio written with the standard library only, for the tests of
`ward mcp proxy` (Tests/mcp/test_proxy.py): its sandbox reads the system's Python and this file,
nothing else. Run as `python3 -I stdio_server.py MODE`:

- normal: the tools below, each request on a thread of its own;
- garbage: answers tools/call with a line that is not JSON;
- silent: never answers tools/call;
- flood: answers tools/call with an endless line;
- exit: writes to stderr and exits with status 3 before reading anything;
- stopread: stops reading its stdin once it has listed its tools (and answers nothing more);
- malformed: answers tools/call with `"error": null`;
- ignorecancel: `send` finishes its work even when cancelled (and answers);
- crashafter: exits right after answering a tools/call;
- batch: answers each tools/call inside a JSON-RPC batch (an array of one).

Tools (normal): `send` appends `message` to sent.txt in the working directory (after `seconds`,
with progress every 0.1 s when asked) and returns structured content; `echo` returns its
arguments as structured content with `_meta`, as an error result when `error` is true; `probe`
tries to read `path`, connect to `host`:`port` and to the Unix socket `socket`, and says what
happened; `ask` makes a request of the host (`method`) and returns its answer; `grow` adds a
tool and says the list changed; `crash` exits at once.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from typing import Any

MODE = sys.argv[1] if len(sys.argv) > 1 else "normal"
write_lock = threading.Lock()
waiting: dict[int, dict[str, Any]] = {}
waiting_events: dict[int, threading.Event] = {}
cancelled: set[Any] = set()
next_id = [1]
grown = [False]


def send_message(message: dict[str, Any]) -> None:
    with write_lock:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def tool(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"The test server's {name}.",
        "inputSchema": {"type": "object"},
        # Claims ward must not pass on: every tool says it is harmless.
        "annotations": {"readOnlyHint": True, "destructiveHint": False, "idempotentHint": True, "openWorldHint": False},
    }


def tools() -> list[dict[str, Any]]:
    listed = [tool(n) for n in ("send", "echo", "probe", "ask", "grow", "crash")]
    listed[1]["outputSchema"] = {"type": "object"}
    if grown[0]:
        listed.append(tool("grown"))
    return listed


def text(s: str, structured: Any = None, error: bool = False, meta: Any = None) -> dict[str, Any]:
    result: dict[str, Any] = {"content": [{"type": "text", "text": s}], "isError": error}
    if structured is not None:
        result["structuredContent"] = structured
    if meta is not None:
        result["_meta"] = meta
    return result


def ask_host(method: str, params: dict[str, Any]) -> dict[str, Any]:
    with write_lock:
        rid = next_id[0]
        next_id[0] += 1
        event = threading.Event()
        waiting_events[rid] = event
    send_message({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
    event.wait(20)
    return waiting.pop(rid, {"error": {"code": -1, "message": "no answer"}})


def probe(args: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, str] = {}
    if "path" in args:
        try:
            with open(args["path"], "rb") as f:
                found["read"] = f"read {len(f.read())} bytes"
        except OSError as e:
            found["read"] = "refused: " + (e.strerror or str(e))
    if "host" in args:
        try:
            socket.create_connection((args["host"], int(args["port"])), timeout=3).close()
            found["connect"] = "connected"
        except OSError as e:
            found["connect"] = "refused: " + (e.strerror or str(e))
    if "socket" in args:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(args["socket"])
            s.close()
            found["socket"] = "connected"
        except OSError as e:
            found["socket"] = "refused: " + (e.strerror or str(e))
    return text(json.dumps(found), structured=found)


def call(rid: Any, params: dict[str, Any]) -> None:
    name = params.get("name")
    args = params.get("arguments") or {}
    meta = params.get("_meta") or {}
    if MODE == "garbage":
        with write_lock:
            sys.stdout.write("this is not JSON-RPC\n")
            sys.stdout.flush()
        return
    if MODE == "silent":
        return
    if MODE == "malformed":
        send_message({"jsonrpc": "2.0", "id": rid, "error": None})
        return
    if MODE == "flood":
        with write_lock:
            chunk = "x" * (1 << 20)
            while True:
                sys.stdout.write(chunk)
    result: dict[str, Any]
    if name == "send":
        token = meta.get("progressToken")
        end = time.monotonic() + float(args.get("seconds", 0))
        step = 0
        while time.monotonic() < end:
            if rid in cancelled and MODE != "ignorecancel":
                send_message({"jsonrpc": "2.0", "id": rid, "error": {"code": 0, "message": "Request cancelled"}})
                return
            if token is not None:
                send_message({"jsonrpc": "2.0", "method": "notifications/progress",
                              "params": {"progressToken": token, "progress": step, "message": "sending"}})
            step += 1
            time.sleep(0.1)
        with open("sent.txt", "a") as f:
            f.write(str(args.get("message", "")) + "\n")
        result = text("sent " + str(args.get("message", "")), structured={"sent": args.get("message")})
    elif name == "echo":
        result = text(json.dumps(args), structured={"arguments": args}, error=bool(args.get("error")), meta={"test/echo": True})
    elif name == "probe":
        result = probe(args)
    elif name == "ask":
        answer = ask_host(args["method"], args.get("params") or {})
        result = text(json.dumps(answer), structured=answer)
    elif name == "grow":
        grown[0] = True
        send_message({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        result = text("grown")
    elif name == "crash":
        os._exit(9)
    else:
        send_message({"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": f"Unknown tool: {name}"}})
        return
    answer = {"jsonrpc": "2.0", "id": rid, "result": result}
    if MODE == "batch":
        with write_lock:
            sys.stdout.write(json.dumps([answer]) + "\n")
            sys.stdout.flush()
    else:
        send_message(answer)
    if MODE == "crashafter":
        os._exit(0)


def main() -> None:
    if MODE == "exit":
        sys.stderr.write("stdio_server: cannot start: no configuration\n")
        sys.exit(3)
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        method = message.get("method")
        rid = message.get("id")
        if method is None:
            # An answer to one of ours.
            event = waiting_events.pop(rid, None)
            if event is not None:
                waiting[rid] = message
                event.set()
            continue
        params = message.get("params") or {}
        if method == "initialize":
            send_message({"jsonrpc": "2.0", "id": rid, "result": {
                "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {"listChanged": True}, "logging": {}},
                "serverInfo": {"name": "stdio-test", "version": "1.0"},
                "instructions": "The test server.",
                "clientCapabilities": params.get("capabilities", {}),
            }})
        elif method == "tools/list":
            send_message({"jsonrpc": "2.0", "id": rid, "result": {"tools": tools()}})
            if MODE == "stopread":
                time.sleep(3600)
        elif method == "tools/call":
            threading.Thread(target=call, args=(rid, params), daemon=True).start()
        elif method == "notifications/cancelled":
            cancelled.add(params.get("requestId"))
        elif method in ("ping", "logging/setLevel"):
            send_message({"jsonrpc": "2.0", "id": rid, "result": {}})
        elif rid is not None:
            send_message({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "Method not found"}})


if __name__ == "__main__":
    main()
