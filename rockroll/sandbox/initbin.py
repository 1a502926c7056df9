"""Build `rockroll-init` (init.c, launch.c) once per source version, cached under
$ROCKROLL_HOME/bin, and hand it to sandboxes as a sealed memfd.

The binary is static so that it runs in any image, whatever libc (if any) the image has. A
sandbox's init is executed from a memfd sealed against writes and resizing (as runc protects
itself since CVE-2019-5736): no host file backs /proc/1/exe, so nothing inside can change or
chmod the binary that every later sandbox runs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from rockroll.errors import SetupError
from rockroll.sandbox.paths import rockroll_home

SOURCES = (Path(__file__).with_name("init.c"), Path(__file__).with_name("launch.c"))
_MFD_EXEC = 0x0010  # Linux 6.3+: executable memfd, whatever vm.memfd_noexec says
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
_INSTALL_HINT = "run `apt-get install gcc libc6-dev` (a C compiler and glibc's static libc)"
_lock = threading.Lock()
_built: dict[Path, Path] = {}
_memfds: dict[Path, int] = {}


def init_binary() -> Path:
    """Path of a rockroll-init built from the shipped init.c, compiling it if needed."""
    home = rockroll_home()
    cached = _built.get(home)
    if cached is not None and cached.is_file():
        return cached
    with _lock:
        digest = hashlib.sha256(b"".join(src.read_bytes() for src in SOURCES)).hexdigest()[:12]
        target = home / "bin" / f"rockroll-init-{digest}"
        if not target.is_file():
            _compile(target)
        _built[home] = target
        return target


def _compile(target: Path) -> None:
    """Compile to a temp name and rename, so concurrent builders never see a partial file."""
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        raise SetupError(f"no C compiler (cc) found to build rockroll-init: {_INSTALL_HINT}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".rockroll-init-", suffix=".tmp")
    os.close(fd)
    try:
        cmd = [cc, "-O2", "-static", "-Wall", "-Wextra", "-o", tmp, *map(str, SOURCES)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
            output, failed = proc.stdout + proc.stderr, proc.returncode != 0
        except (OSError, subprocess.TimeoutExpired) as e:
            output, failed = str(e), True
        if failed:
            raise SetupError(
                f"building rockroll-init with `{cc} -static` failed; {_INSTALL_HINT}.\n{output}"
            )
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def init_memfd() -> int:
    """An fd of a sealed, read-only in-memory copy of the init binary (one per process, never
    closed: every parked launcher inherits it and the sandbox's bwrap executes it)."""
    binary = init_binary()
    with _lock:
        fd = _memfds.get(binary)
        if fd is None:
            fd = _sealed_copy(binary.read_bytes())
            _memfds[binary] = fd
        return fd


def _sealed_copy(data: bytes) -> int:
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        fd = os.memfd_create("rockroll-init", flags | _MFD_EXEC)
    except OSError as e:
        if e.errno != errno.EINVAL:  # kernels before 6.3 do not know MFD_EXEC
            raise
        fd = os.memfd_create("rockroll-init", flags)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, 0o555)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd
