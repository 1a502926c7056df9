"""The default backend: a user namespace, bubblewrap namespaces, cgroup limits and seccomp.

Each sandbox is `launcher -> bwrap -> rockroll-init`. The launcher (the init binary in launch
mode) joins the sandbox's cgroups, makes the sandbox's user namespace (its ids 0..65535 are
unprivileged host ids, see `idmap`), mounts the idmapped root in a mount namespace of its own,
enters the user namespace as its root and execs bwrap, which makes the other namespaces (owned
by that user namespace), keeps Docker's default capabilities there, masks /proc like runc and
loads the seccomp filter. The host process is never forked with a pre-exec hook, so spawning
stays cheap for callers holding gigabytes of memory. Launchers are parked ahead of time (see
`_Pool`): joining a cgroup can stall for an RCU grace period, and a parked launcher has already
paid it (and made its user namespace).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import select
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rockroll.errors import SandboxNotFound, SetupError
from rockroll.sandbox.backend import Backend
from rockroll.sandbox.cgroups import CgroupSet, existing_sandbox_ids
from rockroll.sandbox.disk import DEFAULT_DISK, discard_disk, new_disk, throw_away
from rockroll.sandbox.idmap import COUNT as ID_COUNT
from rockroll.sandbox.idmap import id_base
from rockroll.sandbox.initbin import init_binary, init_memfd
from rockroll.sandbox.monitors import monitor_settings, start_supervisor
from rockroll.sandbox.paths import home_subdir, home_tag, searchable_dir
from rockroll.sandbox.records import SandboxRecord, list_records, new_id
from rockroll.sandbox.seccomp import bpf_program
from rockroll.sandbox.spec import DEFAULT_PATH

READY_TIMEOUT = 30.0
# Docker's default capabilities but CAP_NET_RAW (podman drops it too): what root inside needs for
# useradd, su, setpriv, apt's _apt sandbox and chown. They hold only inside the sandbox's user
# namespace, over its own ids, files and namespaces; none is a host capability.
SANDBOX_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
    "CAP_KILL", "CAP_AUDIT_WRITE",
)  # fmt: skip
# runc's (and Docker's) /proc policy: read-only, or hidden behind /dev/null or an empty tmpfs.
PROC_READONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
PROC_MASKED = (
    "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/proc/kallsyms", "/proc/kmsg",
)  # fmt: skip
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Where each launcher mounts its sandbox's root, in its own mount namespace (the host's copy of
# the directory stays empty): bwrap, running as the sandbox's root, resolves the path it binds,
# so it must be one that unprivileged ids can search (unlike a home under /root).
ROOT_MOUNT = Path("/run/rockroll/root")
LAYERS_MOUNT = Path("/run/rockroll/layers")  # where its layers are mounted, the same way
POOL_SIZE = int(os.environ.get("ROCKROLL_POOL", "2"))


@dataclass
class _Parked:
    """A launcher waiting inside fresh cgroups, with the fds its bwrap will inherit and, when
    `image` is set, that disk (DEFAULT_DISK bytes, default inodes) already mounted."""

    cgroups: CgroupSet
    proc: subprocess.Popen
    sock_path: str
    log_path: str
    go_fd: int
    ready_fd: int
    fds: dict[str, int]  # numbers as seen by the launcher
    monitor: subprocess.Popen  # the supervisor (supervisor.py), waiting for its settings
    image: str | None = None  # the file of the mounted disk

    def start_monitor(self, settings: dict | None) -> None:
        """Send the supervisor its settings, or tell it the sandbox runs unwatched (it exits)."""
        stdin = self.monitor.stdin
        if stdin is None or stdin.closed:
            return
        with contextlib.suppress(BrokenPipeError):
            if settings is not None:
                stdin.write((json.dumps(settings) + "\n").encode())
            stdin.close()

    def close_go(self) -> None:
        """Close the command pipe once (a stale fd number may belong to someone else later)."""
        if self.go_fd >= 0:
            os.close(self.go_fd)
            self.go_fd = -1

    def close_ready(self) -> None:
        if self.ready_fd >= 0:
            os.close(self.ready_fd)
            self.ready_fd = -1

    def cancel(self) -> None:
        self.close_go()
        self.close_ready()
        self.start_monitor(None)
        with contextlib.suppress(OSError):
            self.cgroups.destroy()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=2)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.monitor.wait(timeout=2)
        for path in filter(None, (self.sock_path, self.log_path, self.image)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _park() -> _Parked:
    """Start a launcher in new cgroups; it waits for its bwrap command on a pipe, its user
    namespace made and the default disk mounted."""
    run_dir = home_subdir("run")
    name = f"{home_tag()}_p{os.getpid()}-{new_id()}"
    image: Path | None = run_dir / f"{name}.img"
    try:
        new_disk(image, DEFAULT_DISK, None)
    except SetupError:  # no mkfs.ext4: sandboxes with disk=None still start; others will say so
        image = None
    cgroups = CgroupSet.create(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock_path = str(run_dir / f"{name}.sock")
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    exe_fd = init_memfd()
    bpf_fd = os.memfd_create("rockroll-seccomp", os.MFD_CLOEXEC)
    watcher, watched = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fds = {"exe": exe_fd, "listen": listener.fileno(), "ready": ready_w, "bpf": bpf_fd}
    fds["monitor"] = watched.fileno()
    try:
        listener.bind(sock_path)
        os.chmod(sock_path, 0o600)
        listener.listen(4096)
        os.write(bpf_fd, bpf_program())
        os.lseek(bpf_fd, 0, os.SEEK_SET)
        argv = [str(init_binary()), "launch", "--wait-fd", str(go_r), "--joined-fd", str(ready_w)]
        argv += ["--userns", str(id_base()), str(ID_COUNT)]
        if image is not None:
            argv += ["--park-disk", str(image), _mount_point(LAYERS_MOUNT)]
        for procs in cgroups.procs_files():
            argv += ["--cgroup-procs", procs]
        log_path = str(run_dir / f"{name}.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(go_r, *fds.values()),
                start_new_session=True,
                env={"PATH": DEFAULT_PATH},
            )
        monitor = start_supervisor(watcher, proc.pid, log_path)
    except BaseException:
        os.close(go_w)
        os.close(ready_r)
        cgroups.destroy()
        if image is not None:
            image.unlink(missing_ok=True)
        raise
    finally:
        for fd in (go_r, ready_w, bpf_fd):
            os.close(fd)
        listener.close()
        watcher.close()
        watched.close()
    parked = _Parked(cgroups, proc, sock_path, log_path, go_w, ready_r, fds, monitor)
    parked.image = str(image) if image is not None else None
    if _read_byte(ready_r, READY_TIMEOUT) != b"J":
        parked.cancel()
        raise SetupError(f"the sandbox launcher did not start: {_tail(log_path)}")
    return parked


def _read_byte(fd: int, timeout: float) -> bytes:
    readable, _, _ = select.select([fd], [], [], timeout)
    return os.read(fd, 1) if readable else b""


def _tail(path: str) -> str:
    try:
        with open(path, errors="replace") as fh:
            return fh.read()[-2000:].strip() or "no output"
    except OSError:
        return "no output"


class _Pool:
    """Keeps a few parked launchers ready; a background thread refills it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: list[_Parked] = []
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.closed = False

    def take(self) -> _Parked:
        with self.cond:
            if self.thread is None and self.size > 0:
                self.thread = threading.Thread(target=self._fill, name="rockroll-pool", daemon=True)
                self.thread.start()
                atexit.register(self.close)
            item = self.items.pop() if self.items else None
            self.cond.notify_all()
        return item if item is not None else _park()

    def _fill(self) -> None:
        while True:
            with self.cond:
                while not self.closed and len(self.items) >= self.size:
                    self.cond.wait()
                if self.closed:
                    return
            try:
                parked = _park()
            except Exception:
                time.sleep(1.0)
                continue
            with self.cond:
                if self.closed:
                    parked.cancel()
                    return
                self.items.append(parked)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            items, self.items = self.items, []
            self.cond.notify_all()
        for item in items:
            item.cancel()


