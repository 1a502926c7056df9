"""Run the sandbox's cgroup, isolation and limit tests in a QEMU VM with cgroup v2 only.

The kernel is Debian's own (`linux-image-amd64`, fetched once with `apt-get download` into
`<rockroll home>/vm/`, never installed on the host), booted with `cgroup_no_v1=all
systemd.unified_cgroup_hierarchy=1`; the initramfs is busybox (`busybox-static`), the modules
the guest needs and tests/vm/init.sh. The host's root is shared into the guest read-only over
virtio-9p, so the guest runs this checkout with the host's Python, virtualenv and bubblewrap;
the checkout's sources themselves come from a copy made at boot (`SNAPSHOT`). An ext4 disk
holds the guest's rockroll home with a copy of the base image: the sandboxes' idmapped mounts
need a filesystem that has them, which 9p has not. The guest writes its pytest status, a JUnit
report and what it saw of its cgroups to a second, writable 9p share; its console goes to a
log file that is echoed here as it grows.

    python3 tests/vm/runner.py [PYTEST NODE IDS...]

prints progress while the guest boots and runs, and exits with the guest's pytest status (2
when the VM cannot run here). KVM is used when it boots the kernel here, TCG (software
emulation) otherwise; `ROCKROLL_VM_ACCEL=kvm` or `=tcg` makes the choice instead.
`ROCKROLL_VM_GUEST_CMD` runs a shell command in the guest instead of pytest (for debugging).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
INIT = Path(__file__).resolve().parent / "init.sh"

# What runs inside: every cgroup test, and the sandbox tests whose outcome depends on the limits
# and the kill/freeze paths (memory, pids, CPU, disk, timeouts, snapshots, the processes seen
# in the sandbox's cgroup); chosen to fit about two minutes under software emulation on two
# vCPUs (the HTTP service's variants are left out: its start alone takes a minute there).
GUEST_TESTS = (
    "tests/sandbox/test_cgroups.py",
    "tests/sandbox/test_isolation.py::test_memory_hog_is_killed_at_its_limit",
    "tests/sandbox/test_isolation.py::test_fork_bomb_stops_at_pids_limit",
    "tests/sandbox/test_isolation.py::test_host_processes_are_invisible",
    "tests/sandbox/test_isolation.py::test_writes_land_only_in_the_overlay",
    "tests/sandbox/test_isolation.py::test_timeout_kills_a_command_that_ignores_sigterm",
    "tests/sandbox/test_isolation.py::test_sandboxed_root_cannot_kill_the_init",
    "tests/sandbox/test_sdk.py::test_snapshot_and_fork_are_independent[local]",
    "tests/security/test_disk.py::test_writes_past_the_disk_limit_fail_with_enospc",
    "tests/security/test_disk.py::test_the_inode_limit_holds_too",
    "tests/security/test_timeouts.py::test_a_setsid_busy_loop_is_dead_after_the_timeout",
    "tests/security/test_timeouts.py::test_a_double_forked_daemon_is_dead_after_the_timeout",
    "tests/security/test_host_root.py::test_sandbox_root_is_an_unprivileged_host_id",
)

# The kernel modules the guest loads (with what they depend on), in this order.
MODULES = (
    "virtio_pci",
    "virtio_blk",
    "9pnet_virtio",
    "9p",
    "crc32c_generic",
    "ext4",
    "overlay",
    "loop",
)
# What of the checkout the guest reads from a copy made at boot rather than from the live share
# (which caches what it reads, so a file edited meanwhile could be read half old, half new).
SNAPSHOT = ("rockroll", "tests", "pyproject.toml")
# Plugins are named, not discovered: scanning every installed distribution's entry points takes
# the emulated guest longer than the tests do.
PYTEST_ARGS = ("-p", "no:cacheprovider", "-p", "pytest_timeout")
KERNEL_META = "linux-image-amd64"
CMDLINE = (
    "console=ttyS0 panic=-1 rdinit=/init random.trust_cpu=on loglevel=4 "
    "systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all"
)
MEMORY = "3G"
CPUS = 2
DISK_SIZE = 24 << 30  # sparse; the sandboxes' default 10 GiB disks must fit in what it has free
KVM_CREATE_VM = 0xAE01
KEEP_RUNS = 3  # run folders (console log, guest output) kept under <rockroll home>/vm/runs
KVM_CPUS = ("host", "host,-arch-capabilities")  # the second for nested hosts that refuse an MSR
KVM_PROBE_SECONDS = 12


class VMUnavailable(Exception):
    """What the VM needs is not on this host (qemu, busybox, mke2fs, the kernel package)."""


def rockroll_home() -> Path:
    env = os.environ.get("ROCKROLL_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rockroll"


def vm_cache() -> Path:
    return rockroll_home() / "vm"


def _say(line: str) -> None:
    print(f"[vm-host] {line}", flush=True)


# ---- tools ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tools:
    qemu: str
    busybox: str
    mke2fs: str


def find_tools() -> Tools:
    found = {
        "qemu": shutil.which("qemu-system-x86_64"),
        "busybox": next((p for p in ("/bin/busybox", "/usr/bin/busybox") if _static(p)), None),
        "mke2fs": shutil.which("mke2fs") or shutil.which("mke2fs", path="/sbin:/usr/sbin"),
    }
    missing = {
        "qemu": "qemu-system-x86_64 (apt package qemu-system-x86)",
        "busybox": "a static /bin/busybox (apt package busybox-static)",
        "mke2fs": "mke2fs (apt package e2fsprogs)",
    }
    absent = [missing[k] for k, v in found.items() if v is None]
    if absent:
        raise VMUnavailable("missing " + ", ".join(absent))
    return Tools(**found)  # type: ignore[arg-type]


def _static(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    return head.startswith(b"\x7fELF") and b"/lib64/ld-linux" not in head


def _kvm_opens() -> str | None:
    """None when /dev/kvm opens and makes a VM, else why not."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"/dev/kvm: {e.strerror}"
    try:
        os.close(fcntl.ioctl(fd, KVM_CREATE_VM, 0))
    except OSError as e:
        return f"KVM_CREATE_VM failed: {e.strerror}"
    finally:
        os.close(fd)
    return None


