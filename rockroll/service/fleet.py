"""Sandboxes over a Ray cluster: one long-lived host actor per node, not one actor per sandbox.

    fleet = Fleet.connect()                    # ray.init(address="auto"), or an address
    with fleet.create(memory="1g") as sb:      # placed on the node with the most free memory
        sb.exec("uname -n")

Each node runs a host actor (a `SandboxHost`, named, pinned to the node, started on first use)
that owns the sandboxes of that node, their sessions and snapshots, through the local runtime,
and answers on a thread pool. A `FleetSandbox` is a full `Sandbox`: commands, sessions, files,
snapshots and forks (which stay on the snapshot's node) all go to that node's host. The driver
places a new sandbox on the node whose host reports the most memory left (available memory
minus the limits of the sandboxes it already hosts) among those with room for its memory and
CPUs. A monitor thread watches the cluster: when a node dies or its host stops answering, every
sandbox it held is reported lost with the reason, and calls on them raise `SandboxClosed`
saying so.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, BinaryIO

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rockroll.errors import SandboxClosed, SandboxError, SetupError
from rockroll.sandbox.base import (
    DEFAULT_TIMEOUT,
    Command,
    OutputCallback,
    Sandbox,
    Session,
    Snapshot,
    check_command,
    check_data,
)
from rockroll.sandbox.checks import check_env, check_timeout
from rockroll.sandbox.files import MAX_READ
from rockroll.sandbox.host import NodeCapacity, SandboxHost
from rockroll.sandbox.spec import SandboxSpec, parse_size
from rockroll.sandbox.trees import MAX_TREE
from rockroll.sandbox.types import ExecResult, FileInfo

__all__ = ["Fleet", "FleetSandbox", "FleetSession", "FleetSnapshot", "NodeCapacity"]
NAMESPACE = "rockroll"
PING_TIMEOUT = 10.0  # seconds a host may take to answer the monitor before its node is lost
HOST_CALL_TIMEOUT = 120.0  # seconds for calls that are not commands
COMMAND_MARGIN = 60.0  # seconds a command's answer may take beyond its own timeout
_HostActor = ray.remote(num_cpus=0, max_concurrency=256)(SandboxHost)


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
        except RayTaskError as exc:
            raise exc.as_instanceof_cause() from None
        return self.adopt(node, made)

    def adopt(self, node_id: str, made: dict[str, Any]) -> FleetSandbox:
        """The sandbox a node's host made (`{"id", "spec"}`), placed there from now on."""
        spec = SandboxSpec.model_validate(made["spec"])
        sandbox = FleetSandbox(self, node_id, made["id"], spec)
        with self._lock:
            self._where[sandbox.id] = node_id
        return sandbox

    def ask(
        self,
        node_id: str,
        method: str,
        *args: Any,
        wait: float | None = HOST_CALL_TIMEOUT,
        **kw: Any,
    ) -> Any:
        """Call `method` of a node's host and wait up to `wait` seconds for the answer; the
        host's own errors are raised as they are, a dead host makes its node lost."""
        with self._lock:
            host = self._hosts.get(node_id)
            gone = self._dead_nodes.get(node_id, "it is not part of the fleet")
        if host is None:
            raise SandboxClosed(f"node {node_id[:12]} was lost: {gone}")
        try:
            return ray.get(getattr(host, method).remote(*args, **kw), timeout=wait)
        except RayActorError as exc:
            reason = f"its sandbox host died ({type(exc).__name__})"
            self.node_lost(node_id, reason)
            raise SandboxClosed(f"node {node_id[:12]} was lost: {reason}") from exc
        except RayTaskError as exc:
            raise exc.as_instanceof_cause() from None

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


class FleetSession(Session):
    """A persistent bash in a fleet sandbox, kept by its node's host."""

    def __init__(self, fleet: Fleet, node_id: str, session_id: str) -> None:
        self._fleet = fleet
        self._node = node_id
        self.id = session_id
        self._closed = False

    def run(self, cmd: str, *, timeout: float | None = DEFAULT_TIMEOUT) -> ExecResult:
        if self._closed:
            raise SandboxClosed(f"session {self.id} is closed")
        check_timeout(timeout)
        wait = None if timeout is None else timeout + COMMAND_MARGIN
        found = self._fleet.ask(self._node, "run_session", self.id, cmd, timeout, wait=wait)
        return ExecResult.model_validate(found)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(SandboxClosed):
                self._fleet.ask(self._node, "close_session", self.id)