_POOL = _Pool(POOL_SIZE)
_STARTING: dict[str, _Parked] = {}
_LAUNCHED: dict[str, subprocess.Popen] = {}
_MONITORS: dict[str, subprocess.Popen] = {}


class BwrapBackend(Backend):
    name = "bwrap"

    def check(self) -> None:
        if shutil.which("bwrap") is None:
            raise SetupError("bubblewrap is not installed; run `apt-get install bubblewrap`")
        if os.geteuid() != 0:
            raise SetupError(
                "the bwrap backend mounts overlays and cgroups and needs root; run as root"
            )
        with open("/proc/sys/user/max_user_namespaces") as fh:
            if int(fh.read()) == 0:
                raise SetupError(
                    "user namespaces are disabled; run `sysctl -w user.max_user_namespaces=15000`"
                )

    def launch(self, rec: SandboxRecord) -> int:
        """Hand a parked launcher its command; the limits are written while bwrap starts."""
        spec = rec.spec
        parked = _POOL.take()
        try:
            rec.cgroup = parked.cgroups.sandbox_id
            os.rename(parked.sock_path, rec.sock)
            parked.sock_path = rec.sock
            os.rename(parked.log_path, rec.dir / "backend.log")
            parked.log_path = str(rec.dir / "backend.log")
            rec.id_base = id_base()
            ready = parked.image is not None and (spec.disk, spec.inodes) == (DEFAULT_DISK, None)
            if ready and parked.image:  # the sandbox's directory owns the image from now on
                os.rename(parked.image, rec.disk_image)
                parked.image = str(rec.disk_image)
            else:  # the launcher lets its disk go for the one asked for
                if parked.image:
                    throw_away(Path(parked.image))
                    parked.image = None
                if spec.disk:
                    new_disk(rec.disk_image, spec.disk, spec.inodes)
            root = rec.root_args(_mount_point(ROOT_MOUNT), str(LAYERS_MOUNT), parked=ready)
            argv = [*root, *self._bwrap_args(rec, parked.fds["bpf"])]
            argv += [f"/proc/self/fd/{parked.fds['exe']}", "serve"]
            argv += ["--listen-fd", str(parked.fds["listen"])]
            argv += ["--ready-fd", str(parked.fds["ready"])]
            if spec.monitor:
                argv += ["--monitor-fd", str(parked.fds["monitor"])]
            parked.start_monitor(monitor_settings(rec) if spec.monitor else None)
            rec.monitor_pid = parked.monitor.pid if spec.monitor else None
            os.write(parked.go_fd, b"".join(a.encode() + b"\0" for a in argv))
            parked.close_go()
            parked.cgroups.set_limits(spec.memory, spec.pids, spec.cpus)
        except BaseException:
            parked.cancel()
            raise
        _STARTING[rec.id] = parked
        return parked.proc.pid

    def set_limits(self, rec: SandboxRecord) -> None:
        CgroupSet.attach(str(rec.cgroup)).set_limits(rec.spec.memory, rec.spec.pids, rec.spec.cpus)

    def wait_ready(self, rec: SandboxRecord) -> None:
        parked = _STARTING.pop(rec.id)
        _LAUNCHED[rec.id] = parked.proc
        _MONITORS[rec.id] = parked.monitor
        try:
            self._wait_ready(rec, parked.ready_fd, parked.proc)
        finally:
            parked.close_ready()

    def root(self, rec: SandboxRecord) -> str:
        """The overlay lives in the launcher's mount namespace; /proc/PID/root reaches it."""
        return f"/proc/{rec.backend_pid}/root{ROOT_MOUNT}"

    def upper(self, rec: SandboxRecord) -> str:
        """The writable layer as stored (ids not shifted): a disk is mounted only in the
        launcher's mount namespace, reached through /proc/PID/root like the root."""
        if rec.spec.disk:
            return f"/proc/{rec.backend_pid}/root{LAYERS_MOUNT}/d/upper"
        return str(rec.fsdir / "upper")

    def _bwrap_args(self, rec: SandboxRecord, bpf_fd: int) -> list[str]:
        """bwrap runs as root of the sandbox's user namespace (the launcher entered it), so the
        namespaces it makes belong to that user namespace, not to the host."""
        args = ["bwrap", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup"]
        args += ["--cap-drop", "ALL"]
        for cap in SANDBOX_CAPS:
            args += ["--cap-add", cap]
        args += ["--new-session", "--as-pid-1", "--hostname", "sandbox"]
        args += ["--bind", str(ROOT_MOUNT), "/"]
        args += ["--proc", "/proc", "--dev", "/dev", *_proc_policy(), "--seccomp", str(bpf_fd)]
        if rec.spec.own_network():
            args.append("--unshare-net")
        else:
            args += _host_files("/etc/resolv.conf")
        if rec.spec.profile == "build":
            args += _host_files(HOST_CA_BUNDLE)
        return [*args, "--chdir", "/", "--"]

    def _wait_ready(self, rec: SandboxRecord, ready_r: int, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            readable, _, _ = select.select([ready_r], [], [], 0.5)
            if readable:
                if os.read(ready_r, 2).startswith(b"R"):
                    return
                break
            if proc.poll() is not None:
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)
        raise SetupError(_explain(rec, proc))

    def _cgroups(self, rec: SandboxRecord) -> CgroupSet | None:
        if rec.cgroup is None:
            return None
        try:
            return CgroupSet.attach(rec.cgroup)
        except SandboxNotFound:
            return None

    def destroy(self, rec: SandboxRecord) -> None:
        starting = _STARTING.pop(rec.id, None)
        if starting is not None:
            starting.cancel()
        if rec.spec.disk and rec.backend_pid:
            discard_disk(f"/proc/{rec.backend_pid}/root{LAYERS_MOUNT}/d")
        cgroups = self._cgroups(rec)
        if cgroups is not None:
            cgroups.destroy()
        proc = _LAUNCHED.pop(rec.id, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        monitor = _MONITORS.pop(rec.id, None)
        if monitor is not None:  # it ends when the launcher does, after its last event
            with contextlib.suppress(subprocess.TimeoutExpired):
                monitor.wait(timeout=5)

    def running(self, rec: SandboxRecord) -> bool:
        cgroups = self._cgroups(rec)
        return cgroups is not None and bool(cgroups.pids())

    def freeze(self, rec: SandboxRecord) -> None:
        CgroupSet.attach(str(rec.cgroup)).freeze()

    def thaw(self, rec: SandboxRecord) -> None:
        CgroupSet.attach(str(rec.cgroup)).thaw()

    def leftovers(self, known: set[str]) -> list[str]:
        """Our home's cgroups, and parked launchers' sockets and logs, that no sandbox record
        uses and whose launching process is gone.

        Records are read now, not taken from `known`: a sandbox created since gc listed the
        live ones has a record by the time its launching process can have exited.
        """
        prefix = home_tag() + "_p"
        used = {rec.cgroup for rec in list_records()}
        names = set(existing_sandbox_ids())
        names |= {p.name.rsplit(".", 1)[0] for p in home_subdir("run").glob(f"{prefix}*")}
        found = []
        for name in names:
            if not name.startswith(prefix) or name in used:
                continue
            pid = name[len(prefix) :].split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                found.append(name)
        return sorted(found)

    def remove_leftover(self, name: str) -> None:
        with contextlib.suppress(SandboxNotFound):
            CgroupSet.attach(name).destroy()
        run_dir = home_subdir("run")
        for suffix in (".sock", ".log", ".img"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(run_dir / f"{name}{suffix}")


@functools.cache
def _mount_point(path: Path) -> str:
    """An empty host directory every launcher mounts over in its own mount namespace."""
    return str(searchable_dir(path))


@functools.cache
def _proc_policy() -> list[str]:
    """bwrap arguments for runc's /proc policy, for the entries this kernel has (the host's
    /proc has the same ones). Read-only binds come from the host's /proc: the files under
    /proc/sys answer for the namespaces of the process reading them, not of the mount."""
    args: list[str] = []
    for path in PROC_READONLY:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    for path in PROC_MASKED:
        if os.path.isdir(path):
            args += ["--tmpfs", path, "--remount-ro", path]
        elif os.path.exists(path):  # /dev/null over it, as runc does: reads empty, writes vanish
            args += ["--dev-bind", "/dev/null", path]
    return args


def _host_files(*paths: str) -> list[str]:
    """Read-only binds of host files that exist, at the same path in the sandbox."""
    args = []
    for path in paths:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    return args


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _explain(rec: SandboxRecord, proc: subprocess.Popen) -> str:
    """Turn bwrap's last words into advice."""
    try:
        text = (rec.dir / "backend.log").read_text(errors="replace").strip()
    except OSError:
        text = ""
    hint = ""
    if "namespace" in text.lower() and ("permission" in text.lower() or "denied" in text.lower()):
        hint = " User namespaces look unavailable: check `sysctl user.max_user_namespaces`."
    elif "bwrap:" in text and "No such file" in text:
        hint = " The image may be incomplete: rebuild it with `rockroll image build --force`."
    return (
        f"sandbox {rec.id} did not start (backend exit code {proc.returncode}): "
        f"{text or 'no output'}.{hint}"
    )
