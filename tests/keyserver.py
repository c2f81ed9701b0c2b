"""A real HTTPS key server on loopback whose behaviour tests can change.

It serves an OpenID discovery document and a JWKS document over TLS with a
certificate from a throwaway test CA, and can be told to require a bearer
token, answer 500, hang, or go away.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme

HANG_LIMIT_SECONDS = 30.0


@dataclass
class KeyServer:
    """Serve `jwks` at /jwks and discovery at /.well-known/openid-configuration."""

    ca: trustme.CA
    ca_file: Path
    jwks: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    discovery: dict[str, Any] | None = None
    mode: str = "ok"
    raw_jwks: bytes | None = None
    required_token: str | None = None
    hits: Counter[str] = field(default_factory=Counter)
    hit_times: list[float] = field(default_factory=list)
    tokens_seen: list[str | None] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """Return the base URL, https://127.0.0.1:PORT."""
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> KeyServer:
        """Listen on a free loopback port in a background thread."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(context)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Go away: close the port so connections are refused."""
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def document(self, path: str) -> dict[str, Any] | None:
        """Return what is served at `path`, if anything."""
        if path in ("/jwks", "/openid/v1/jwks"):
            return self.jwks
        if path == "/.well-known/openid-configuration":
            return self.discovery
        return None


def _handler(state: KeyServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits[self.path] += 1
            state.hit_times.append(time.monotonic())
            sent = self.headers.get("Authorization")
            state.tokens_seen.append(sent.removeprefix("Bearer ") if sent else None)
            if state.mode == "hang":
                state.release.wait(HANG_LIMIT_SECONDS)
                return
            if state.mode == "error":
                self._reply(500, {"error": "boom"})
            elif state.required_token and sent != f"Bearer {state.required_token}":
                self._reply(401, {"error": "unauthorized"})
            elif self.path == "/jwks" and state.raw_jwks is not None:
                self._send(200, state.raw_jwks)
            elif (document := state.document(self.path)) is None:
                self._reply(404, {"error": "not found"})
            else:
                self._reply(200, document)

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode())

        def _send(self, status: int, raw: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            """Keep test output quiet."""

    return Handler
