"""A real `rockroll serve` in a subprocess, on a free loopback port, for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from rockroll.service.store import Store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProc:
    """One server process on `db`; `start()` waits until /v1/health answers."""

    db: Path
    port: int = field(default_factory=free_port)
    log: Path | None = None
    proc: subprocess.Popen | None = None
    e2b: bool = False  # `rockroll serve --e2b`: E2B's API too, for the e2b SDK

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, name: str, **quota: object) -> str:
        return Store(self.db).create_token(name, **quota)[1]  # type: ignore[arg-type]

    def start(self, *extra: str, timeout: float = 60) -> ServerProc:
        """Start the server and wait for /v1/health. A port taken meanwhile by another process
        of the host (`free_port()` only found it free) is replaced by a fresh one."""
        for _ in range(5):
            if self._start_once(extra, timeout):
                return self
            self.port = free_port()
        raise RuntimeError(f"no free port found for the server: {self.logs()}")

    def _start_once(self, extra: tuple[str, ...], timeout: float) -> bool:
        """True once the server answers; False if its port was taken."""
        path = self.log or self.db.with_suffix(".log")
        offset = path.stat().st_size if path.exists() else 0
        log = open(path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rockroll",
                "serve",
                "--port",
                str(self.port),
                "--db",
                str(self.db),
                *(["--e2b"] if self.e2b else []),
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    if b"address already in use" in fh.read():
                        return False
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.logs()}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=5).status_code == 200:
                    return True
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not answer within {timeout} s: {self.logs()}")

    def logs(self) -> str:
        path = self.log or self.db.with_suffix(".log")
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait: the graceful shutdown."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
