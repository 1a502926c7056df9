"""Snapshots on disk: a sandbox's writable layer copied into a read-only layer, kept while
its owner lives or something stacks on it (see `SnapshotRecord`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from rockroll.errors import InUse, SandboxError, SandboxNotFound
from rockroll.sandbox.backend import Backend
from rockroll.sandbox.records import (
    SandboxRecord,
    SnapshotRecord,
    list_records,
    list_snapshots,
    load_snapshot,
    new_id,
    owner_lives,
    snapshots_dir,
)


def take_snapshot(rec: SandboxRecord, backend: Backend, owner: str) -> SnapshotRecord:
    """Freeze the sandbox, copy its writable layer, thaw: the copy becomes a read-only layer."""
    snap = SnapshotRecord(
        id=new_id("snap-"),
        source=rec.id,
        image=rec.image,
        layers=[],
        created=time.time(),
        owner=owner,
    )
    tmp = snapshots_dir() / f".{snap.id}.tmp"
    tmp.mkdir()
    backend.freeze(rec)
    try:
        done = subprocess.run(
            ["cp", "-a", "--", backend.upper(rec), str(tmp / "layer")],
            capture_output=True,
            text=True,
        )
    finally:
        backend.thaw(rec)
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SandboxError(f"snapshot of {rec.id} failed: {done.stderr.strip()}")
    snap.layers = [str(snap.dir / "layer"), *rec.layers]
    snap.save(tmp)
    os.rename(tmp, snap.dir)
    return snap


def found_snapshot(snapshot_id: str) -> SnapshotRecord:
    snap = load_snapshot(snapshot_id)
    if snap is None:
        raise SandboxNotFound(f"no snapshot {snapshot_id!r}")
    return snap


def snapshot_size(snapshot_id: str) -> int:
    """Bytes a snapshot's layer takes on disk."""
    snap = found_snapshot(snapshot_id)
    total = 0
    for dirpath, dirs, files in os.walk(snap.dir / "layer"):
        for name in (*dirs, *files):
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def remove_snapshot(snapshot_id: str) -> None:
    """Remove a snapshot no sandbox and no other snapshot stacks on (InUse otherwise)."""
    snap = found_snapshot(snapshot_id)
    layer = str(snap.dir / "layer")
    users = [r.id for r in list_records() if layer in r.layers]
    users += [s.id for s in list_snapshots() if s.id != snap.id and layer in s.layers]
    if users:
        raise InUse(
            f"snapshot {snapshot_id} is in use by {', '.join(users)} (sandboxes, or "
            "snapshots of its forks); remove those first"
        )
    shutil.rmtree(snap.dir)


def remove_owned_snapshots(owner: str) -> None:
    """Snapshots kept for an owner that is gone now (when nothing else stacks on them)."""
    for snap in list_snapshots():
        if snap.owner == owner:
            with contextlib.suppress(InUse, SandboxNotFound):
                remove_snapshot(snap.id)


def collect_snapshots() -> list[str]:
    """Remove snapshots whose owner is gone and on which nothing stacks (a removed one may
    free its parent, hence the rounds); the ids removed."""
    removed: list[str] = []
    while True:
        before = len(removed)
        for snap in list_snapshots():
            if owner_lives(snap.owner):
                continue
            try:
                remove_snapshot(snap.id)
            except (InUse, SandboxNotFound):
                continue
            removed.append(snap.id)
        if len(removed) == before:
            return removed


def stale_snapshot_tmps() -> list[Path]:
    """Half-made snapshots an hour old: their maker died while copying."""
    cutoff = time.time() - 3600
    return [p for p in snapshots_dir().glob(".*.tmp") if p.stat().st_mtime < cutoff]
