"""Garbage collection: what crashed or killed processes left behind on this host."""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from rockroll.errors import SandboxError, SetupError
from rockroll.sandbox.backends import backend_for
from rockroll.sandbox.disk import empty_trash
from rockroll.sandbox.mounts import mounts_under, unmount
from rockroll.sandbox.networks import stale_networks
from rockroll.sandbox.records import SandboxRecord, load_record, owner_alive, sandboxes_dir
from rockroll.sandbox.snapshots import collect_snapshots, stale_snapshot_tmps


@dataclass
class GcReport:
    """What garbage collection removed, for `rockroll sandbox gc` to print."""

    sandboxes: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.sandboxes) + len(self.mounts) + len(self.resources) + len(self.snapshots)


def collect_garbage(mine: set[str]) -> GcReport:
    """Remove sandboxes whose owner died, detached ones that expired or died, and strays;
    `mine` are the ids this process owns (alive whatever their record says)."""
    report = GcReport()
    live: set[str] = set()
    for path in sorted(sandboxes_dir().iterdir()):
        if path.name.endswith(".new") and _abandoned(path):
            shutil.rmtree(path, ignore_errors=True)  # a creation that died before its rename
            continue
        if path.name in mine or path.name.startswith("."):
            live.add(path.name)
            continue
        rec = load_record(path.name)
        if rec is not None and alive(rec):
            live.add(rec.id)
            continue
        if rec is None and (owner_alive(path) or (path / "meta.json").exists()):
            live.add(path.name)  # being created, or a record this version cannot read
            continue
        _collect(path, rec, report)
    for backend_name in ("bwrap", "podman"):
        with contextlib.suppress(SetupError, ImportError, OSError):
            backend = backend_for(backend_name)
            for name in backend.leftovers(live):
                backend.remove_leftover(name)
                report.resources.append(f"{backend_name}:{name}")
    for leftover in stale_snapshot_tmps():
        shutil.rmtree(leftover, ignore_errors=True)
    report.snapshots += collect_snapshots()
    report.resources += [f"network:{name}" for name in stale_networks()]
    empty_trash()
    return report


def alive(rec: SandboxRecord) -> bool:
    """Whether a sandbox of another process (or a detached one) is still in use."""
    if rec.spec.detached:
        if rec.status == "starting":
            return owner_alive(rec.dir)
        return not rec.expired() and backend_for(rec.spec.backend).running(rec)
    return owner_alive(rec.dir)


def unmount_all(rec: SandboxRecord) -> None:
    for mount in mounts_under(rec.dir):
        unmount(mount)


def _abandoned(path: Path) -> bool:
    """A sandbox folder still being made (`.ID.new`) whose maker is gone: unlocked, and older
    than any creation takes between making the folder and locking it."""
    with contextlib.suppress(OSError):
        return time.time() - path.stat().st_mtime > 60 and not owner_alive(path)
    return False


def _collect(path: Path, rec: SandboxRecord | None, report: GcReport) -> None:
    if rec is not None:
        with contextlib.suppress(OSError, SandboxError):
            backend_for(rec.spec.backend).destroy(rec)
    for mount in mounts_under(path):
        with contextlib.suppress(SandboxError):
            unmount(mount)
            report.mounts.append(str(mount))
    if not mounts_under(path):
        shutil.rmtree(path, ignore_errors=True)
    report.sandboxes.append(path.name)
