"""The default backend: bubblewrap namespaces, cgroup limits and a seccomp filter.

Each sandbox is `launcher -> bwrap -> rockroll-init`: the launcher (the init binary in launch
mode) puts itself into the sandbox's cgroups and execs bwrap, so the host process is never forked
with a pre-exec hook and spawning stays cheap for callers holding gigabytes of memory.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import time

from rockroll.sandbox.backend import Backend
from rockroll.sandbox.cgroups import CgroupSet, existing_sandbox_ids
from rockroll.sandbox.errors import SetupError
from rockroll.sandbox.initbin import init_binary
from rockroll.sandbox.seccomp import bpf_program
from rockroll.sandbox.spec import DEFAULT_PATH
from rockroll.sandbox.state import SandboxRecord

READY_TIMEOUT = 30.0


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
        spec = rec.spec
        cgroups = CgroupSet.create(rec.id, memory=spec.memory, pids=spec.pids, cpus=spec.cpus)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        exe_fd = os.open(init_binary(), os.O_RDONLY | os.O_CLOEXEC)
        bpf_fd = os.memfd_create("rockroll-seccomp", os.MFD_CLOEXEC)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(rec.sock)
            listener.bind(rec.sock)
            os.chmod(rec.sock, 0o600)
            listener.listen(4096)
            os.write(bpf_fd, bpf_program())
            os.lseek(bpf_fd, 0, os.SEEK_SET)
            argv = [str(init_binary()), "launch"]
            for procs in cgroups.procs_files():
                argv += ["--cgroup-procs", procs]
            argv += ["--", *self._bwrap_args(rec, bpf_fd)]
            argv += [f"/proc/self/fd/{exe_fd}", "serve", "--listen-fd", str(listener.fileno())]
            argv += ["--ready-fd", str(ready_w)]
            with open(rec.dir / "backend.log", "wb") as log:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=(exe_fd, listener.fileno(), ready_w, bpf_fd),
                    start_new_session=True,
                    env={"PATH": DEFAULT_PATH},
                )
        finally:
            for fd in (ready_w, exe_fd, bpf_fd):
                os.close(fd)
            listener.close()
        _LAUNCHED[rec.id] = proc
        try:
            self._wait_ready(rec, ready_r, proc)
        except BaseException:
            self.destroy(rec)
            raise
        finally:
            os.close(ready_r)
        return proc.pid

    def _bwrap_args(self, rec: SandboxRecord, bpf_fd: int) -> list[str]:
        args = ["bwrap", "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        args += ["--unshare-cgroup", "--cap-drop", "ALL", "--new-session"]
        args += ["--hostname", "sandbox", "--bind", str(rec.merged), "/"]
        args += ["--proc", "/proc", "--dev", "/dev", "--seccomp", str(bpf_fd)]
        if rec.spec.network == "none":
            args.append("--unshare-net")
        elif os.path.exists("/etc/resolv.conf"):
            args += ["--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"]
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
        raise SetupError(_explain(rec, proc.returncode))

    def destroy(self, rec: SandboxRecord) -> None:
        CgroupSet.attach(rec.id).destroy()
        proc = _LAUNCHED.pop(rec.id, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def running(self, rec: SandboxRecord) -> bool:
        return bool(CgroupSet.attach(rec.id).pids())

    def freeze(self, rec: SandboxRecord) -> None:
        CgroupSet.attach(rec.id).freeze()

    def thaw(self, rec: SandboxRecord) -> None:
        CgroupSet.attach(rec.id).thaw()

    def leftovers(self, known: set[str]) -> list[str]:
        return sorted(existing_sandbox_ids() - known)

    def remove_leftover(self, name: str) -> None:
        CgroupSet.attach(name).destroy()


_LAUNCHED: dict[str, subprocess.Popen] = {}


def _explain(rec: SandboxRecord, code: int | None) -> str:
    """Turn bwrap's last words into advice."""
    try:
        log = (rec.dir / "backend.log").read_text(errors="replace").strip()
    except OSError:
        log = ""
    hint = ""
    if "namespace" in log.lower() and ("permission" in log.lower() or "denied" in log.lower()):
        hint = " User namespaces look unavailable: check `sysctl user.max_user_namespaces`."
    elif "No such file" in log:
        hint = " The image may be incomplete: rebuild it with `rockroll image build --force`."
    return f"sandbox {rec.id} did not start (backend exit code {code}): {log or 'no output'}.{hint}"
