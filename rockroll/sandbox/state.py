"""On-disk records of sandboxes and snapshots, so any process can find, use or collect them.

Layout under `$ROCKROLL_HOME`:
  sandboxes/<id>/  meta.json, owner.lock (flock held by the owning process), upper/, work/,
                   merged/ (the overlay mount), ctl.sock (the init's socket), backend.log
  snapshots/<id>/  meta.json, layer/ (a frozen copy of a sandbox's upper directory)
  audit/<id>.jsonl one line per command, kept after the sandbox is gone
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from pathlib import Path

from pydantic import BaseModel

from rockroll.sandbox.mounts import overlay_options
from rockroll.sandbox.paths import home_subdir
from rockroll.sandbox.spec import SandboxSpec


class SandboxRecord(BaseModel):
    """Everything needed to reach or clean up a sandbox after its creator is gone."""

    id: str
    spec: SandboxSpec
    image: str
    layers: list[str]
    created: float
    owner_pid: int
    backend_pid: int | None = None
    cgroup: str | None = None
    status: str = "starting"

    @property
    def dir(self) -> Path:
        return sandboxes_dir() / self.id

    @property
    def sock(self) -> str:
        return str(self.dir / "ctl.sock")

    @property
    def merged(self) -> Path:
        return self.dir / "merged"

    def overlay_options(self) -> str:
        return overlay_options(
            [Path(p) for p in self.layers], self.dir / "upper", self.dir / "work"
        )

    def save(self) -> None:
        tmp = self.dir / "meta.json.tmp"
        tmp.write_text(self.model_dump_json(indent=1))
        os.replace(tmp, self.dir / "meta.json")

    def touch(self) -> None:
        """Record activity, for the idle TTL."""
        with contextlib.suppress(OSError):
            os.utime(self.dir / "meta.json")

    def idle_seconds(self) -> float:
        try:
            return time.time() - (self.dir / "meta.json").stat().st_mtime
        except OSError:
            return 0.0

    def expired(self) -> bool:
        return self.spec.ttl is not None and self.idle_seconds() > self.spec.ttl


class SnapshotRecord(BaseModel):
    """A frozen filesystem state; new sandboxes stack their overlay on `layers`."""

    id: str
    source: str
    image: str
    layers: list[str]
    created: float

    @property
    def dir(self) -> Path:
        return snapshots_dir() / self.id


def sandboxes_dir() -> Path:
    return _subdir("sandboxes")


def snapshots_dir() -> Path:
    return _subdir("snapshots")


def audit_dir() -> Path:
    return _subdir("audit")


def _subdir(name: str) -> Path:
    return home_subdir(name)


def new_id(prefix: str = "") -> str:
    return prefix + secrets.token_hex(6)


def load_record(sandbox_id: str) -> SandboxRecord | None:
    """The sandbox's record; None if there is none, or one this version cannot read (written by
    a newer rockroll: its spec has fields this one does not know)."""
    try:
        text = (sandboxes_dir() / sandbox_id / "meta.json").read_text()
        return SandboxRecord.model_validate_json(text)
    except (OSError, ValueError):
        return None


def load_snapshot(snapshot_id: str) -> SnapshotRecord | None:
    try:
        text = (snapshots_dir() / snapshot_id / "meta.json").read_text()
    except (OSError, ValueError):
        return None
    return SnapshotRecord.model_validate_json(text)


def list_records() -> list[SandboxRecord]:
    found = []
    for path in sorted(sandboxes_dir().iterdir()):
        rec = load_record(path.name)
        if rec is not None:
            found.append(rec)
    return found


def take_owner_lock(sandbox_dir: Path) -> int:
    """Hold a lock for as long as this process owns the sandbox; gc treats a free lock as dead."""
    fd = os.open(sandbox_dir / "owner.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def owner_alive(sandbox_dir: Path) -> bool:
    """True while some process holds the sandbox's owner lock."""
    try:
        fd = os.open(sandbox_dir / "owner.lock", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def append_audit(sandbox_id: str, entry: dict) -> None:
    """One JSON line per command; O_APPEND keeps concurrent writers' lines whole."""
    line = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
    fd = os.open(audit_dir() / f"{sandbox_id}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_audit(sandbox_id: str) -> list[dict]:
    try:
        text = (audit_dir() / f"{sandbox_id}.jsonl").read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]
