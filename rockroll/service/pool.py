"""The server's sandboxes: create, find (for their owner only), delete, reconcile, reap.

Sandboxes are started detached, so they outlive a server killed with SIGKILL; the SQLite row
written before each start, and the label `rockroll.service/key` the sandbox carries, let the
next server adopt every one that still runs and report the rest as lost, with why.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field

from rockroll.errors import (
    InUse,
    InvalidArgument,
    QuotaExceeded,
    SandboxClosed,
    SandboxError,
    SandboxNotFound,
)
from rockroll.sandbox.records import list_records, load_record
from rockroll.sandbox.runtime import LocalRuntime, backend_for, local_runtime
from rockroll.sandbox.sdk import Sandbox
from rockroll.sandbox.session import Session
from rockroll.sandbox.spec import SandboxSpec, make_spec, parse_size
from rockroll.service.bodies import CreateSandbox, ForkRequest, SandboxInfo
from rockroll.service.store import LIVE, Ask, SandboxRow, Store, Token

log = logging.getLogger("rockroll.service")
KEY_LABEL = "rockroll.service/key"
DB_LABEL = "rockroll.service/db"  # which server's state: servers may share one host and home
TOUCH_EVERY = 2.0  # seconds between flushes of activity times to the database
CHECK_EVERY = 10.0  # seconds between checks that live sandboxes still have processes


@dataclass
class ReconcileReport:
    adopted: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


class Pool:
    """Live sandboxes of one server, with ownership checked on every lookup."""

    def __init__(self, store: Store, runtime: LocalRuntime | None = None) -> None:
        self.store = store
        self.runtime = runtime or local_runtime()
        self._live: dict[str, Sandbox] = {}
        self._keys: dict[str, str] = {}
        self._owners: dict[str, str] = {}
        self._active: dict[str, float] = {}
        self._sessions: dict[str, tuple[str, str, Session]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self._db_tag = hashlib.sha256(str(store.path.resolve()).encode()).hexdigest()[:12]

    # -- create, find, delete ------------------------------------------------------------------
    def create(self, owner: Token, req: CreateSandbox) -> SandboxInfo:
        memory = parse_size(req.memory) if req.memory is not None else None
        disk = parse_size(req.disk, "disk", 16 << 20) if req.disk is not None else None
        if req.workdir and not req.workdir.startswith("/"):
            raise InvalidArgument("workdir must be an absolute path like /app")
        settings = req.model_dump(exclude={"idle_ttl", "lifetime", "labels"})
        settings |= {"memory": memory, "disk": disk}
        if req.image.startswith("snap-"):
            snap = self.store.snapshot(req.image)
            if snap is None or (snap.owner != owner.id and not owner.admin):
                raise SandboxNotFound(f"no snapshot {req.image!r} of yours")
        spec = make_spec(**(settings | {"detached": True, "labels": {}}))
        _check_bounded(owner, spec)
        deadline = time.time() + req.lifetime if req.lifetime else None
        ask = Ask(memory or 0, spec.cpus or 0.0, spec.pids or 0, disk or 0)
        key = self.store.reserve_sandbox(
            owner, spec.model_dump_json(), ask, json.dumps(req.labels), req.idle_ttl, deadline
        )
        try:
            labels = req.labels | {KEY_LABEL: key, DB_LABEL: self._db_tag}
            sandbox = Sandbox.create(**(settings | {"detached": True}), labels=labels)
        except BaseException as exc:
            self.store.ended(key, "lost", f"could not start: {exc}")
            raise
        self.store.started(key, sandbox.id)
        with self._lock:
            self._live[sandbox.id] = sandbox
            self._keys[sandbox.id] = key
            self._owners[sandbox.id] = owner.id
        return self.info(owner, sandbox.id)

    def set_network(self, owner: Token, sandbox_id: str, network: str | dict) -> None:
        _check_network(owner, network)
        self.get(owner, sandbox_id).set_network(network)

    def row(self, owner: Token, sandbox_id: str) -> SandboxRow:
        """The sandbox's row if `owner` may see it; others get the same 404 as a missing id, so
        ids cannot be probed."""
        row = self.store.sandbox(sandbox_id) if isinstance(sandbox_id, str) else None
        if row is None or (row.owner != owner.id and not owner.admin):
            raise SandboxNotFound(f"no sandbox {sandbox_id!r} of yours")
        return row

    def get(self, owner: Token, sandbox_id: str) -> Sandbox:
        """A live sandbox of `owner`'s, marked active (for its idle TTL)."""
        with self._lock:
            sandbox = self._live.get(sandbox_id)
            if sandbox is not None and (owner.admin or self._owners[sandbox_id] == owner.id):
                self._active[sandbox_id] = time.time()
                return sandbox
        row = self.row(owner, sandbox_id)
        if row.status not in LIVE:
            raise Gone(f"sandbox {sandbox_id} is {row.status}: {row.reason}")
        with self._lock:
            sandbox = self._live.get(sandbox_id)
            self._active[sandbox_id] = time.time()
        if sandbox is None:
            raise Gone(f"sandbox {sandbox_id} is still being created; try again shortly")
        return sandbox

    def info(self, owner: Token, sandbox_id: str) -> SandboxInfo:
        return to_info(self.row(owner, sandbox_id), self._active.get(sandbox_id))

    def list(
        self, owner: Token, *, status: str | None = None, labels: dict[str, str] | None = None
    ) -> list[SandboxInfo]:
        statuses = LIVE if status in (None, "live") else (status,)
        rows = self.store.sandboxes(owner=None if owner.admin else owner.id, statuses=statuses)
        found = [to_info(r, self._active.get(r.id or "")) for r in rows]
        wanted = labels or {}
        return [i for i in found if all(i.labels.get(k) == v for k, v in wanted.items())]

    def delete(self, owner: Token, sandbox_id: str, reason: str = "deleted by its owner") -> None:
        row = self.row(owner, sandbox_id)
        if row.status in LIVE:
            self._close(row, "deleted", reason)

    def set_lifetime(self, owner: Token, sandbox_id: str, seconds: float) -> float:
        """Delete the live sandbox `seconds` from now (its new hard deadline, returned)."""
        self.get(owner, sandbox_id)
        deadline = time.time() + seconds
        self.store.set_deadline(sandbox_id, deadline)
        return deadline

    def kill_all(self, owner: Token, sandbox_id: str) -> int:
        return self.get(owner, sandbox_id).kill_all()

    def _close(self, row: SandboxRow, status: str, reason: str) -> None:
        assert row.id is not None
        with self._lock:
            sandbox = self._live.pop(row.id, None)
            self._keys.pop(row.id, None)
            self._owners.pop(row.id, None)
            self._active.pop(row.id, None)
            sessions = [s for s, (sid, _, _) in self._sessions.items() if sid == row.id]
            closing = [self._sessions.pop(s)[2] for s in sessions]
        for session in closing:
            with contextlib.suppress(SandboxError):
                session.close()
        try:
            if sandbox is not None:
                sandbox.close()
            else:
                self.runtime.close(row.id)
        finally:
            self.store.ended(row.key, status, reason)
            self.store.orphan_snapshots(row.id)
            self.collect_snapshots()

    # -- sessions ------------------------------------------------------------------------------
    def open_session(
        self,
        owner: Token,
        sandbox_id: str,
        cwd: str | None,
        env: dict[str, str] | None,
        user: str | None = None,
    ) -> str:
        session = self.get(owner, sandbox_id).session(cwd=cwd, env=env, user=user)
        session_id = "ses-" + secrets.token_hex(8)
        with self._lock:
            self._sessions[session_id] = (sandbox_id, owner.id, session)
        return session_id

    def session(self, owner: Token, session_id: str) -> Session:
        with self._lock:
            found = self._sessions.get(session_id)
        if found is None or (found[1] != owner.id and not owner.admin):
            raise SandboxNotFound(
                f"no session {session_id!r} of yours (sessions end when the server restarts)"
            )
        self.get(owner, found[0])
        return found[2]

    def close_session(self, owner: Token, session_id: str) -> None:
        session = self.session(owner, session_id)
        with self._lock:
            self._sessions.pop(session_id, None)
        session.close()

    # -- snapshots and forks -------------------------------------------------------------------
    def snapshot(self, owner: Token, sandbox_id: str) -> tuple[str, float]:
        """Snapshot a sandbox, within the owner's snapshot count and disk quotas (its size is
        known only once taken: one over the disk quota is removed again)."""
        sandbox = self.get(owner, sandbox_id)
        self.store.check_snapshot_room(owner)
        snap = sandbox.snapshot()
        try:
            size = self.runtime.snapshot_size(snap.id)
            self.store.add_snapshot(
                snap.id, owner, sandbox_id, sandbox.spec.model_dump_json(), size
            )
        except BaseException:
            with contextlib.suppress(SandboxError, OSError):
                snap.remove()
            raise
        return snap.id, snap.record.created

    def collect_snapshots(self) -> list[str]:
        """Remove the snapshots whose sandbox ended, once no live sandbox stacks on them."""
        removed = []
        for snap in self.store.snapshots(orphaned=True):
            try:
                self.runtime.remove_snapshot(snap.id)
            except InUse:
                continue
            except SandboxNotFound:
                pass
            self.store.remove_snapshot(snap.id)
            removed.append(snap.id)
        return removed

    def fork(self, owner: Token, snapshot_id: str, req: ForkRequest) -> SandboxInfo:
        snap = self.store.snapshot(snapshot_id)
        if snap is None or (snap.owner != owner.id and not owner.admin):
            raise SandboxNotFound(f"no snapshot {snapshot_id!r} of yours")
        base = json.loads(snap.spec)
        keep = ("memory", "cpus", "pids", "network", "env", "workdir", "max_output")
        keep += ("disk", "inodes", "user")
        settings = {k: base[k] for k in keep if k in base} | {
            k: v for k, v in req.model_dump().items() if v is not None
        }
        settings["labels"] = settings.get("labels") or {
            k: v for k, v in base.get("labels", {}).items() if k not in (KEY_LABEL, DB_LABEL)
        }
        return self.create(owner, CreateSandbox(image=snapshot_id, **settings))

    def remove_snapshot(self, owner: Token, snapshot_id: str) -> None:
        snap = self.store.snapshot(snapshot_id)
        if snap is None or (snap.owner != owner.id and not owner.admin):
            raise SandboxNotFound(f"no snapshot {snapshot_id!r} of yours")
        self.runtime.remove_snapshot(snapshot_id)
        self.store.remove_snapshot(snapshot_id)

    # -- after a crash, and over time ----------------------------------------------------------
    def reconcile(self) -> ReconcileReport:
        """Match the database with what runs on this host: adopt the live, report the dead."""
        report = ReconcileReport()
        on_disk = {
            r.spec.labels[KEY_LABEL]: r
            for r in list_records()
            if r.spec.labels.get(DB_LABEL) == self._db_tag and KEY_LABEL in r.spec.labels
        }
        for row in self.store.sandboxes(statuses=LIVE):
            rec = load_record(row.id) if row.id else on_disk.get(row.key)
            if rec is not None and rec.status == "running" and _running(rec):
                if row.id is None:
                    self.store.started(row.key, rec.id)
                with self._lock:
                    self._live[rec.id] = Sandbox.connect(rec.id)
                    self._keys[rec.id] = row.key
                    self._owners[rec.id] = row.owner
                report.adopted.append(rec.id)
                continue
            why = (
                "the server stopped while starting it"
                if rec is None and row.id is None
                else "its processes were gone when the server restarted"
            )
            if rec is not None:
                with contextlib.suppress(SandboxError, OSError):
                    self.runtime.close(rec.id)
            self.store.ended(row.key, "lost", why)
            report.lost.append(row.id or row.key)
        known = {r.key for r in self.store.sandboxes(statuses=LIVE)}
        for key, rec in on_disk.items():
            if key not in known and rec.id not in self._live:
                with contextlib.suppress(SandboxError, OSError):
                    self.runtime.close(rec.id)
                report.removed.append(rec.id)
        gc = self.runtime.gc()  # what a killed server left: its warm pool, half-made sandboxes
        report.removed.extend(gc.sandboxes)
        return report

    def start_reaper(self, every: float = 1.0) -> None:
        if self._reaper is None:
            self._reaper = threading.Thread(
                target=self._reap_loop, args=(every,), name="rockroll-reaper", daemon=True
            )
            self._reaper.start()

    def _reap_loop(self, every: float) -> None:
        last_flush = last_check = time.time()
        while not self._stop.wait(every):
            now = time.time()
            if now - last_flush >= TOUCH_EVERY:
                self.flush_activity()
                last_flush = now
            with contextlib.suppress(Exception):
                self.reap(now)
            if now - last_check >= CHECK_EVERY:
                with contextlib.suppress(Exception):
                    self.check_alive()
                with contextlib.suppress(Exception):
                    self.collect_snapshots()
                last_check = now

    def check_alive(self) -> list[str]:
        """Report as lost the live sandboxes whose processes are gone (the OOM killer, say)."""
        with self._lock:
            live = dict(self._live)
        dead = []
        for sandbox_id in live:
            rec = load_record(sandbox_id)
            if rec is not None and _running(rec):
                continue
            row = self.store.sandbox(sandbox_id)
            if row is not None and row.status == "running" and sandbox_id in self._live:
                with contextlib.suppress(SandboxError, OSError):
                    self._close(row, "lost", "its processes died (killed, or out of memory)")
                dead.append(sandbox_id)
        return dead

    def flush_activity(self) -> None:
        with self._lock:
            active, self._active = self._active, {}
        for sandbox_id, when in active.items():
            self.store.touch(sandbox_id, when)
        with self._lock:
            for sandbox_id, when in active.items():
                self._active.setdefault(sandbox_id, when)

    def reap(self, now: float | None = None) -> list[str]:
        """Delete sandboxes past their idle TTL or deadline; returns their ids."""
        now = now or time.time()
        reaped = []
        for row in self.store.sandboxes(statuses=("running",)):
            last = max(row.last_active, self._active.get(row.id or "", 0.0))
            if row.deadline is not None and now >= row.deadline:
                reason = "its lifetime ended"
            elif row.idle_ttl is not None and now - last >= row.idle_ttl:
                reason = f"idle for more than {row.idle_ttl:g} s"
            else:
                continue
            with contextlib.suppress(SandboxError, OSError):
                self._close(row, "deleted", reason)
                reaped.append(row.id or row.key)
        return reaped

    def shutdown(self, keep: bool = False) -> None:
        """Stop the reaper; delete every live sandbox unless `keep` (the next start adopts)."""
        self._stop.set()
        self.flush_activity()
        if keep:
            return
        for row in self.store.sandboxes(statuses=LIVE):
            if row.id is None:
                self.store.ended(row.key, "lost", "the server stopped while starting it")
                continue
            with contextlib.suppress(SandboxError, OSError):
                self._close(row, "deleted", "the server shut down")

    def live_count(self) -> int:
        with self._lock:
            return len(self._live)


