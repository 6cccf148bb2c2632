"""A toy HTTP API that honours idempotency keys, to try docs/examples/http-api.toml against
(README, "Reconcile commands"). One thread, its state in memory or in one JSON file.

    python3 docs/examples/messages_api.py [--port 8080] [--state messages.json]

POST /messages {"to": …, "text": …} with `Idempotency-Key: K`: the first request with K
creates a message (201); a later one with K and the same body gets that message back (200)
and creates nothing; with another body it is refused (422). Without a key every request
creates a message.
GET /messages?idempotency_key=K: the messages created with K, a JSON list (empty or one).

It prints `listening on http://127.0.0.1:PORT` once it accepts connections (--port 0: a free
port). The state file also counts the POST requests it received (`posts`).
"""
import argparse
import json
import os
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any


class State:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self.data: dict[str, Any] = {"posts": 0, "messages": []}
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                self.data = json.load(f)

    def save(self) -> None:
        # Written whole and renamed: a reader never sees half a file.
        if self.path:
            with open(self.path + ".new", "w", encoding="utf-8") as f:
                json.dump(self.data, f)
            os.replace(self.path + ".new", self.path)


class Handler(BaseHTTPRequestHandler):
    # The one State of the server (set by main before it serves).
    state: State

    def reply(self, status: int, value: Any) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        if urllib.parse.urlsplit(self.path).path != "/messages":
            return self.reply(404, {"error": "no such resource"})
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            to, text = str(body["to"]), str(body["text"])
        except (ValueError, KeyError, TypeError):
            return self.reply(400, {"error": "expected a JSON object with to and text"})
        key = self.headers.get("Idempotency-Key")
        state = self.state
        state.data["posts"] += 1
        earlier = [m for m in state.data["messages"] if key and m["idempotencyKey"] == key]
        if earlier:
            state.save()
            if (earlier[0]["to"], earlier[0]["text"]) != (to, text):
                return self.reply(422, {"error": "this idempotency key was used with another request"})
            return self.reply(200, earlier[0])
        message = {"id": len(state.data["messages"]) + 1, "to": to, "text": text, "idempotencyKey": key}
        state.data["messages"].append(message)
        state.save()
        self.reply(201, message)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/messages":
            return self.reply(404, {"error": "no such resource"})
        keys = urllib.parse.parse_qs(url.query).get("idempotency_key")
        self.reply(200, [m for m in self.state.data["messages"] if keys is None or m["idempotencyKey"] in keys])


def main() -> None:
    parser = argparse.ArgumentParser(description="A toy messages API that honours idempotency keys.")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--state", help="a JSON file that keeps the messages (default: in memory)")
    options = parser.parse_args()
    Handler.state = State(options.state)
    with HTTPServer(("127.0.0.1", options.port), Handler) as server:
        print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