def choose_accel(tools: Tools, kernel: Kernel, cache: Path) -> tuple[str, str]:
    """("kvm", cpu model) when KVM boots this kernel, else ("tcg", why not).

    A /dev/kvm that makes VMs is not enough: nested under another hypervisor it may refuse the
    host CPU's MSRs or crawl through the real-mode boot, so the kernel is booted for real, to
    its panic for want of a root filesystem, which takes a second where KVM works. The answer
    is kept for this host's boot (keyed by its boot id)."""
    forced = os.environ.get("ROCKROLL_VM_ACCEL", "").strip().lower()
    if forced == "tcg":
        return "tcg", "ROCKROLL_VM_ACCEL=tcg"
    if forced == "kvm":
        return "kvm", KVM_CPUS[0]
    why = _kvm_opens()
    if why is not None:
        return "tcg", why
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    memo = cache / f"accel-{boot_id}"
    if memo.exists():
        accel, _, detail = memo.read_text().partition(" ")
        return accel, detail.strip()
    result = "tcg", "KVM did not boot the kernel"
    for cpu in KVM_CPUS:
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            log = Path(tmp) / "console"
            argv = [tools.qemu, "-nodefaults", "-no-user-config", "-display", "none"]
            argv += ["-monitor", "none", "-no-reboot", "-accel", "kvm", "-cpu", cpu, "-m", "256"]
            argv += ["-kernel", str(kernel.vmlinuz), "-append", "console=ttyS0 panic=-1"]
            argv += ["-serial", f"file:{log}"]
            try:
                res = _run(argv, timeout=KVM_PROBE_SECONDS)
                why = res.stderr.strip().splitlines()[:1]
            except subprocess.TimeoutExpired:
                why = [f"no panic within {KVM_PROBE_SECONDS}s"]
            if log.exists() and b"Kernel panic" in log.read_bytes():
                result = "kvm", cpu
                break
            result = "tcg", f"KVM with -cpu {cpu}: {' '.join(why) or 'no kernel output'}"
    for old in cache.glob("accel-*"):
        old.unlink()
    memo.write_text(" ".join(result) + "\n")
    return result


# ---- the kernel ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    release: str
    vmlinuz: Path
    modules: list[Path]  # in load order


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, **kw)  # type: ignore[call-overload]


def _kernel_package() -> str:
    """The versioned package `linux-image-amd64` points at, e.g. linux-image-6.1.0-57-amd64."""
    for attempt in range(2):
        res = _run(["apt-cache", "depends", KERNEL_META])
        names = re.findall(r"Depends:\s*(linux-image-\S+)", res.stdout)
        if names:
            return names[0]
        if attempt == 0:
            _say("apt knows no kernel package yet; running apt-get update")
            _run(["apt-get", "update", "-qq"])
    raise VMUnavailable(f"apt-cache depends {KERNEL_META} names no kernel: {res.stderr.strip()}")


