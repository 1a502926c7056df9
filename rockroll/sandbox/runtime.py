"""The local runtime: creates, runs, snapshots and collects sandboxes on this machine.

It owns what every backend shares: records on disk, the overlay root, the init's socket, the
audit log and idle TTLs; snapshots on disk (`snapshots`), garbage collection (`garbage`) and
the warm pool (`warm`) are modules of their own.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import time
from typing import Any

from rockroll.errors import SandboxClosed, SandboxError, SandboxNotFound
from rockroll.sandbox import protocol, snapshots
from rockroll.sandbox.backend import Backend
from rockroll.sandbox.backends import backend_for
from rockroll.sandbox.disk import check_disk, throw_away
from rockroll.sandbox.files import RootFS
from rockroll.sandbox.garbage import GcReport, collect_garbage, unmount_all
from rockroll.sandbox.images import get_image
from rockroll.sandbox.monitors import RESOLV_CONF, change_network, has_policy
from rockroll.sandbox.mounts import mounts_under
from rockroll.sandbox.records import (
    SandboxRecord,
    SnapshotRecord,
    append_audit,
    list_records,
    load_record,
    load_snapshot,
    new_id,
    process_owner,
    take_owner_lock,
)
from rockroll.sandbox.spec import SandboxSpec
from rockroll.sandbox.types import ExecResult
from rockroll.sandbox.warm import Started, WarmPool

__all__ = ["GcReport", "LocalRuntime", "backend_for", "local_runtime"]  # also from here
_ID = re.compile(r"[0-9a-f]{12}")
WARM = int(os.environ.get("ROCKROLL_WARM", "2"))


class LocalRuntime:
    """Sandboxes on this host. One per process (see `local_runtime()`); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owned: dict[str, Started] = {}
        self._checked: set[str] = set()
        self._given: set[str] = set()  # sandboxes that own a snapshot (their fork's)
        self._collected = False
        self._reaper: threading.Thread | None = None
        self.warm = WarmPool(
            lambda spec: self.start(spec, status="warm"),
            lambda rec: self.teardown(rec, backend_for(rec.spec.backend)),
            WARM,
        )

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
        warm = self.warm.take(spec)
        rec, lock_fd = self._adopt(warm, spec) if warm else self.start(spec)
        if spec.detached:
            os.close(lock_fd)
        else:
            with self._lock:
                self._owned[rec.id] = (rec, lock_fd)
            if spec.ttl is not None:
                self._start_reaper()
        return rec

    def start(self, spec: SandboxSpec, status: str = "running") -> Started:
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
        # The folder appears under its name with its owner lock already held: gc (of this
        # process's other threads, or of another process) skips dot-names, and takes a folder
        # with no lock and no record for a dead sandbox's.
        new = rec.dir.with_name(f".{rec.id}.new")
        new.mkdir(parents=True)
        lock_fd = take_owner_lock(new)
        os.rename(new, rec.dir)
        try:
            if not spec.disk:  # a disk is the backend's to make (bwrap may have one ready)
                for sub in ("upper", "work"):
                    (rec.fsdir / sub).mkdir(parents=True)
            rec.backend_pid = backend.launch(rec)
            rec.status = status
            rec.save()
            backend.wait_ready(rec)
            self.rootfs(rec).makedirs(spec.workdir)
            if spec.monitor and has_policy(spec.network):
                self.rootfs(rec).write_bytes("/etc/resolv.conf", RESOLV_CONF)
        except BaseException as exc:
            try:
                self.teardown(rec, backend)
            except SandboxError as cleanup:
                exc.add_note(f"cleaning up after that also failed: {cleanup}")
            finally:
                os.close(lock_fd)
            raise
        return rec, lock_fd

    def _adopt(self, warm: Started, spec: SandboxSpec) -> Started:
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
                self.teardown(rec, backend_for(spec.backend))
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
            self.teardown(rec, backend_for(rec.spec.backend))
        if owned:
            os.close(owned[1])
        with self._lock:
            given = sandbox_id in self._given
            self._given.discard(sandbox_id)
        if given or (rec is not None and rec.spec.detached):
            snapshots.remove_owned_snapshots(f"sandbox:{sandbox_id}")

    def teardown(self, rec: SandboxRecord, backend: Backend) -> None:
        """End the sandbox's processes and remove its files, whoever owns it."""
        errors = []
        for step in (lambda: backend.destroy(rec), lambda: unmount_all(rec)):
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
            raise SandboxClosed(self.why_closed(rec)) from None
        self.audit(rec, command, result, started)
        return result

    def set_network(self, rec: SandboxRecord, setting: str | dict[str, Any]) -> None:
        """Change a running sandbox's egress policy; it holds for every connection tried after
        this returns (the supervisor says so in the events)."""
        change_network(rec, setting)
        if has_policy(setting):
            self.rootfs(rec).write_bytes("/etc/resolv.conf", RESOLV_CONF)
        rec.save()

    def kill_all(self, rec: SandboxRecord) -> int:
        """SIGKILL every process of the sandbox but its init; how many are left."""
        try:
            left = protocol.kill_all(rec.sock)
        except SandboxClosed:
            raise SandboxClosed(self.why_closed(rec)) from None
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

    def why_closed(self, rec: SandboxRecord) -> str:
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
        if owner is None:
            owner = f"sandbox:{rec.id}" if rec.spec.detached else process_owner()
        return snapshots.take_snapshot(rec, backend_for(rec.spec.backend), owner)

    def give_snapshot(self, snapshot_id: str, owner: str) -> None:
        """Make `owner` (see SnapshotRecord) the snapshot's owner."""
        snap = snapshots.found_snapshot(snapshot_id)
        snap.owner = owner
        if owner.startswith("sandbox:"):
            with self._lock:
                self._given.add(owner.removeprefix("sandbox:"))
        snap.save()

    def snapshot_size(self, snapshot_id: str) -> int:
        """Bytes a snapshot's layer takes on disk."""
        return snapshots.snapshot_size(snapshot_id)

    def remove_snapshot(self, snapshot_id: str) -> None:
        """Remove a snapshot no sandbox and no other snapshot stacks on (InUse otherwise)."""
        snapshots.remove_snapshot(snapshot_id)

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
        with self._lock:
            mine = set(self._owned)
        return collect_garbage(mine)


_RUNTIME: LocalRuntime | None = None
_RUNTIME_LOCK = threading.Lock()


def local_runtime() -> LocalRuntime:
    """The process-wide runtime (created on first use)."""
    global _RUNTIME
    with _RUNTIME_LOCK:
        if _RUNTIME is None:
            _RUNTIME = LocalRuntime()
        return _RUNTIME
