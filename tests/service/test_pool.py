"""The server's pool in-process: a sandbox whose processes die is reported lost, with why."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from rockroll.sandbox.cgroups import CgroupSet
from rockroll.sandbox.records import load_record
from rockroll.service.bodies import CreateSandbox
from rockroll.service.pool import Pool
from rockroll.service.store import Store


def test_a_sandbox_killed_from_outside_is_reported_lost(base_image: str, tmp_path: Path) -> None:
    store = Store(tmp_path / "pool.db")
    owner, _ = store.create_token("pool")
    pool = Pool(store)
    info = pool.create(owner, CreateSandbox(image=base_image, memory="128m"))
    keep = pool.create(owner, CreateSandbox(image=base_image, memory="128m"))
    try:
        assert pool.check_alive() == []
        rec = load_record(info.id)
        assert rec is not None and rec.cgroup
        for pid in CgroupSet.attach(rec.cgroup).pids():
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not (dead := pool.check_alive()) and time.monotonic() < deadline:
            time.sleep(0.1)  # SIGKILL is asynchronous
        assert dead == [info.id]
        row = pool.info(owner, info.id)
        assert row.status == "lost" and "processes died" in (row.reason or "")
        assert pool.get(owner, keep.id).exec("echo ok").stdout == "ok\n"
    finally:
        pool.shutdown()
    # shut down, the pool deleted the one still running; the lost one stays reported lost
    assert [i.id for i in pool.list(owner, status="deleted")] == [keep.id]
    assert [(i.id, i.status) for i in pool.list(owner, status="lost")] == [(info.id, "lost")]
