"""Start a server in a child process and wait until it is healthy (tests, benchmarks, load tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    """A running `python -m toolrl_serving` child."""

    proc: subprocess.Popen
    base_url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_server(model: str | os.PathLike[str], *args: str, port: int | None = None,
                 env: dict[str, str] | None = None, timeout: float = 180,
                 log: str | os.PathLike[str] | None = None) -> ServerProcess:
    """Run `python -m toolrl_serving MODEL --host 127.0.0.1 --port PORT ARGS...`; return once /health is ok.

    Raises RuntimeError with the server's log if it exits or stays unhealthy for `timeout` seconds.
    """
    port = port or free_port()
    log_path = Path(log) if log else Path(tempfile.mkstemp(prefix="toolrl-serving-", suffix=".log")[1])
    cmd = [sys.executable, "-m", "toolrl_serving", str(model), "--host", "127.0.0.1", "--port", str(port), *args]
    with open(log_path, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}:\n{server.log_text()}")
        if _healthy(server.base_url):
            return server
        time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"the server did not become healthy within {timeout} s:\n{server.log_text()}")