def _modinfo(ko: Path) -> tuple[list[str], list[str]]:
    """(depends, softdep pre:) of a module, read from its .modinfo strings."""
    data = ko.read_bytes()
    deps: list[str] = []
    pre: list[str] = []
    for m in re.finditer(rb"(?:^|\x00)(depends|softdep)=([^\x00]*)", data):
        value = m.group(2).decode()
        if m.group(1) == b"depends":
            deps += [d for d in value.split(",") if d]
        else:
            words = value.split()
            if "pre:" in words:
                for w in words[words.index("pre:") + 1 :]:
                    if w.endswith(":"):
                        break
                    pre.append(w)
    return deps, pre


def _module_closure(tree: Path, wanted: Iterable[str]) -> list[Path]:
    """The .ko files of `wanted` and all they depend on, each after its dependencies."""
    by_name = {p.name.removesuffix(".ko").replace("-", "_"): p for p in tree.rglob("*.ko")}
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str, required: bool) -> None:
        key = name.replace("-", "_")
        if key in seen:
            return
        if key not in by_name:
            if required:
                raise VMUnavailable(f"kernel module {name} is not in {tree}")
            return  # a soft dependency that is built in
        seen.add(key)
        deps, pre = _modinfo(by_name[key])
        for d in pre:
            visit(d, False)
        for d in deps:
            visit(d, True)
        order.append(by_name[key])

    for name in wanted:
        visit(name, True)
    return order


def ensure_kernel(cache: Path) -> Kernel:
    """Debian's kernel and the modules the guest needs, fetched once into `cache`."""
    for done in sorted(cache.glob("kernel-*/complete"), reverse=True):
        d = done.parent
        names = done.read_text().split()
        return Kernel(d.name.removeprefix("kernel-"), d / "vmlinuz", [d / n for n in names])
    package = _kernel_package()
    _say(f"fetching {package} with apt-get download (once; cached in {cache})")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix="fetch-") as tmp:
        os.chmod(tmp, 0o755)  # apt's _apt user may then write there
        res = _run(["apt-get", "download", "-q", package], cwd=tmp)
        debs = list(Path(tmp).glob("*.deb"))
        if res.returncode != 0 or not debs:
            raise VMUnavailable(f"apt-get download {package} failed: {res.stderr.strip()}")
        tree = Path(tmp) / "x"
        res = _run(["dpkg-deb", "-x", str(debs[0]), str(tree)])
        if res.returncode != 0:
            raise VMUnavailable(f"dpkg-deb -x {debs[0].name} failed: {res.stderr.strip()}")
        vmlinuz = next((tree / "boot").glob("vmlinuz-*"))
        release = vmlinuz.name.removeprefix("vmlinuz-")
        modules = _module_closure(tree / "lib" / "modules" / release, MODULES)
        staged = Path(tmp) / "kernel"
        staged.mkdir()
        shutil.copy2(vmlinuz, staged / "vmlinuz")
        for ko in modules:
            shutil.copy2(ko, staged / ko.name)
        (staged / "complete").write_text("\n".join(ko.name for ko in modules) + "\n")
        with contextlib.suppress(OSError):  # another run may have put it there first
            staged.rename(cache / f"kernel-{release}")
    return ensure_kernel(cache)


# ---- initramfs and disk --------------------------------------------------------------------


