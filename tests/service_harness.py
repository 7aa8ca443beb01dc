"""Running ``aiops run`` as a service in tests: files, the subprocess, sockets, HTTP.

Used by ``tests/test_service_signals.py`` and ``tests/test_service_notify.py``: a
simulated fleet as the source, a real ``aiops run`` subprocess whose stderr goes to a
file, a real AF_UNIX datagram socket standing in for systemd's ``NOTIFY_SOCKET``, and a
TCP endpoint that accepts deliveries and never answers (a stuck receiver).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from servers import free_port

AIOPS = [sys.executable, "-m", "aiops.cli"]

RULES = """groups:
  - name: svc
    rules:
      - alert: Load
        source: sim
        selector: '{__name__=~".+"}'
        threshold: 0.6
"""


def workdir(root: Path, *, receiver: str = "", delivery: str = "") -> tuple[Path, int]:
    """Config, rules and alerting in ``root``; returns the config and the listen port."""
    port = free_port()
    (root / "rules.yaml").write_text(RULES)
    (root / "alerting.yaml").write_text(
        "route:\n  receiver: out\n  group_wait: 0s\nreceivers:\n  - name: out\n"
        + (receiver or "    jsonl_configs:\n      - path: alerts.jsonl\n")
    )
    config = root / "aiops.yaml"
    config.write_text(
        f"""sources:
  sim:
    type: simulator
    seed: 7
    hosts: 2
    services: [api]
    speed: 600
    warmup: 10m
state:
  dir: state
  checkpoint_interval: 1h
http:
  listen: 127.0.0.1:{port}
rule_files: [rules.yaml]
alerting_file: alerting.yaml
{delivery}"""
    )
    return config, port


class Daemon:
    """One ``aiops run`` subprocess; its stderr goes to ``log`` (read while it runs)."""

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log = config.parent / "daemon.log"
        self._out = self.log.open("wb")
        full_env = {**os.environ, "PYTHONHASHSEED": "0", **(env or {})}
        self.proc = subprocess.Popen(
            [*AIOPS, "--log-level", "info", "run", "--config", str(config), *args],
            stdout=subprocess.DEVNULL,
            stderr=self._out,
            env=full_env,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 30.0, after: int = 0) -> int:
        """Wait until ``needle`` is in the log past offset ``after``; returns its offset."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            at = self.text().find(needle, after)
            if at >= 0:
                return at
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}):\n{self.text()}")
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not logged within {timeout} s:\n{self.text()}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


def http(method: str, url: str) -> tuple[int, str]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(port: int, name: str) -> float:
    _, text = http("GET", f"http://127.0.0.1:{port}/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def wait_ready(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if http("GET", f"http://127.0.0.1:{port}/readyz")[0] == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "the daemon never got ready"
        time.sleep(0.1)


class NotifySocket:
    """A real datagram socket standing in for systemd's (abstract ``@name`` or a path)."""

    def __init__(self, path: Path | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:
            name = f"aiops-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.sock.bind(str(path))
            self.address = str(path)
        self.messages: list[dict[str, str]] = []

    def receive(self, timeout: float) -> dict[str, str] | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().split("\n"))
        self.messages.append(fields)
        return fields

    def wait_for(self, key: str, timeout: float = 30.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.receive(max(0.01, deadline - time.monotonic()))
            if msg is not None and key in msg:
                return msg
        raise AssertionError(f"no {key} within {timeout} s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


class HangingEndpoint:
    """Accepts HTTP connections, reads the requests and never answers (a stuck receiver)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.requests = 0
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self._conns.append(conn)
            conn.settimeout(5)
            try:
                if conn.recv(65536):
                    self.requests += 1
            except OSError:
                pass

    def close(self) -> None:
        self.server.close()
        for conn in self._conns:
            conn.close()


def start_daemons() -> Iterator[Callable[..., Daemon]]:
    """The body of a ``daemons`` fixture: starts daemons, kills what is left at the end."""
    started: list[Daemon] = []

    def start(config: Path, *args: str, env: dict[str, str] | None = None) -> Daemon:
        d = Daemon(config, *args, env=env)
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill()