class FleetSnapshot(Snapshot):
    """A snapshot on one node of the fleet; its forks start on that node."""

    def __init__(self, fleet: Fleet, node_id: str, snapshot_id: str, source: str) -> None:
        self._fleet = fleet
        self.node_id = node_id
        self._id = snapshot_id
        self._source = source

    @property
    def id(self) -> str:
        return self._id

    @property
    def source(self) -> str:
        return self._source

    def fork(self, **overrides: Any) -> FleetSandbox:
        made = self._fleet.ask(self.node_id, "fork_snapshot", self.id, overrides)
        return self._fleet.adopt(self.node_id, made)

    def remove(self) -> None:
        self._fleet.ask(self.node_id, "remove_snapshot", self.id)


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

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(SandboxClosed):
            _, node = self._fleet.host(self.id)
            self._fleet.ask(node, "close", self.id)
        self._fleet.forget(self.id)

    def __repr__(self) -> str:
        return f"FleetSandbox({self.id!r}, node={self.node_id[:12]!r})"

    def _ask(
        self, method: str, *args: Any, wait: float | None = HOST_CALL_TIMEOUT, **kw: Any
    ) -> Any:
        """A method of the host about this sandbox (SandboxClosed once closed or lost)."""
        self.check_open()
        _, node = self._fleet.host(self.id)
        return self._fleet.ask(node, method, self.id, *args, wait=wait, **kw)

    def _call(
        self, method: str, *args: Any, wait: float | None = HOST_CALL_TIMEOUT, **kw: Any
    ) -> Any:
        """A method of the sandbox itself, run by the host."""
        return self._ask("call", method, *args, wait=wait, **kw)

    # -- commands ------------------------------------------------------------------------------
    def exec(
        self,
        cmd: Command,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        stdin: bytes | str | None = None,
        on_output: OutputCallback | None = None,
        user: str | int | None = None,
    ) -> ExecResult:
        """As `Sandbox.exec`; `on_output` gets the whole output once the command ends."""
        cmd = check_command(cmd)
        check_timeout(timeout)
        wait = None if timeout is None else timeout + COMMAND_MARGIN
        options = {"timeout": timeout, "cwd": cwd, "env": check_env(env) or None}
        options |= {"stdin": stdin, "user": user}
        found = self._call("exec", cmd, wait=wait, **options)
        res = ExecResult.model_validate(found)
        if on_output is not None:
            for stream in ("stdout", "stderr"):
                if text := getattr(res, stream):
                    on_output(stream, text.encode())
        return res

    def session(
        self,
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        user: str | int | None = None,
    ) -> FleetSession:
        session_id = self._ask("open_session", cwd, check_env(env) or None, user)
        return FleetSession(self._fleet, self.node_id, session_id)

    def kill_all(self) -> int:
        return int(self._call("kill_all"))

    def audit_log(self) -> list[dict]:
        return self._call("audit_log")

    def events(self) -> list[dict]:
        return self._call("events")

    def set_network(self, network: str | dict[str, Any]) -> None:
        self._call("set_network", network)

    # -- files ---------------------------------------------------------------------------------
    def read_bytes(self, path: str, max_bytes: int | None = MAX_READ) -> bytes:
        return self._call("read_bytes", path, max_bytes)

    def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._call("write_bytes", path, check_data(data), mode)

    def list_dir(self, path: str = ".") -> list[FileInfo]:
        return [FileInfo.model_validate(i) for i in self._call("list_dir", path)]

    def remove(self, path: str) -> bool:
        return bool(self._call("remove", path))

    def exists(self, path: str) -> bool:
        return bool(self._call("exists", path))

    def is_dir(self, path: str) -> bool:
        return bool(self._call("is_dir", path))

    def write_tar(self, path: str, out: BinaryIO, max_bytes: int | None = MAX_TREE) -> None:
        out.write(self._call("read_tree", path, max_bytes))

    def write_tree(
        self, path: str, archive: bytes | BinaryIO, *, owner: str | int | None = None
    ) -> None:
        data = bytes(archive) if isinstance(archive, bytes | bytearray) else archive.read()
        self._call("write_tree", path, data, owner=owner)

    # -- snapshots -----------------------------------------------------------------------------
    def snapshot(self) -> FleetSnapshot:
        """As `Sandbox.snapshot`; the snapshot stays on this sandbox's node (kept by its host
        until `remove()`d or the fleet shuts down)."""
        found = self._ask("snapshot")
        return FleetSnapshot(self._fleet, self.node_id, found["id"], found["source"])

    def fork(self, **overrides: Any) -> FleetSandbox:
        """As `Sandbox.fork`; the new sandbox runs on the same node (its files are there)."""
        made = self._ask("fork", overrides)
        return self._fleet.adopt(self.node_id, made)