class _Cpio:
    """A newc cpio archive, the format the kernel unpacks as the initramfs."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.ino = 1

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        self.ino += 1
        head = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\x00"
        self.parts += [head, b"\x00" * (-len(head) % 4), data, b"\x00" * (-len(data) % 4)]

    def bytes(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return b"".join(self.parts)


def build_initramfs(path: Path, tools: Tools, kernel: Kernel, env: dict[str, str]) -> None:
    cpio = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "newroot", "modules"):
        cpio.add(d, stat.S_IFDIR | 0o755)
    cpio.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    cpio.add("init", stat.S_IFREG | 0o755, INIT.read_bytes())
    cpio.add("bin/busybox", stat.S_IFREG | 0o755, Path(tools.busybox).read_bytes())
    for ko in kernel.modules:
        cpio.add(f"modules/{ko.name}", stat.S_IFREG | 0o644, ko.read_bytes())
    order = "\n".join(ko.name.removesuffix(".ko") for ko in kernel.modules) + "\n"
    cpio.add("modules/order", stat.S_IFREG | 0o644, order.encode())
    text = "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items())
    cpio.add("vm.env", stat.S_IFREG | 0o644, text.encode())
    path.write_bytes(cpio.bytes())


def build_disk(path: Path, tools: Tools, home: Path) -> None:
    """An ext4 image with the guest's rockroll home (`home/`: the host's base image and built
    binaries) and a copy of the checkout's sources (`src/`, see SNAPSHOT)."""
    staging = path.parent / "disk"
    staging.mkdir()
    images = home / "images" / "base"
    if not (images / "image.json").exists():
        raise VMUnavailable(f"no base image at {images}: run `rockroll image build base`")
    # Hard links keep the copy instant; mke2fs reads them as ordinary files.
    (staging / "home" / "images").mkdir(parents=True)
    _link_tree(images, staging / "home" / "images" / "base")
    if (home / "bin").is_dir():
        _link_tree(home / "bin", staging / "home" / "bin")
    (staging / "src").mkdir()
    for name in SNAPSHOT:  # copies, not links: an edit in place must not reach the guest
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, staging / "src" / name, symlinks=True)
        else:
            shutil.copy2(src, staging / "src" / name)
    with open(path, "wb") as f:
        f.truncate(DISK_SIZE)
    lazy = "lazy_itable_init=1,lazy_journal_init=1"
    res = _run([tools.mke2fs, "-q", "-F", "-t", "ext4", "-E", lazy, "-d", str(staging), str(path)])
    shutil.rmtree(staging)
    if res.returncode != 0:
        raise VMUnavailable(f"mke2fs -d failed: {res.stderr.strip()}")


def _link_tree(src: Path, dst: Path) -> None:
    try:
        shutil.copytree(src, dst, symlinks=True, copy_function=os.link)
    except (OSError, shutil.Error):
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst, symlinks=True)


# ---- running it ----------------------------------------------------------------------------


@dataclass
class Result:
    """What one VM run produced; `out` holds the files the guest wrote."""

    status: int | None  # the guest's pytest exit status; None when it never finished
    accel: str
    run_dir: Path
    out: Path
    console: Path
    expected: list[str]  # the node ids collected on the host for the guest to run
    boot_seconds: float | None = None  # guest uptime when /init ran
    guest_seconds: float | None = None  # guest uptime at the end of pytest
    wall_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def read(self, name: str) -> str:
        try:
            return (self.out / name).read_text()
        except OSError:
            return ""


def qemu_argv(
    tools: Tools,
    kernel: Kernel,
    initrd: Path,
    disk: Path,
    out: Path,
    console: Path,
    accel: tuple[str, str],
) -> list[str]:
    if accel[0] == "kvm":
        cpu = ["-accel", "kvm", "-cpu", accel[1]]
    else:
        cpu = ["-accel", "tcg,thread=multi", "-cpu", "max"]
    share = "security_model=passthrough,multidevs=remap"
    return [
        tools.qemu,
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-machine",
        "pc",
        *cpu,
        "-smp",
        str(CPUS),
        "-m",
        MEMORY,
        "-kernel",
        str(kernel.vmlinuz),
        "-initrd",
        str(initrd),
        "-append",
        CMDLINE,
        "-chardev",
        f"file,id=con,path={console}",
        "-serial",
        "chardev:con",
        "-fsdev",
        f"local,id=hostroot,path=/,readonly=on,{share}",
        "-device",
        "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-fsdev",
        f"local,id=out,path={out},{share}",
        "-device",
        "virtio-9p-pci,fsdev=out,mount_tag=out",
        "-drive",
        f"file={disk},format=raw,if=virtio,cache=unsafe",
        "-nic",
        "none",
    ]


