"""The default backend: bubblewrap namespaces, cgroup limits and a seccomp filter.

Each sandbox is `launcher -> bwrap -> rockroll-init`. The launcher (the init binary in launch
mode) joins the sandbox's cgroups and then execs bwrap, so the host process is never forked with
a pre-exec hook and spawning stays cheap for callers holding gigabytes of memory. Launchers are
parked ahead of time (see `_Pool`): joining a cgroup can stall for an RCU grace period, and a
parked launcher has already paid it.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import os
import select
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rockroll.sandbox.backend import Backend
from rockroll.sandbox.cgroups import CgroupSet, existing_sandbox_ids
from rockroll.sandbox.errors import SandboxNotFound, SetupError
from rockroll.sandbox.initbin import init_binary
from rockroll.sandbox.paths import home_subdir, rockroll_home
from rockroll.sandbox.seccomp import bpf_program
from rockroll.sandbox.spec import DEFAULT_PATH
from rockroll.sandbox.state import SandboxRecord, list_records, new_id

READY_TIMEOUT = 30.0
# What `docker build` grants a RUN step; a build sandbox has no user namespace, like Docker.
DOCKER_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)  # fmt: skip
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
POOL_SIZE = int(os.environ.get("ROCKROLL_POOL", "2"))


def home_tag() -> str:
    """Cgroup names carry the home's hash, so gc under one home never touches another's."""
    return _tag(str(rockroll_home()))


@functools.cache
def _tag(home: str) -> str:
    return hashlib.sha256(str(Path(home).resolve()).encode()).hexdigest()[:8]


@dataclass
class _Parked:
    """A launcher waiting inside fresh cgroups, with the fds its bwrap will inherit."""

    cgroups: CgroupSet
    proc: subprocess.Popen
    sock_path: str
    log_path: str
    go_fd: int
    ready_fd: int
    fds: dict[str, int]  # numbers as seen by the launcher

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
        with contextlib.suppress(OSError):
            self.cgroups.destroy()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=2)
        for path in (self.sock_path, self.log_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _park() -> _Parked:
    """Start a launcher in new cgroups; it waits for its bwrap command on a pipe."""
    run_dir = home_subdir("run")
    name = f"{home_tag()}_p{os.getpid()}-{new_id()}"
    cgroups = CgroupSet.create(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock_path = str(run_dir / f"{name}.sock")
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    exe_fd = os.open(init_binary(), os.O_RDONLY | os.O_CLOEXEC)
    bpf_fd = os.memfd_create("rockroll-seccomp", os.MFD_CLOEXEC)
    fds = {"exe": exe_fd, "listen": listener.fileno(), "ready": ready_w, "bpf": bpf_fd}
    try:
        listener.bind(sock_path)
        os.chmod(sock_path, 0o600)
        listener.listen(4096)
        os.write(bpf_fd, bpf_program())
        os.lseek(bpf_fd, 0, os.SEEK_SET)
        argv = [str(init_binary()), "launch", "--wait-fd", str(go_r), "--joined-fd", str(ready_w)]
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
    except BaseException:
        os.close(go_w)
        os.close(ready_r)
        cgroups.destroy()
        raise
    finally:
        for fd in (go_r, ready_w, exe_fd, bpf_fd):
            os.close(fd)
        listener.close()
    parked = _Parked(cgroups, proc, sock_path, log_path, go_w, ready_r, fds)
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
            argv = ["--overlay", rec.overlay_options(), str(rec.merged)]
            argv += self._bwrap_args(rec, parked.fds["bpf"])
            argv += [f"/proc/self/fd/{parked.fds['exe']}", "serve"]
            argv += ["--listen-fd", str(parked.fds["listen"])]
            argv += ["--ready-fd", str(parked.fds["ready"])]
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
        try:
            self._wait_ready(rec, parked.ready_fd, parked.proc)
        finally:
            parked.close_ready()

    def root(self, rec: SandboxRecord) -> str:
        """The overlay lives in the launcher's mount namespace; /proc/PID/root reaches it."""
        return f"/proc/{rec.backend_pid}/root{rec.merged}"

    def _bwrap_args(self, rec: SandboxRecord, bpf_fd: int) -> list[str]:
        build = rec.spec.profile == "build"
        args = ["bwrap"] if build else ["bwrap", "--unshare-user"]
        args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup"]
        args += ["--cap-drop", "ALL"]
        for cap in DOCKER_CAPS if build else ():
            args += ["--cap-add", cap]
        args += ["--new-session", "--as-pid-1", "--hostname", "sandbox"]
        args += ["--bind", str(rec.merged), "/"]
        args += ["--proc", "/proc", "--dev", "/dev", "--seccomp", str(bpf_fd)]
        if rec.spec.network == "none":
            args.append("--unshare-net")
        else:
            args += _host_files("/etc/resolv.conf")
        if build:
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
        cgroups = self._cgroups(rec)
        if cgroups is not None:
            cgroups.destroy()
        proc = _LAUNCHED.pop(rec.id, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def running(self, rec: SandboxRecord) -> bool:
        cgroups = self._cgroups(rec)
        return cgroups is not None and bool(cgroups.pids())

    def freeze(self, rec: SandboxRecord) -> None:
        CgroupSet.attach(str(rec.cgroup)).freeze()

    def thaw(self, rec: SandboxRecord) -> None:
        CgroupSet.attach(str(rec.cgroup)).thaw()

    def leftovers(self, known: set[str]) -> list[str]:
        """Our home's cgroups that no sandbox record uses and whose launching process is gone.

        Records are read now, not taken from `known`: a sandbox created since gc listed the
        live ones has a record by the time its launching process can have exited.
        """
        prefix = home_tag() + "_p"
        used = {rec.cgroup for rec in list_records()}
        found = []
        for name in existing_sandbox_ids():
            if not name.startswith(prefix) or name in used:
                continue
            if not _pid_alive(int(name[len(prefix) :].split("-", 1)[0])):
                found.append(name)
        return sorted(found)

    def remove_leftover(self, name: str) -> None:
        CgroupSet.attach(name).destroy()
        run_dir = home_subdir("run")
        for suffix in (".sock", ".log"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(run_dir / f"{name}{suffix}")


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
