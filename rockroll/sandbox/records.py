"""On-disk records of sandboxes and snapshots, so any process can find, use or collect them.

Layout under `$ROCKROLL_HOME`:
  sandboxes/<id>/  meta.json, owner.lock (flock held by the owning process), ctl.sock (the
                   init's socket), backend.log; disk.img (its disk) or, without a disk limit,
                   fs/upper and fs/work; mnt/ (where the podman backend mounts its layers)
  snapshots/<id>/  meta.json, layer/ (a frozen copy of a sandbox's upper directory)
  audit/<id>.jsonl one line per command, kept after the sandbox is gone; <id>.events.jsonl the
                   monitor's events (every program started, every connection tried)
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

from rockroll.sandbox.mounts import check_layers
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
    id_base: int | None = None  # host id of the sandbox's root (None: no user namespace)
    monitor_pid: int | None = None  # its supervisor (None: not watched)

    @property
    def dir(self) -> Path:
        return sandboxes_dir() / self.id

    @property
    def sock(self) -> str:
        return str(self.dir / "ctl.sock")

    @property
    def mnt(self) -> Path:
        return self.dir / "mnt"

    @property
    def disk_image(self) -> Path:
        return self.dir / "disk.img"

    @property
    def fsdir(self) -> Path:
        """Upper and work directories of a sandbox without a disk limit."""
        return self.dir / "fs"

    def root_args(self, target: str, mnt: str | None = None, parked: bool = False) -> list[str]:
        """The launcher's `--root` arguments: layers, writable layer (`parked`: the one the
        launcher mounted ahead), mount points (the layers' at `mnt`, the root's at `target`)."""
        if parked:
            writable = ["parked", "-"]
        elif self.spec.disk:
            writable = ["disk", str(self.disk_image)]
        else:
            writable = ["dir", str(self.fsdir)]
        check_layers(self.layers)
        root = ["--root", str(len(self.layers)), *self.layers, *writable]
        return [*root, mnt or str(self.mnt), target]

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
    """A frozen filesystem state; new sandboxes stack their overlay on `layers`.

    `owner` says how long it is kept: "pid:PID:START" while that process lives (the process
    that took it), "sandbox:ID" while that (detached) sandbox exists; and always while a
    sandbox or another snapshot stacks on it. Garbage collection removes the rest.
    """

    id: str
    source: str
    image: str
    layers: list[str]
    created: float
    owner: str | None = None  # None: made by an older version, kept until removed

    @property
    def dir(self) -> Path:
        return snapshots_dir() / self.id

    def save(self, where: Path | None = None) -> None:
        """Write meta.json (atomically) into `where`, by default the snapshot's directory."""
        folder = where or self.dir
        tmp = folder / "meta.json.tmp"
        tmp.write_text(self.model_dump_json(indent=1))
        os.replace(tmp, folder / "meta.json")


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
        return SnapshotRecord.model_validate_json(text)
    except (OSError, ValueError):
        return None


def list_snapshots() -> list[SnapshotRecord]:
    found = []
    for path in sorted(snapshots_dir().iterdir()):
        if not path.name.startswith("."):
            snap = load_snapshot(path.name)
            if snap is not None:
                found.append(snap)
    return found


def list_records() -> list[SandboxRecord]:
    found = []
    for path in sorted(sandboxes_dir().iterdir()):
        rec = load_record(path.name)
        if rec is not None:
            found.append(rec)
    return found


def process_owner(pid: int | None = None) -> str:
    """An owner string for a process that cannot be confused with a later one of the same pid."""
    pid = os.getpid() if pid is None else pid
    return f"pid:{pid}:{process_start(pid)}"


def process_start(pid: int) -> int | None:
    """When `pid` started (clock ticks after boot), None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def owner_lives(owner: str | None) -> bool:
    """Whether a snapshot's owner (see SnapshotRecord) is still there; unknown ones are."""
    kind, _, rest = (owner or "").partition(":")
    if kind == "pid":
        pid, _, start = rest.partition(":")
        return pid.isdigit() and str(process_start(int(pid))) == start
    if kind == "sandbox":
        return (sandboxes_dir() / rest / "meta.json").exists()
    return True


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


def events_file(sandbox_id: str) -> Path:
    """Where the monitor writes a sandbox's events (kept after it is gone, like its audit)."""
    return audit_dir() / f"{sandbox_id}.events.jsonl"


def read_events(sandbox_id: str) -> list[dict]:
    try:
        text = events_file(sandbox_id).read_text(errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def read_audit(sandbox_id: str) -> list[dict]:
    try:
        text = (audit_dir() / f"{sandbox_id}.jsonl").read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]
