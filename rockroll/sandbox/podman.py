"""The podman backend: each sandbox is an OCI container run by podman and runc.

The container's root is the sandbox's overlay with idmapped layers, mounted on the host by
`rockroll-init mount` (`--rootfs`), so files, snapshots, forks and disk limits work exactly as
with bwrap, and the container runs in a user namespace with the same mapping (`--uidmap`): root
inside is an unprivileged host id. Like bwrap, the host binds `rec.sock` itself and hands the
listening socket to the init with `--preserve-fds`, and the init itself is a sealed memfd passed
the same way and executed as /proc/self/fd/5: nothing of the host is mounted into the sandbox,
so a sandboxed root can neither replace the socket or the init nor point the host elsewhere.

Host-specific choices, measured with podman 4.3 on a cgroup v1/v2 hybrid host: crun refuses that
layout and the systemd cgroup manager needs systemd, hence runc with cgroupfs; root without
CAP_SYS_RESOURCE cannot raise rlimits, hence explicit `--ulimit`s within the current limits.
Network "full" is the host's network (`--network host`), as with bwrap: it needs no bridge or
slirp setup and works offline. Capabilities are bwrap's (Docker's default set but NET_RAW,
inside the user namespace only), with no_new_privs; runc masks /proc as Docker does.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from rockroll.errors import InvalidArgument, SandboxError, SetupError
from rockroll.sandbox.backend import Backend
from rockroll.sandbox.bwrap import SANDBOX_CAPS
from rockroll.sandbox.disk import new_disk
from rockroll.sandbox.files import RootFS
from rockroll.sandbox.idmap import COUNT as ID_COUNT
from rockroll.sandbox.idmap import id_base
from rockroll.sandbox.initbin import init_binary, init_memfd
from rockroll.sandbox.mounts import mounts_under, unmount
from rockroll.sandbox.paths import rockroll_home, searchable_dir
from rockroll.sandbox.records import SandboxRecord, sandboxes_dir
from rockroll.sandbox.seccomp import oci_profile

READY_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0
PREFIX = "rockroll-"
HOME_LABEL = "rockroll.home"
INIT_FD = 5  # the sealed memfd of the init, as the container sees it
# runc mounts the root as the container's root, an unprivileged id, which must be able to reach
# it: roots live under this world-searchable directory (the home may be under /root, 0700).
ROOTS = Path("/run/rockroll/podman")
# No event log: it grows by a few lines per container and writing it costs ~20 ms per command.
GLOBAL_ARGS = ("--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "none")
# RLIMIT_NPROC counts every uid 0 process of the host (no user namespace), so it must stay out of
# the way of the pids cgroup, the real limit; conmon runs with a hard limit of 32768 and runc
# cannot raise it without CAP_SYS_RESOURCE.
NPROC = 32768
_INSTALL = "run `apt-get install podman runc`"


class PodmanBackend(Backend):
    name = "podman"

    def check(self) -> None:
        missing = [p for p in ("podman", "runc", "conmon") if shutil.which(p) is None]
        if missing:
            raise SetupError(f"the podman backend needs {', '.join(missing)}; {_INSTALL}")
        if os.geteuid() != 0:
            raise SetupError("the podman backend mounts overlays and needs root; run as root")

    def launch(self, rec: SandboxRecord) -> int:
        rec.id_base = id_base()
        if rec.spec.disk:
            new_disk(rec.disk_image, rec.spec.disk, rec.spec.inodes)
        mount = [str(init_binary()), "mount", "--userns", str(rec.id_base), str(ID_COUNT)]
        root = _root_dir(rec, create=True)
        rec.mnt.mkdir(exist_ok=True)
        done = subprocess.run(
            [*mount, *rec.root_args(str(root))], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SetupError(f"sandbox {rec.id}: mounting its root failed: {done.stderr.strip()}")
        _premake(RootFS(str(root), rec.id_base))
        (rec.dir / "seccomp.json").write_text(json.dumps(oci_profile()))
        argv = ["podman", *GLOBAL_ARGS, "run", *self._run_args(rec)]
        argv += ["--rootfs", str(root), f"/proc/self/fd/{INIT_FD}", "serve"]
        argv += ["--listen-fd", "3", "--ready-fd", "4"]
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(rec.sock)
            listener.bind(rec.sock)
            os.chmod(rec.sock, 0o600)
            listener.listen(4096)
            pid = _spawn(argv, rec, listener.fileno(), ready_w)
        except BaseException:
            os.close(ready_r)
            raise
        finally:
            os.close(ready_w)
            listener.close()
        try:
            self._wait_ready(rec, pid, ready_r)
        except BaseException:
            with contextlib.suppress(OSError, SandboxError):
                self.destroy(rec)
            raise
        finally:
            os.close(ready_r)
        return self._host_pid(rec)

    def root(self, rec: SandboxRecord) -> str:
        return str(_root_dir(rec))

    def upper(self, rec: SandboxRecord) -> str:
        return str(rec.mnt / "d/upper" if rec.spec.disk else rec.fsdir / "upper")

    def _run_args(self, rec: SandboxRecord) -> list[str]:
        spec = rec.spec
        nofile_soft, nofile_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        nproc = min(NPROC, resource.getrlimit(resource.RLIMIT_NPROC)[1])
        args = ["-d", "--name", _name(rec.id), "--label", f"{HOME_LABEL}={rockroll_home()}"]
        args += ["--pidfile", str(rec.dir / "podman.pid"), "--preserve-fds", "3"]
        if spec.rules:
            raise InvalidArgument(
                "rules need the monitor, which the bwrap backend has and podman does not"
            )
        if spec.network not in ("none", "full"):
            raise InvalidArgument(
                f"network {spec.network!r}: egress policies need the bwrap backend (podman has "
                "'none' and 'full')"
            )
        args += ["--network", "none" if spec.network == "none" else "host"]
        ids = f"0:{rec.id_base}:{ID_COUNT}"
        args += ["--uidmap", ids, "--gidmap", ids]
        args += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
        for cap in SANDBOX_CAPS:
            args += ["--cap-add", cap]
        args += ["--security-opt", f"seccomp={rec.dir / 'seccomp.json'}"]
        args += ["--hostname", "sandbox", "--no-hosts", "--workdir", "/"]
        args += ["--ulimit", f"nofile={nofile_soft}:{nofile_hard}"]
        args += ["--ulimit", f"nproc={nproc}:{nproc}"]
        args += ["--pids-limit", str(spec.pids if spec.pids is not None else -1)]
        if spec.memory is not None:
            args += ["--memory", str(spec.memory), "--memory-swap", str(spec.memory)]
        if spec.cpus is not None:
            args += ["--cpus", str(spec.cpus)]
        return args

    def _wait_ready(self, rec: SandboxRecord, pid: int, ready_r: int) -> None:
        """Wait for both the init's ready byte and `podman run -d` to exit successfully."""
        deadline = time.monotonic() + READY_TIMEOUT
        pidfd = os.pidfd_open(pid)
        code: int | None = None
        ready = False
        try:
            while not (ready and code is not None):
                left = deadline - time.monotonic()
                waiting = [
                    fd for fd, done in ((ready_r, ready), (pidfd, code is not None)) if not done
                ]
                readable, _, _ = select.select(waiting, [], [], max(left, 0))
                if not readable:
                    raise SetupError(_explain(rec, code, f"timed out after {READY_TIMEOUT:.0f}s"))
                if pidfd in readable:
                    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
                    if code != 0:
                        raise SetupError(_explain(rec, code))
                if ready_r in readable:
                    if not os.read(ready_r, 2).startswith(b"R"):
                        if code is None:  # podman's own exit and words say more: wait for them
                            left = max(deadline - time.monotonic(), 0)
                            if select.select([pidfd], [], [], left)[0]:
                                code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
                        why = "the init exited before serving" if code == 0 else ""
                        raise SetupError(_explain(rec, code, why))
                    ready = True
        finally:
            if code is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            os.close(pidfd)

    def _host_pid(self, rec: SandboxRecord) -> int:
        with contextlib.suppress(OSError, ValueError):
            return int((rec.dir / "podman.pid").read_text())
        done = _podman("inspect", "--format", "{{.State.Pid}}", _name(rec.id))
        return int(done.stdout.strip() or 0)

    def destroy(self, rec: SandboxRecord) -> None:
        done = _podman("rm", "--force", "--time", "0", "--ignore", _name(rec.id))
        if done.returncode != 0 and self.running(rec):
            raise SandboxError(f"podman could not remove {_name(rec.id)}: {done.stderr.strip()}")
        root = _root_dir(rec)
        for mount in mounts_under(root.parent):
            if mount == root:
                unmount(mount)
        with contextlib.suppress(FileNotFoundError, OSError):
            root.rmdir()

    def running(self, rec: SandboxRecord) -> bool:
        done = _podman("container", "inspect", "--format", "{{.State.Status}}", _name(rec.id))
        return done.returncode == 0 and done.stdout.strip() in ("running", "paused")

    def freeze(self, rec: SandboxRecord) -> None:
        _checked("pause", _name(rec.id))

    def thaw(self, rec: SandboxRecord) -> None:
        _checked("unpause", _name(rec.id))

    def leftovers(self, known: set[str]) -> list[str]:
        """Our containers (this $ROCKROLL_HOME only) whose sandbox directory is gone.

        A container whose directory exists is the runtime's to judge: it may be one being
        created right now, after gc listed the live sandboxes.
        """
        if shutil.which("podman") is None:
            return []
        done = _podman(
            "ps",
            "--all",
            "--filter",
            f"label={HOME_LABEL}={rockroll_home()}",
            "--format",
            "{{.Names}}",
        )
        if done.returncode != 0:
            return []
        ids = {n.removeprefix(PREFIX) for n in done.stdout.split() if n.startswith(PREFIX)}
        return sorted(i for i in ids - known if not (sandboxes_dir() / i).exists())

    def remove_leftover(self, name: str) -> None:
        _podman("rm", "--force", "--time", "0", "--ignore", _name(name))


