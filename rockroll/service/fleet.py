"""Sandboxes over a Ray cluster: one long-lived host actor per node, not one actor per sandbox.

    fleet = Fleet.connect()                    # ray.init(address="auto"), or an address
    with fleet.create(memory="1g") as sb:      # placed on the node with the most free memory
        sb.exec("uname -n")

Each node runs a `NodeHost` actor (named, pinned to the node, started on first use) that owns
the sandboxes of that node through the local runtime and answers exec and file calls on a
thread pool. The driver places a new sandbox on the node whose host reports the most memory
left (available memory minus the limits of the sandboxes it already hosts) among those with
room for its memory and CPUs. A monitor thread watches the cluster: when a node dies or its
host stops answering, every sandbox it held is reported lost with the reason, and calls on them
raise `SandboxClosed` saying so.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rockroll.sandbox.checks import check_timeout
from rockroll.sandbox.errors import InvalidArgument, SandboxClosed, SandboxError, SetupError
from rockroll.sandbox.sdk import DEFAULT_TIMEOUT, OutputCallback, Sandbox
from rockroll.sandbox.spec import SandboxSpec, parse_size
from rockroll.sandbox.types import ExecResult, FileInfo

NAMESPACE = "rockroll"
PING_TIMEOUT = 10.0  # seconds a host may take to answer the monitor before its node is lost
HOST_CALL_TIMEOUT = 120.0  # seconds for calls that are not commands


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


class NodeHost:
    """The sandboxes of one node (a Ray actor, one per node; methods run on a thread pool)."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._boxes: dict[str, Sandbox] = {}
        self._lock = threading.Lock()

    def ping(self) -> str:
        return self.node_id

    def capacity(self) -> NodeCapacity:
        with self._lock:
            specs = [sb.spec for sb in self._boxes.values()]
        return NodeCapacity(
            node_id=self.node_id,
            memory_available=_mem_available(),
            memory_reserved=sum(s.memory or 0 for s in specs),
            cpus=os.cpu_count() or 1,
            cpus_reserved=sum(s.cpus or 0 for s in specs),
            sandboxes=len(specs),
        )

    def create(self, settings: dict[str, Any]) -> dict[str, Any]:
        sb = Sandbox.create(**settings)
        with self._lock:
            self._boxes[sb.id] = sb
        return {"id": sb.id, "spec": sb.spec.model_dump()}

    def call(self, sandbox_id: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run one of the sandbox's methods; results cross to the driver as plain values."""
        if method not in _FORWARDED:
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
        if sb is not None:
            sb.close()

    def close_all(self) -> int:
        with self._lock:
            boxes, self._boxes = list(self._boxes.values()), {}
        for sb in boxes:
            with contextlib.suppress(SandboxError):
                sb.close()
        return len(boxes)

    def _box(self, sandbox_id: str) -> Sandbox:
        with self._lock:
            sb = self._boxes.get(sandbox_id)
        if sb is None:
            raise SandboxClosed(f"sandbox {sandbox_id} is closed on node {self.node_id}")
        return sb


_FORWARDED = frozenset(
    {
        "exec",
        "read_bytes",
        "write_bytes",
        "list_dir",
        "exists",
        "is_dir",
        "read_tree",
        "write_tree",
        "audit_log",
    }
)
_HostActor = ray.remote(num_cpus=0, max_concurrency=256)(NodeHost)


class Fleet:
    """Sandboxes placed over the nodes of a Ray cluster, with node loss detected."""

    def __init__(self, monitor_every: float = 1.0) -> None:
        if not ray.is_initialized():
            raise SetupError("Ray is not initialised; use Fleet.connect(address)")
        self._hosts: dict[str, Any] = {}
        self._where: dict[str, str] = {}
        self._lost: dict[str, str] = {}
        self._dead_nodes: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.refresh()
        self._monitor = threading.Thread(
            target=self._watch, args=(monitor_every,), name="rockroll-fleet", daemon=True
        )
        self._monitor.start()

    @classmethod
    def connect(cls, address: str | None = "auto", **kwargs: Any) -> Fleet:
        """Join the Ray cluster at `address` ("auto": the one this machine belongs to)."""
        if not ray.is_initialized():
            try:
                ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
            except ConnectionError as exc:
                raise SetupError(
                    f"no Ray cluster at {address!r}: start one with `ray start --head`, or "
                    "pass the head's address"
                ) from exc
        return cls(**kwargs)

    # -- nodes ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Start a host on every live node that has none; report sandboxes of dead nodes."""
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        for node_id in alive - set(self._hosts) - set(self._dead_nodes):
            self._hosts[node_id] = _HostActor.options(
                name=f"rockroll-host-{node_id[:16]}",
                namespace=NAMESPACE,
                get_if_exists=True,
                lifetime="detached",
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote(node_id)
        for node_id in set(self._hosts) - alive:
            self.node_lost(node_id, "the node left the Ray cluster")

    def nodes(self) -> list[NodeCapacity]:
        """Every live host's capacity, most free memory first."""
        with self._lock:
            hosts = dict(self._hosts)
        refs = {node: host.capacity.remote() for node, host in hosts.items()}
        found = []
        for node, ref in refs.items():
            try:
                found.append(ray.get(ref, timeout=PING_TIMEOUT))
            except (RayActorError, GetTimeoutError) as exc:
                self.node_lost(node, f"its sandbox host stopped answering ({type(exc).__name__})")
        return sorted(found, key=lambda c: (-c.memory_free, c.sandboxes))

    def node_lost(self, node_id: str, reason: str) -> list[str]:
        """Forget a node; its sandboxes become lost with `reason`. Returns their ids."""
        with self._lock:
            if node_id in self._dead_nodes:
                return []
            self._dead_nodes[node_id] = reason
            self._hosts.pop(node_id, None)
            gone = [sid for sid, node in self._where.items() if node == node_id]
            for sid in gone:
                del self._where[sid]
                self._lost[sid] = f"node {node_id[:12]} was lost: {reason}"
        return gone

    def _watch(self, every: float) -> None:
        while not self._stop.wait(every):
            with contextlib.suppress(Exception):
                self.refresh()
                with self._lock:
                    hosts = dict(self._hosts)
                pings = {node: host.ping.remote() for node, host in hosts.items()}
                for node, ref in pings.items():
                    try:
                        ray.get(ref, timeout=PING_TIMEOUT)
                    except (RayActorError, GetTimeoutError) as exc:
                        self.node_lost(node, f"its sandbox host died ({type(exc).__name__})")

    # -- sandboxes -----------------------------------------------------------------------------
    def create(
        self, image: str = "base", *, memory: int | str | None = "2g", cpus: float = 1.0, **kw: Any
    ) -> FleetSandbox:
        """A sandbox on the node with the most memory left that fits it."""
        need = parse_size(memory) or 0
        candidates = [c for c in self.nodes() if c.fits(need, cpus)]
        if not candidates:
            raise SandboxError(
                f"no node of the cluster has {need} bytes and {cpus} CPUs free for a sandbox; "
                "close some or add nodes"
            )
        node = candidates[0].node_id
        settings = {"memory": need or None, "cpus": cpus} | kw
        with self._lock:
            host = self._hosts[node]
        try:
            made = ray.get(host.create.remote({"image": image, **settings}))
        except RayActorError as exc:
            self.node_lost(node, f"its sandbox host died ({type(exc).__name__})")
            raise SandboxError(f"node {node[:12]} was lost while creating the sandbox") from exc
        sandbox = FleetSandbox(self, node, made["id"], SandboxSpec.model_validate(made["spec"]))
        with self._lock:
            self._where[sandbox.id] = node
        return sandbox

    def status(self, sandbox_id: str) -> tuple[str, str | None]:
        """("running", node id), ("lost", why) or ("unknown", None)."""
        with self._lock:
            if sandbox_id in self._where:
                return "running", self._where[sandbox_id]
            if sandbox_id in self._lost:
                return "lost", self._lost[sandbox_id]
        return "unknown", None

    def placement(self) -> dict[str, str]:
        """Live sandbox id -> node id."""
        with self._lock:
            return dict(self._where)

    def lost(self) -> dict[str, str]:
        """Sandbox id -> why it was lost."""
        with self._lock:
            return dict(self._lost)

    def host(self, sandbox_id: str) -> Any:
        with self._lock:
            node = self._where.get(sandbox_id)
            if node is None:
                why = self._lost.get(sandbox_id, f"sandbox {sandbox_id} is closed")
                raise SandboxClosed(why)
            return self._hosts[node], node

    def forget(self, sandbox_id: str) -> None:
        with self._lock:
            self._where.pop(sandbox_id, None)

    def shutdown(self) -> None:
        """Stop watching, close every sandbox of every host, and end the hosts."""
        self._stop.set()
        with self._lock:
            hosts = list(self._hosts.values())
            self._where.clear()
        for host in hosts:
            with contextlib.suppress(RayActorError, GetTimeoutError):
                ray.get(host.close_all.remote(), timeout=HOST_CALL_TIMEOUT)
            with contextlib.suppress(Exception):
                ray.kill(host)


class FleetSandbox(Sandbox):
    """A `Sandbox` on one node of the fleet; every call goes to that node's host actor."""

    def __init__(self, fleet: Fleet, node_id: str, sandbox_id: str, spec: SandboxSpec) -> None:
        self._fleet = fleet
        self.node_id = node_id
        self._id = sandbox_id
        self._spec = spec
        self._closed = False

    @property
    def id(self) -> str:
        return self._id

    @property
    def spec(self) -> SandboxSpec:
        return self._spec

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(SandboxClosed):
            host, _ = self._fleet.host(self.id)
            with contextlib.suppress(RayActorError):
                ray.get(host.close.remote(self.id), timeout=HOST_CALL_TIMEOUT)
        self._fleet.forget(self.id)

    def __repr__(self) -> str:
        return f"FleetSandbox({self.id!r}, node={self.node_id[:12]!r})"

    def _call(self, method: str, *args: Any, wait: float | None = None, **kw: Any) -> Any:
        self._check_open()
        host, node = self._fleet.host(self.id)
        try:
            return ray.get(host.call.remote(self.id, method, *args, **kw), timeout=wait)
        except RayActorError as exc:
            self._fleet.node_lost(node, f"its sandbox host died ({type(exc).__name__})")
            raise SandboxClosed(self._fleet.status(self.id)[1] or str(exc)) from exc
        except ray.exceptions.RayTaskError as exc:
            raise exc.as_instanceof_cause() from None

    def exec(
        self,
        cmd: str | list[str],
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        stdin: bytes | str | None = None,
        on_output: OutputCallback | None = None,
    ) -> ExecResult:
        """As `Sandbox.exec`; `on_output` gets the whole output once the command ends."""
        check_timeout(timeout)
        wait = None if timeout is None else timeout + 60
        options = {"timeout": timeout, "cwd": cwd, "env": env, "stdin": stdin}
        result = self._call("exec", cmd, wait=wait, **options)
        res = ExecResult.model_validate(result)
        if on_output is not None:
            for stream in ("stdout", "stderr"):
                if text := getattr(res, stream):
                    on_output(stream, text.encode())
        return res

    def read_bytes(self, path: str) -> bytes:
        return self._call("read_bytes", path, wait=HOST_CALL_TIMEOUT)

    def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._call("write_bytes", path, bytes(data), mode, wait=HOST_CALL_TIMEOUT)

    def list_dir(self, path: str = ".") -> list[FileInfo]:
        items = self._call("list_dir", path, wait=HOST_CALL_TIMEOUT)
        return [FileInfo.model_validate(i) for i in items]

    def exists(self, path: str) -> bool:
        return bool(self._call("exists", path, wait=HOST_CALL_TIMEOUT))

    def is_dir(self, path: str) -> bool:
        return bool(self._call("is_dir", path, wait=HOST_CALL_TIMEOUT))

    def read_tree(self, path: str) -> bytes:
        return self._call("read_tree", path, wait=HOST_CALL_TIMEOUT)

    def write_tree(self, path: str, archive: bytes) -> None:
        self._call("write_tree", path, archive, wait=HOST_CALL_TIMEOUT)

    def audit_log(self) -> list[dict]:
        return self._call("audit_log", wait=HOST_CALL_TIMEOUT)

    def session(self, **_: Any) -> Any:  # type: ignore[override]
        raise InvalidArgument("sessions are not available on fleet sandboxes yet; use exec")

    def snapshot(self) -> Any:  # type: ignore[override]
        raise InvalidArgument("snapshots are not available on fleet sandboxes yet")


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0
