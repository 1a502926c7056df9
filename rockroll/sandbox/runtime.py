"""The local runtime: creates, runs, snapshots and collects sandboxes on this machine.

It owns what every backend shares: records on disk, the overlay root, the init's socket, the
audit log, idle TTLs and garbage collection of what crashed processes left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rockroll.sandbox import protocol
from rockroll.sandbox.backend import Backend
from rockroll.sandbox.disk import check_disk, empty_trash, throw_away
from rockroll.sandbox.errors import (
    InUse,
    InvalidArgument,
    SandboxClosed,
    SandboxError,
    SandboxNotFound,
    SetupError,
)
from rockroll.sandbox.files import RootFS
from rockroll.sandbox.images import get_image
from rockroll.sandbox.mounts import mounts_under, unmount
from rockroll.sandbox.spec import SandboxSpec
from rockroll.sandbox.state import (
    SandboxRecord,
    SnapshotRecord,
    append_audit,
    list_records,
    list_snapshots,
    load_record,
    load_snapshot,
    new_id,
    owner_alive,
    owner_lives,
    process_owner,
    sandboxes_dir,
    snapshots_dir,
    take_owner_lock,
)
from rockroll.sandbox.types import ExecResult

_ID = re.compile(r"[0-9a-f]{12}")
WARM = int(os.environ.get("ROCKROLL_WARM", "2"))
REFILL_DELAY = 0.005  # let a just-adopted sandbox's first commands run before starting another


def backend_for(name: str) -> Backend:
    if name == "bwrap":
        from rockroll.sandbox.bwrap import BwrapBackend

        return BwrapBackend()
    if name == "podman":
        from rockroll.sandbox.podman import PodmanBackend

        return PodmanBackend()
    raise InvalidArgument(f"backend {name!r} is unknown; use 'bwrap' or 'podman'")


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


class LocalRuntime:
    """Sandboxes on this host. One per process (see `local_runtime()`); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owned: dict[str, tuple[SandboxRecord, int]] = {}
        self._checked: set[str] = set()
        self._given: set[str] = set()  # sandboxes that own a snapshot (their fork's)
        self._collected = False
        self._reaper: threading.Thread | None = None
        self._warm = _WarmPool(self, WARM)

    # -- lifecycle ---------------------------------------------------------------------------
    def create(self, spec: SandboxSpec) -> SandboxRecord:
        backend = backend_for(spec.backend)
        if spec.backend not in self._checked:
            backend.check()
            self._checked.add(spec.backend)
        check_disk(spec.disk, spec.inodes)
        if not self._collected:
            self._collected = True
            self.gc()
        warm = self._warm.take(spec)
        rec, lock_fd = self._adopt(warm, spec) if warm else self._start(spec)
        if spec.detached:
            os.close(lock_fd)
        else:
            with self._lock:
                self._owned[rec.id] = (rec, lock_fd)
            if spec.ttl is not None:
                self._start_reaper()
        return rec

    def _start(self, spec: SandboxSpec, status: str = "running") -> tuple[SandboxRecord, int]:
        """Make a sandbox from scratch; the caller owns the returned lock."""
        backend = backend_for(spec.backend)
        image, layers = self._resolve_layers(spec.image)
        rec = SandboxRecord(
            id=new_id(),
            spec=spec,
            image=image,
            layers=layers,
            created=time.time(),
            owner_pid=os.getpid(),
        )
        rec.dir.mkdir(parents=True)
        lock_fd = take_owner_lock(rec.dir)
        try:
            if not spec.disk:  # a disk is the backend's to make (bwrap may have one ready)
                for sub in ("upper", "work"):
                    (rec.fsdir / sub).mkdir(parents=True)
            rec.backend_pid = backend.launch(rec)
            rec.status = status
            rec.save()
            backend.wait_ready(rec)
            self.rootfs(rec).makedirs(spec.workdir)
        except BaseException as exc:
            try:
                self._teardown(rec, backend)
            except SandboxError as cleanup:
                exc.add_note(f"cleaning up after that also failed: {cleanup}")
            finally:
                os.close(lock_fd)
            raise
        return rec, lock_fd

    def _adopt(
        self, warm: tuple[SandboxRecord, int], spec: SandboxSpec
    ) -> tuple[SandboxRecord, int]:
        """Give a started, never used sandbox the caller's settings."""
        rec, lock_fd = warm
        rec.spec = spec
        rec.created = time.time()
        rec.status = "running"
        try:
            backend_for(spec.backend).set_limits(rec)
            rec.save()
            self.rootfs(rec).makedirs(spec.workdir)
        except BaseException:
            with contextlib.suppress(SandboxError):
                self._teardown(rec, backend_for(spec.backend))
            os.close(lock_fd)
            raise
        return rec, lock_fd

    def get(self, sandbox_id: str) -> SandboxRecord:
        with self._lock:
            owned = self._owned.get(sandbox_id)
        if owned is not None:
            return owned[0]
        valid = isinstance(sandbox_id, str) and _ID.fullmatch(sandbox_id)
        rec = load_record(sandbox_id) if valid else None
        if rec is None:
            raise SandboxNotFound(
                f"no sandbox {sandbox_id!r}; `rockroll sandbox ls` lists the live ones"
            )
        return rec

    def close(self, sandbox_id: str) -> None:
        """Stop the sandbox and remove everything it had; closing twice is fine."""
        with self._lock:
            owned = self._owned.pop(sandbox_id, None)
        rec = owned[0] if owned else load_record(sandbox_id)
        if rec is not None:
            self._teardown(rec, backend_for(rec.spec.backend))
        if owned:
            os.close(owned[1])
        with self._lock:
            given = sandbox_id in self._given
            self._given.discard(sandbox_id)
        if given or (rec is not None and rec.spec.detached):
            self._remove_owned_snapshots(f"sandbox:{sandbox_id}")

    def _remove_owned_snapshots(self, owner: str) -> None:
        """Snapshots kept for a sandbox that is gone now (nothing else stacks on them)."""
        for snap in list_snapshots():
            if snap.owner == owner:
                with contextlib.suppress(InUse, SandboxNotFound):
                    self.remove_snapshot(snap.id)

    def give_snapshot(self, snapshot_id: str, owner: str) -> None:
        """Make `owner` (see SnapshotRecord) the snapshot's owner."""
        snap = load_snapshot(snapshot_id)
        if snap is None:
            raise SandboxNotFound(f"no snapshot {snapshot_id!r}")
        snap.owner = owner
        if owner.startswith("sandbox:"):
            with self._lock:
                self._given.add(owner.removeprefix("sandbox:"))
        snap.save()

    def _teardown(self, rec: SandboxRecord, backend: Backend) -> None:
        errors = []
        for step in (lambda: backend.destroy(rec), lambda: _unmount_all(rec)):
            try:
                step()
            except (OSError, SandboxError) as exc:
                errors.append(str(exc))
        if not mounts_under(rec.dir):
            throw_away(rec.disk_image)
            shutil.rmtree(rec.dir, ignore_errors=True)
        if errors:
            raise SandboxError(f"sandbox {rec.id} was not fully cleaned: {'; '.join(errors)}")

    def rootfs(self, rec: SandboxRecord) -> RootFS:
        """The sandbox's files, opened from the host and confined to the sandbox's root."""
        return RootFS(backend_for(rec.spec.backend).root(rec), rec.id_base)

    def upper(self, rec: SandboxRecord) -> str:
        """The sandbox's writable layer as stored on disk (for image builds and snapshots)."""
        return backend_for(rec.spec.backend).upper(rec)

    def list(self) -> list[SandboxRecord]:
        """Sandboxes in use (started ones waiting in a warm pool are not listed)."""
        return [rec for rec in list_records() if rec.status != "warm"]

    # -- commands ------------------------------------------------------------------------------
    def exec(
        self,
        rec: SandboxRecord,
        argv: list[str],
        *,
        command: str,
        cwd: str,
        env: dict[str, str],
        stdin: bytes | None,
        timeout: float | None,
        on_output: protocol.OutputCallback | None = None,
        user: protocol.User | None = None,
    ) -> ExecResult:
        rec.touch()
        started = time.time()
        try:
            result = protocol.run(
                rec.sock,
                argv,
                cwd=cwd,
                env=env,
                stdin=stdin,
                timeout=timeout,
                max_output=rec.spec.max_output,
                on_output=on_output,
                user=user,
            )
        except SandboxClosed:
            raise SandboxClosed(self._why_closed(rec)) from None
        self.audit(rec, command, result, started)
        return result

    def kill_all(self, rec: SandboxRecord) -> int:
        """SIGKILL every process of the sandbox but its init; how many are left."""
        try:
            left = protocol.kill_all(rec.sock)
        except SandboxClosed:
            raise SandboxClosed(self._why_closed(rec)) from None
        entry = {"time": time.time(), "command": "(host) kill every process", "exit_code": left}
        append_audit(rec.id, entry | {"duration": 0.0, "timed_out": False})
        return left

    def audit(self, rec: SandboxRecord, command: str, result: ExecResult, started: float) -> None:
        append_audit(
            rec.id,
            {
                "time": started,
                "command": command,
                "exit_code": result.exit_code,
                "duration": round(result.duration, 6),
                "timed_out": result.timed_out,
            },
        )

    def _why_closed(self, rec: SandboxRecord) -> str:
        if not rec.dir.exists():
            return f"sandbox {rec.id} is closed; create a new one"
        return (
            f"sandbox {rec.id} is not running any more (its processes died, e.g. killed by the "
            f"OOM killer at the {rec.spec.memory} byte limit); close it and create a new one"
        )

    # -- snapshots -----------------------------------------------------------------------------
    def snapshot(self, rec: SandboxRecord, owner: str | None = None) -> SnapshotRecord:
        """Freeze the sandbox, copy its writable layer, thaw: the copy becomes a read-only layer.

        It is kept while `owner` lives (default: this process, or the sandbox itself when it is
        detached) or something stacks on it; see SnapshotRecord.
        """
        backend = backend_for(rec.spec.backend)
        if owner is None:
            owner = f"sandbox:{rec.id}" if rec.spec.detached else process_owner()
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

    def snapshot_size(self, snapshot_id: str) -> int:
        """Bytes a snapshot's layer takes on disk."""
        snap = load_snapshot(snapshot_id)
        if snap is None:
            raise SandboxNotFound(f"no snapshot {snapshot_id!r}")
        total = 0
        for dirpath, dirs, files in os.walk(snap.dir / "layer"):
            for name in (*dirs, *files):
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
        return total

    def remove_snapshot(self, snapshot_id: str) -> None:
        """Remove a snapshot no sandbox and no other snapshot stacks on (InUse otherwise)."""
        snap = load_snapshot(snapshot_id)
        if snap is None:
            raise SandboxNotFound(f"no snapshot {snapshot_id!r}")
        layer = str(snap.dir / "layer")
        users = [r.id for r in list_records() if layer in r.layers]
        users += [s.id for s in list_snapshots() if s.id != snap.id and layer in s.layers]
        if users:
            raise InUse(
                f"snapshot {snapshot_id} is in use by {', '.join(users)} (sandboxes, or "
                "snapshots of its forks); remove those first"
            )
        shutil.rmtree(snap.dir)

    def _resolve_layers(self, name: str) -> tuple[str, list[str]]:
        if name.startswith("snap-"):
            snap = load_snapshot(name)
            if snap is None:
                raise SandboxNotFound(f"no snapshot {name!r}; take one with `sandbox.snapshot()`")
            return snap.image, snap.layers
        return name, [str(p) for p in get_image(name).layers]

    # -- idle TTL and garbage collection ------------------------------------------------------
    def _start_reaper(self) -> None:
        with self._lock:
            if self._reaper is not None:
                return
            self._reaper = threading.Thread(target=self._reap, name="rockroll-ttl", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        while True:
            time.sleep(0.5)
            with self._lock:
                expired = [rec.id for rec, _ in self._owned.values() if rec.expired()]
            for sandbox_id in expired:
                with contextlib.suppress(SandboxError):
                    self.close(sandbox_id)

    def gc(self) -> GcReport:
        """Remove sandboxes whose owner died, detached ones that expired or died, and strays."""
        report = GcReport()
        with self._lock:
            mine = set(self._owned)
        live: set[str] = set()
        for path in sorted(sandboxes_dir().iterdir()):
            if path.name in mine or path.name.startswith("."):
                live.add(path.name)
                continue
            rec = load_record(path.name)
            if rec is not None and self._alive(rec):
                live.add(rec.id)
                continue
            if rec is None and (owner_alive(path) or (path / "meta.json").exists()):
                live.add(path.name)  # being created, or a record this version cannot read
                continue
            self._collect(path, rec, report)
        for backend_name in ("bwrap", "podman"):
            with contextlib.suppress(SetupError, ImportError, OSError):
                backend = backend_for(backend_name)
                for name in backend.leftovers(live):
                    backend.remove_leftover(name)
                    report.resources.append(f"{backend_name}:{name}")
        for leftover in _stale_snapshot_tmps():
            shutil.rmtree(leftover, ignore_errors=True)
        self._collect_snapshots(report)
        empty_trash()
        return report

    def _collect_snapshots(self, report: GcReport) -> None:
        """Remove snapshots whose owner is gone and on which nothing stacks (a removed one may
        free its parent, hence the rounds)."""
        while True:
            removed = 0
            for snap in list_snapshots():
                if owner_lives(snap.owner):
                    continue
                try:
                    self.remove_snapshot(snap.id)
                except (InUse, SandboxNotFound):
                    continue
                report.snapshots.append(snap.id)
                removed += 1
            if not removed:
                return

    def _alive(self, rec: SandboxRecord) -> bool:
        if rec.spec.detached:
            if rec.status == "starting":
                return owner_alive(rec.dir)
            return not rec.expired() and backend_for(rec.spec.backend).running(rec)
        return owner_alive(rec.dir)

    def _collect(self, path: Path, rec: SandboxRecord | None, report: GcReport) -> None:
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


def _unmount_all(rec: SandboxRecord) -> None:
    for mount in mounts_under(rec.dir):
        unmount(mount)


def _stale_snapshot_tmps() -> list[Path]:
    cutoff = time.time() - 3600
    return [p for p in snapshots_dir().glob(".*.tmp") if p.stat().st_mtime < cutoff]


_Key = tuple[str, str, int | None, int | None]


class _WarmPool:
    """Started, never used sandboxes per (image, network, disk), so `create` only adopts one.

    A key is kept warm once a process has created two sandboxes of it (a process that makes
    one sandbox gains nothing); a background thread refills it. Only the bwrap backend, whose
    start-up flags depend on nothing but the image, the network mode and the disk, is pooled.
    """

    def __init__(self, runtime: LocalRuntime, size: int) -> None:
        self.runtime = runtime
        self.size = size
        self.asked: dict[_Key, int] = {}
        self.ready: dict[_Key, list[tuple[SandboxRecord, int]]] = {}
        self.specs: dict[_Key, SandboxSpec] = {}
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.closed = False

    def take(self, spec: SandboxSpec) -> tuple[SandboxRecord, int] | None:
        if self.size <= 0 or spec.backend != "bwrap" or spec.image.startswith("snap-"):
            return None
        if spec.profile != "agent":
            return None
        key = (spec.image, spec.network, spec.disk, spec.inodes)
        with self.cond:
            self.asked[key] = self.asked.get(key, 0) + 1
            if self.asked[key] < 2:
                return None
            self.specs.setdefault(key, spec.model_copy(update={"detached": False, "ttl": None}))
            if self.thread is None:
                self.thread = threading.Thread(target=self._fill, name="rockroll-warm", daemon=True)
                self.thread.start()
                atexit.register(self.close)
            items = self.ready.setdefault(key, [])
            warm = items.pop() if items else None
            self.cond.notify_all()
        return warm

    def _wanted(self) -> _Key | None:
        for key, items in self.ready.items():
            if len(items) < self.size:
                return key
        return None

    def _fill(self) -> None:
        while True:
            with self.cond:
                while not self.closed and (key := self._wanted()) is None:
                    self.cond.wait()
                if self.closed:
                    return
                spec = self.specs[key]
            time.sleep(REFILL_DELAY)
            try:
                warm = self.runtime._start(spec, status="warm")
            except Exception:
                time.sleep(1.0)
                continue
            with self.cond:
                if not self.closed:
                    self.ready[key].append(warm)
                    continue
            self._discard(warm)

    def _discard(self, warm: tuple[SandboxRecord, int]) -> None:
        rec, lock_fd = warm
        with contextlib.suppress(SandboxError, OSError):
            self.runtime._teardown(rec, backend_for(rec.spec.backend))
        os.close(lock_fd)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            items = [w for ws in self.ready.values() for w in ws]
            self.ready.clear()
            self.cond.notify_all()
        for warm in items:
            self._discard(warm)


_RUNTIME: LocalRuntime | None = None
_RUNTIME_LOCK = threading.Lock()


def local_runtime() -> LocalRuntime:
    """The process-wide runtime (created on first use)."""
    global _RUNTIME
    with _RUNTIME_LOCK:
        if _RUNTIME is None:
            _RUNTIME = LocalRuntime()
        return _RUNTIME