def _root_dir(rec: SandboxRecord, create: bool = False) -> Path:
    root = ROOTS / rec.id
    if create:
        searchable_dir(ROOTS)
        root.mkdir(exist_ok=True)
    return root


def _premake(fs: RootFS) -> None:
    """Make, as the sandbox's root, what podman would otherwise create in the root filesystem
    as host root (which the idmapped root cannot store): it then uses these as they are."""
    fs.makedirs("/run")
    fs.makedirs("/etc")
    if not fs.exists("/run/.containerenv"):
        fs.write_bytes("/run/.containerenv", b"")
    for name in ("/etc/resolv.conf", "/etc/hostname"):
        if not fs.exists(name):
            fs.write_bytes(name, b"")
    with contextlib.suppress(FileExistsError):  # a link whose target is not there yet
        fs.symlink("../proc/self/mounts", "/etc/mtab")


def _name(sandbox_id: str) -> str:
    return PREFIX + sandbox_id


def _podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *GLOBAL_ARGS, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def _checked(*args: str) -> None:
    done = _podman(*args)
    if done.returncode != 0:
        raise SandboxError(f"`podman {' '.join(args)}` failed: {done.stderr.strip()}")


def _spawn(argv: list[str], rec: SandboxRecord, listen_fd: int, ready_fd: int) -> int:
    """Start podman with the listener as fd 3, the ready pipe as fd 4, the init as fd 5.

    `--preserve-fds` passes exactly fds 3.. on, which subprocess cannot arrange without a
    pre-exec hook; posix_spawn's dup2 actions can, and spawn as cheaply as subprocess.
    """
    log = os.open(rec.dir / "backend.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    # Sources above the targets (0-4), so that no dup2 overwrites a source still to be copied.
    sources = (null, log, listen_fd, ready_fd, init_memfd())
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in sources]
    try:
        targets = ((high[0], 0), (high[1], 1), (high[1], 2), (high[2], 3), (high[3], 4))
        targets += ((high[4], INIT_FD),)
        actions = [(os.POSIX_SPAWN_DUP2, src, dst) for src, dst in targets]
        # conmon leaves files in its working directory (an `oom` marker after an OOM kill):
        # the sandbox's own directory, not wherever the caller happens to be
        argv = ["env", f"--chdir={rec.dir}", *argv]
        return os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions, setsid=True)
    finally:
        for fd in (log, null, *high):
            os.close(fd)


def _explain(rec: SandboxRecord, code: int | None, why: str = "") -> str:
    """Podman's and the init's last words, with advice for the failures seen on real hosts."""
    try:
        log = (rec.dir / "backend.log").read_text(errors="replace").strip()
    except OSError:
        log = ""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        logs = _podman("logs", _name(rec.id))
        log = "\n".join(filter(None, (log, logs.stdout.strip(), logs.stderr.strip())))
    hint = ""
    if "rlimit" in log:
        hint = " Raising rlimits needs CAP_SYS_RESOURCE; check `ulimit -n -u` of this process."
    elif "cgroup" in log.lower():
        hint = " runc with cgroupfs needs a writable /sys/fs/cgroup; run as root on the host."
    elif "runc" in log and "not found" in log:
        hint = f" {_INSTALL}."
    status = why or f"podman exit code {code}"
    return f"sandbox {rec.id} did not start ({status}): {log or 'no output'}.{hint}"
