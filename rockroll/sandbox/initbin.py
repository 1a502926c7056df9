"""Build `rockroll-init` (init.c) once per source version and cache it under $ROCKROLL_HOME/bin.

The binary is static so that it runs in any image, whatever libc (if any) the image has.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from rockroll.sandbox.errors import SetupError
from rockroll.sandbox.paths import rockroll_home

SOURCE = Path(__file__).with_name("init.c")
_INSTALL_HINT = "run `apt-get install gcc libc6-dev` (a C compiler and glibc's static libc)"
_lock = threading.Lock()
_built: dict[Path, Path] = {}


def init_binary() -> Path:
    """Path of a rockroll-init built from the shipped init.c, compiling it if needed."""
    home = rockroll_home()
    cached = _built.get(home)
    if cached is not None and cached.is_file():
        return cached
    with _lock:
        digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
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
        cmd = [cc, "-O2", "-static", "-Wall", "-Wextra", "-o", tmp, str(SOURCE)]
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