def _boot(argv: list[str], console: Path, limit: float, progress: Callable[[str], None]) -> int:
    """Run qemu, echoing the guest console as it grows; qemu's exit status."""
    qerr = console.with_name("qemu.stderr")
    with open(qerr, "w") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    started = last_said = time.monotonic()
    pos = 0
    partial = b""
    try:
        while True:
            code = proc.poll()
            if console.exists():
                with open(console, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
                pos += len(chunk)
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()
                for line in lines:
                    text = line.decode(errors="replace").rstrip("\r")
                    if text.strip():
                        progress(f"guest +{time.monotonic() - started:5.1f}s: {text}")
                        last_said = time.monotonic()
            now = time.monotonic()
            if code is not None:
                if partial.strip():
                    progress(f"guest: {partial.decode(errors='replace')}")
                return code
            if now - started > limit:
                progress(f"the guest ran past {limit:.0f}s; stopping it")
                proc.kill()
                proc.wait()
                return -9
            if now - last_said >= 20:
                progress(f"still running ({now - started:.0f}s)")
                last_said = now
            time.sleep(0.25)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def prewarm(python: str, tests: Iterable[str]) -> list[str]:
    """Collect `tests` on the host first: a wrong node id fails here, in a second, and the
    bytecode (pytest's rewritten test modules too) is then on disk for the read-only guest.
    The node ids the guest is to run."""
    res = _run(
        [python, "-m", "pytest", "--collect-only", "-q", *PYTEST_ARGS, *tests],
        cwd=REPO,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    if res.returncode != 0:
        raise VMUnavailable(f"the guest's tests do not collect on the host:\n{res.stdout}")
    return [line for line in res.stdout.splitlines() if "::" in line and " " not in line]


def run(
    tests: Iterable[str] = GUEST_TESTS,
    *,
    limit: float = 330.0,
    progress: Callable[[str], None] = _say,
) -> Result:
    """Boot the VM, run `tests` (pytest node ids relative to the repository) in it, collect."""
    started = time.monotonic()
    tools = find_tools()
    cache = vm_cache()
    kernel = ensure_kernel(cache)
    progress("choosing the accelerator")
    accel, detail = choose_accel(tools, kernel, cache)
    if accel == "kvm":
        progress(f"accelerator: kvm (-cpu {detail})")
    else:
        progress(f"accelerator: tcg, software emulation ({detail})")
    runs = cache / "runs"
    runs.mkdir(exist_ok=True)
    for old in sorted(runs.iterdir())[:-KEEP_RUNS]:
        shutil.rmtree(old, ignore_errors=True)
    run_dir = Path(tempfile.mkdtemp(dir=runs, prefix=time.strftime("%Y%m%d-%H%M%S-")))
    out = run_dir / "out"
    out.mkdir()
    console = run_dir / "console.log"
    env = {
        "REPO": str(REPO),
        "BUSYBOX": tools.busybox,
        "PYTHON": str(REPO / ".venv" / "bin" / "python")
        if (REPO / ".venv" / "bin" / "python").exists()
        else sys.executable,
        "TESTS": " ".join(tests),
        "CI": os.environ.get("CI", ""),
        "SHARED": os.environ.get("ROCKROLL_SHARED", str(REPO.parent / "shared")),
        "PYTEST_ARGS": " ".join(PYTEST_ARGS),
        "SNAPSHOT": " ".join(SNAPSHOT),
        "GUEST_ENV": os.environ.get("ROCKROLL_VM_GUEST_ENV", ""),
        "GUEST_CMD": os.environ.get("ROCKROLL_VM_GUEST_CMD", ""),
    }
    progress("collecting the guest's tests on the host; building the initramfs and the disk")
    expected = prewarm(env["PYTHON"], tests)
    initrd = run_dir / "initramfs.cpio"
    build_initramfs(initrd, tools, kernel, env)
    disk = run_dir / "disk.img"
    build_disk(disk, tools, rockroll_home())
    progress(
        f"booting Debian kernel {kernel.release} ({CPUS} vCPUs, {MEMORY}) with cgroup v2 only; "
        f"console log: {console}"
    )
    argv = qemu_argv(tools, kernel, initrd, disk, out, console, (accel, detail))
    (run_dir / "qemu.argv").write_text(shlex.join(argv) + "\n")
    try:
        code = _boot(argv, console, limit - (time.monotonic() - started), progress)
    finally:
        disk.unlink(missing_ok=True)
    result = Result(None, accel, run_dir, out, console, expected)
    result.wall_seconds = time.monotonic() - started
    status = result.read("status").strip()
    result.status = int(status) if status.lstrip("-").isdigit() else None
    for name, attr in (("boot_seconds", "boot_seconds"), ("end_seconds", "guest_seconds")):
        text = result.read(name).strip()
        if text:
            setattr(result, attr, float(text))
    if code != 0:
        qerr = (run_dir / "qemu.stderr").read_text(errors="replace").strip()
        result.notes.append(f"qemu exited {code}" + (f": {qerr}" if qerr else ""))
    return result


def main(argv: list[str]) -> int:
    try:
        result = run(argv or GUEST_TESTS)
    except VMUnavailable as e:
        _say(f"cannot run the VM: {e}")
        return 2
    for note in result.notes:
        _say(note)
    _say(
        f"{result.accel}: init after {result.boot_seconds}s of guest uptime, pytest done at "
        f"{result.guest_seconds}s, {result.wall_seconds:.0f}s in all; guest pytest status "
        f"{result.status}"
    )
    if result.status != 0:
        _say(f"console log: {result.console}")
    return 1 if result.status is None else result.status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
