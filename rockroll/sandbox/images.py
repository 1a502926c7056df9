"""Base images: Debian root filesystems built with debootstrap, cached and reused.

An image is a directory `<home>/images/<name>/` holding `rootfs/` and `image.json`. Images are
never written after they are built: every sandbox stacks its own writable overlay on top.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rockroll.errors import ImageNotFound, InvalidArgument, SetupError
from rockroll.sandbox.accounts import default_user
from rockroll.sandbox.paths import home_subdir

DEFAULT_IMAGE = "base"
DEFAULT_SUITE = "bookworm"
BASE_PACKAGES = (
    "python3",
    "python3-pip",
    "python3-venv",
    "python3-pytest",
    "git",
    "curl",
    "procps",
    "ca-certificates",
)
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Image:
    """A built, read-only root filesystem."""

    name: str
    path: Path

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def meta(self) -> dict:
        try:
            return json.loads((self.path / "image.json").read_text())
        except (OSError, ValueError):
            return {}

    @property
    def layers(self) -> list[Path]:
        """Read-only layers, top first: this image's own, then its parent's."""
        parent = self.meta.get("parent")
        return [self.rootfs, *(get_image(parent).layers if parent else [])]

    @property
    def config(self) -> dict:
        """What a Dockerfile recorded: env, workdir, user, cmd, entrypoint."""
        return self.meta.get("config", {})

    def defaults(self) -> dict[str, Any]:
        """What a sandbox of the image runs with unless told otherwise, as `docker run` starts
        a container: its ENV, WORKDIR and USER (None for root)."""
        config = self.config
        return {
            "env": dict(config.get("env", {})),
            "workdir": config.get("workdir", "/"),
            "user": default_user(config.get("user")),
        }


def images_dir() -> Path:
    return home_subdir("images")


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArgument(
            f"image name {name!r} is invalid: use 1-64 characters of a-z, 0-9, '.', '_', '-'"
        )
    return name


def get_image(name: str) -> Image:
    """The built image called `name`, or an error that says how to build it."""
    image = Image(check_name(name), images_dir() / name)
    if not image.rootfs.is_dir() or not (image.path / "image.json").exists():
        raise ImageNotFound(
            f"image {name!r} is not built ({_built()}); run `rockroll image build {name}`"
        )
    return image


def _built(near: str | None = None) -> str:
    """What is built, for an error: the base images by name, the task images counted, and the
    name closest to `near`."""
    names = [i.name for i in list_images()]
    bases = [n for n in names if not n.startswith("df-")]
    tasks = len(names) - len(bases)
    built = "built: " + (
        ", ".join(bases) + (f" and {tasks} task images" if tasks else "") or "none"
    )
    close = difflib.get_close_matches(near, names, n=1, cutoff=0.6) if near else []
    return built + (f"; did you mean {close[0]!r}?" if close else "")


def list_images() -> list[Image]:
    root = images_dir()
    found = [Image(p.name, p) for p in sorted(root.iterdir()) if (p / "image.json").exists()]
    return [i for i in found if _NAME.match(i.name)]


def remove_image(name: str) -> None:
    """Remove a built image; one that is not built is an error naming what is."""
    image = Image(check_name(name), images_dir() / name)
    if not (image.path / "image.json").exists():
        raise ImageNotFound(f"image {name!r} does not exist, nothing removed ({_built(name)})")
    with image_lock(name):
        shutil.rmtree(image.path)


def default_mirror() -> str:
    """The Debian mirror this host already uses, so builds work behind the same proxy/mirror."""
    env = os.environ.get("ROCKROLL_DEBIAN_MIRROR")
    if env:
        return env
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for src in sources:
        with contextlib.suppress(OSError):
            for line in src.read_text().splitlines():
                line = line.split("#", 1)[0]
                for url in re.findall(r"(?:^URIs:|^deb)\s+(?:\[[^]]*\]\s+)?(https?://\S+)", line):
                    if not re.search(r"-security|/debian-", url):
                        return url.rstrip("/")
    return "http://deb.debian.org/debian"


def build_image(
    name: str = DEFAULT_IMAGE,
    *,
    suite: str = DEFAULT_SUITE,
    mirror: str | None = None,
    packages: tuple[str, ...] = BASE_PACKAGES,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> Image:
    """Build (or reuse) a Debian minbase image; concurrent builders of one name wait."""
    check_name(name)
    _require_root_and_debootstrap()
    with image_lock(name, log):
        final = images_dir() / name
        if (final / "image.json").exists() and not force:
            return Image(name, final)
        tmp = images_dir() / f".{name}.building-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        started = time.monotonic()
        try:
            _debootstrap(tmp / "rootfs", suite, mirror or default_mirror(), packages, log)
            _finish_rootfs(tmp / "rootfs")
            meta = {
                "name": name,
                "suite": suite,
                "packages": list(packages),
                "created": time.time(),
                "build_seconds": round(time.monotonic() - started, 1),
                "size_bytes": _du(tmp / "rootfs"),
            }
            (tmp / "image.json").write_text(json.dumps(meta, indent=2))
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log(f"image {name!r} built in {meta['build_seconds']} s at {final}")
        return Image(name, final)


def _require_root_and_debootstrap() -> None:
    if os.geteuid() != 0:
        raise SetupError("building images needs root (debootstrap); run as root")
    if shutil.which("debootstrap") is None:
        raise SetupError("debootstrap is not installed; run `apt-get install debootstrap`")


@contextlib.contextmanager
def image_lock(name: str, log: Callable[[str], None] = print) -> Iterator[None]:
    """Serialise builders of one image across processes."""
    with open(images_dir() / f".{name}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another build of image {name!r} to finish")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _debootstrap(
    target: Path, suite: str, mirror: str, packages: tuple[str, ...], log: Callable[[str], None]
) -> None:
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}"]
    cmd += [suite, str(target), mirror]
    log(f"building image with: {' '.join(cmd)}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = [*tail[-30:], line.rstrip()]
        if line.startswith(("I: Retrieving", "I: Validating", "I: Unpacking", "I: Configuring")):
            continue
        log(line.rstrip())
    if proc.wait() != 0:
        detail = "\n".join(tail)
        raise SetupError(
            f"debootstrap failed (exit {proc.returncode}) for suite {suite!r} from {mirror}:\n"
            f"{detail}\nCheck that the mirror is reachable, or set ROCKROLL_DEBIAN_MIRROR."
        )


def _finish_rootfs(root: Path) -> None:
    """Let pip install system-wide (as the official python images do) and drop caches."""
    for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (root / cache).glob("*"):
            if entry.is_file():
                entry.unlink()
    (root / "etc/hostname").write_text("sandbox\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost sandbox\n::1\tlocalhost\n")


def _du(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total
