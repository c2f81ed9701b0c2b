"""A small upstream service that answers every request with what it received.

The JSON body lists the method, the path and every request header (names in
lowercase, each with the list of values in arrival order), so the demo and the
tests can see exactly what Envoy forwarded. One JSON line per request goes to
stdout with the method, the path without its query and the x-request-id.

Run it with `python -m authz.demo.echo --port 8080`; it binds 127.0.0.1 only
and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

__all__ = ["EchoHandler", "EchoServer", "main", "received", "serve"]


class EchoHandler(BaseHTTPRequestHandler):
    """Reply to any method with the request it received, as JSON."""

    protocol_version = "HTTP/1.1"
    server_version = "echo"

    def do_GET(self) -> None:
        """Echo a GET request."""
        self._echo()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _echo(self) -> None:
        self._discard_body()
        document = received(self.command, self.path, self.headers.items())
        body = json.dumps(document).encode()

        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        _log_request(document)

    def _discard_body(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length > 0:
            self.rfile.read(length)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: `_log_request` writes the one line per request."""


class EchoServer(ThreadingHTTPServer):
    """A threaded HTTP server with a listen backlog fit for a burst."""

    # The default backlog of 5 makes Envoy's connects fail under a burst of
    # new connections, which shows up as 503s that have nothing to do with us.
    request_queue_size = 1024


def received(
    method: str, path: str, headers: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    """Return the JSON document describing one received request."""
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        grouped.setdefault(name.lower(), []).append(value)
    return {"method": method, "path": path, "headers": grouped}


def _log_request(document: dict[str, Any]) -> None:
    request_id = document["headers"].get("x-request-id", [None])[0]
    line = {
        "event": "request",
        "method": document["method"],
        "path": document["path"].split("?", 1)[0],
        "request_id": request_id,
    }
    print(json.dumps(line), flush=True)


def serve(port: int) -> None:
    """Serve on 127.0.0.1:`port` until SIGTERM or SIGINT."""
    server = EchoServer(("127.0.0.1", port), EchoHandler)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker = threading.Thread(target=server.serve_forever, daemon=True)
    worker.start()
    print(json.dumps({"event": "listening", "port": server.server_port}), flush=True)

    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(prog="python -m authz.demo.echo")
    parser.add_argument("--port", type=int, default=8080, help="default 8080")
    args = parser.parse_args(argv)
    serve(args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
