"""`SandboxHost`: the sandboxes, sessions and snapshots of one process, addressed by id.

What one node of a Ray fleet runs as its host actor (see rockroll/service/fleet.py): every
call names what it acts on by id and answers with plain values (dicts, lists, bytes), so it
crosses a process boundary as is. Methods are thread-safe: the actor runs them on a pool.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rockroll.errors import InvalidArgument, SandboxClosed, SandboxError, SandboxNotFound
from rockroll.sandbox.sdk import Sandbox, Session, Snapshot  # sdk: `create` can place locally
from rockroll.sandbox.types import ExecResult, FileInfo

FORWARDED = frozenset(
    {
        "exec",
        "read_bytes",
        "write_bytes",
        "list_dir",
        "remove",
        "exists",
        "is_dir",
        "read_tree",
        "write_tree",
        "audit_log",
        "events",
        "set_network",
        "kill_all",
    }
)


@dataclass(frozen=True)
class NodeCapacity:
    """What one node's host reports: memory and CPUs left for new sandboxes."""

    node_id: str
    memory_available: int
    memory_reserved: int
    cpus: int
    cpus_reserved: float
    sandboxes: int

    @property
    def memory_free(self) -> int:
        return self.memory_available - self.memory_reserved

    def fits(self, memory: int, cpus: float) -> bool:
        return memory <= self.memory_free and self.cpus_reserved + cpus <= self.cpus * 4


class SandboxHost:
    """The sandboxes of one node, their sessions and snapshots, by id."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._boxes: dict[str, Sandbox] = {}
        self._sessions: dict[str, tuple[str, Session]] = {}  # id -> (sandbox id, session)
        self._snapshots: dict[str, Snapshot] = {}
        self._lock = threading.Lock()

    def ping(self) -> str:
        return self.node_id

    def capacity(self) -> NodeCapacity:
        with self._lock:
            specs = [sb.spec for sb in self._boxes.values()]
        return NodeCapacity(
            node_id=self.node_id,
            memory_available=mem_available(),
            memory_reserved=sum(s.memory or 0 for s in specs),
            cpus=os.cpu_count() or 1,
            cpus_reserved=sum(s.cpus or 0 for s in specs),
            sandboxes=len(specs),
        )

    # -- sandboxes -----------------------------------------------------------------------------
    def create(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Start a sandbox on this node (`Sandbox.create` settings); its id and spec."""
        return self._keep(Sandbox.create(**settings))

    def call(self, sandbox_id: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run one of the sandbox's methods; results cross to the driver as plain values."""
        if method not in FORWARDED:
            raise InvalidArgument(f"{method!r} cannot be called on a fleet sandbox")
        result = getattr(self._box(sandbox_id), method)(*args, **kwargs)
        if isinstance(result, ExecResult):
            return result.model_dump()
        if isinstance(result, list) and result and isinstance(result[0], FileInfo):
            return [r.model_dump() for r in result]
        return result

    def close(self, sandbox_id: str) -> None:
        with self._lock:
            sb = self._boxes.pop(sandbox_id, None)
            ids = [sid for sid, (box, _) in self._sessions.items() if box == sandbox_id]
            sessions = [self._sessions.pop(sid)[1] for sid in ids]
        for session in sessions:
            with contextlib.suppress(SandboxError):
                session.close()
        if sb is not None:
            sb.close()

    def close_all(self) -> int:
        """Close every session and sandbox and remove every snapshot; how many sandboxes."""
        with self._lock:
            boxes, self._boxes = list(self._boxes.values()), {}
            sessions, self._sessions = [s for _, s in self._sessions.values()], {}
            snaps, self._snapshots = list(self._snapshots.values()), {}
        for session in sessions:
            with contextlib.suppress(SandboxError):
                session.close()
        for sb in boxes:
            with contextlib.suppress(SandboxError):
                sb.close()
        for snap in snaps:
            with contextlib.suppress(SandboxError):
                snap.remove()
        return len(boxes)

    # -- sessions ------------------------------------------------------------------------------
    def open_session(
        self,
        sandbox_id: str,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        user: str | int | None = None,
    ) -> str:
        """A persistent shell in the sandbox; its id for `run_session` and `close_session`."""
        session = self._box(sandbox_id).session(cwd=cwd, env=env, user=user)
        session_id = "ses-" + secrets.token_hex(8)
        with self._lock:
            self._sessions[session_id] = (sandbox_id, session)
        return session_id

    def run_session(self, session_id: str, cmd: str, timeout: float | None) -> dict[str, Any]:
        return self._session(session_id).run(cmd, timeout=timeout).model_dump()

    def close_session(self, session_id: str) -> None:
        with self._lock:
            found = self._sessions.pop(session_id, None)
        if found is not None:
            found[1].close()

    # -- snapshots and forks -------------------------------------------------------------------
    def snapshot(self, sandbox_id: str) -> dict[str, str]:
        """Snapshot the sandbox; the snapshot's id and source, kept here until removed."""
        snap = self._box(sandbox_id).snapshot()
        with self._lock:
            self._snapshots[snap.id] = snap
        return {"id": snap.id, "source": snap.source}

    def fork(self, sandbox_id: str, overrides: dict[str, Any]) -> dict[str, Any]:
        """A new sandbox from a snapshot of this one, on this node (see `Sandbox.fork`)."""
        return self._keep(self._box(sandbox_id).fork(**overrides))

    def fork_snapshot(self, snapshot_id: str, overrides: dict[str, Any]) -> dict[str, Any]:
        return self._keep(self._snapshot(snapshot_id).fork(**overrides))

    def remove_snapshot(self, snapshot_id: str) -> None:
        self._snapshot(snapshot_id).remove()
        with self._lock:
            self._snapshots.pop(snapshot_id, None)

    # -- lookups -------------------------------------------------------------------------------
    def _keep(self, sb: Sandbox) -> dict[str, Any]:
        with self._lock:
            self._boxes[sb.id] = sb
        return {"id": sb.id, "spec": sb.spec.model_dump()}

    def _box(self, sandbox_id: str) -> Sandbox:
        with self._lock:
            sb = self._boxes.get(sandbox_id)
        if sb is None:
            raise SandboxClosed(f"sandbox {sandbox_id} is closed on node {self.node_id}")
        return sb

    def _session(self, session_id: str) -> Session:
        with self._lock:
            found = self._sessions.get(session_id)
        if found is None:
            raise SandboxClosed(f"session {session_id} is closed on node {self.node_id}")
        return found[1]

    def _snapshot(self, snapshot_id: str) -> Snapshot:
        with self._lock:
            snap = self._snapshots.get(snapshot_id)
        if snap is None:
            raise SandboxNotFound(f"no snapshot {snapshot_id!r} on node {self.node_id}")
        return snap


def mem_available() -> int:
    """This machine's MemAvailable, in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0