class Gone(SandboxClosed):
    """The sandbox exists in the records but is not usable (deleted, lost, or starting)."""


def _check_network(owner: Token, network: str | dict) -> None:
    """Any way out is for tokens allowed the network; a network of the server's, for admins."""
    if network != "none" and not (owner.allow_network or owner.unlimited):
        raise PermissionError(
            f"token {owner.name!r} may not ask for network {network!r}, only 'none' "
            "(create the token with --allow-network)"
        )
    if isinstance(network, dict) and network.get("via") and not owner.admin:
        raise PermissionError("network.via names a network of the server's: admin tokens only")


def _check_bounded(owner: Token, spec: SandboxSpec) -> None:
    """A token's sandbox must be bounded in every resource, unless the token is unlimited; and
    its network as `_check_network` allows."""
    _check_network(owner, spec.network)
    if owner.unlimited:
        return
    for name in ("memory", "cpus", "pids", "disk"):
        if getattr(spec, name) is None:
            raise QuotaExceeded(
                f"token {owner.name!r} has quotas, so each sandbox needs a {name} limit "
                f"(got {name}=null)"
            )


def _running(rec: object) -> bool:
    with contextlib.suppress(Exception):
        return bool(backend_for(rec.spec.backend).running(rec))  # type: ignore[attr-defined]
    return False


def to_info(row: SandboxRow, active: float | None = None) -> SandboxInfo:
    spec = json.loads(row.spec)
    return SandboxInfo(
        id=row.id or row.key,
        status=row.status,  # type: ignore[arg-type]
        reason=row.reason,
        owner=row.owner,
        image=spec.get("image", ""),
        memory=row.memory,
        labels=json.loads(row.labels),
        created=row.created,
        last_active=max(row.last_active, active or 0.0),
        idle_ttl=row.idle_ttl,
        deadline=row.deadline,
        spec=spec,
    )
