"""A server killed with SIGKILL under load comes back with every sandbox accounted for."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from rockroll import Sandbox, SandboxError
from rockroll.sandbox.records import list_records
from rockroll.service.pool import DB_LABEL
from tests.serverproc import ServerProc

CLIENTS = 20


@pytest.mark.slow
def test_sigkill_under_load_loses_nothing_and_leaks_nothing(
    base_image: str, tmp_path: Path
) -> None:
    server = ServerProc(tmp_path / "crash.db").start()
    token = server.token("load")
    created: list[str] = []
    ran = [0] * CLIENTS
    stop = threading.Event()

    def client(i: int) -> None:
        while not stop.is_set():
            try:
                sb = Sandbox.create(memory="128m", server=server.url, token=token)
            except SandboxError:
                return  # the server is gone
            created.append(sb.id)
            for n in range(5):
                try:
                    res = sb.exec(f"echo {i}-{n}")
                except SandboxError:
                    return
                assert res.stdout == f"{i}-{n}\n"
                ran[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while sum(ran) < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()
    stop.set()
    for t in threads:
        t.join(60)
    assert sum(ran) >= 100 and len(created) >= CLIENTS

    server.start()
    try:
        api = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        usable = lost = 0
        for sandbox_id in created:
            info = api.get(f"/v1/sandboxes/{sandbox_id}").json()
            if info["status"] == "running":
                res = api.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": "echo back"})
                assert res.json()["stdout"] == "back\n", res.text
                usable += 1
            else:
                assert info["status"] == "lost" and info["reason"], info
                lost += 1
        assert usable + lost == len(created) and usable >= len(created) - CLIENTS
        everything = [
            s
            for status in ("live", "lost", "deleted")
            for s in api.get("/v1/sandboxes", params={"status": status}).json()["sandboxes"]
        ]
        assert all(s["status"] != "creating" for s in everything)
        assert all(s["reason"] for s in everything if s["status"] == "lost")
        live = {s["id"] for s in everything if s["status"] == "running"}
        assert set(created) - {s["id"] for s in everything} == set()
        assert live <= {r.id for r in list_records() if DB_LABEL in r.spec.labels}
        gc = subprocess.run(
            [sys.executable, "-m", "rockroll", "sandbox", "gc"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert gc.returncode == 0 and "gc: 0 item(s) removed" in gc.stdout, gc.stdout
        for sandbox_id in live:
            assert api.delete(f"/v1/sandboxes/{sandbox_id}").status_code == 204
    finally:
        assert server.stop() == 0, server.logs()
    left = [r.id for r in list_records() if r.id in live]
    assert left == [], "graceful shutdown must leave nothing behind"
