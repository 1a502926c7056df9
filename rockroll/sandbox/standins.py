"""Local stand-ins for the registry images that Dockerfiles start FROM.

Registry images cannot be pulled offline, so a FROM reference is mapped to a local image built
with debootstrap, plus the packages and set-up that make it behave like the original (official
`python:*` images have `python`, `pip` and no PEP 668 marker; Terminal-Bench's bases add tmux and
asciinema; Alpine's gets BusyBox's applets and an `apk` that installs Debian packages). What a
stand-in still does differently is said in `differs`, which the build log prints, so that a task
failing on it says why.

A reference is normalised first, as Docker reads it: `--platform=...` is not part of it, nor are
the default registry's prefixes (`docker.io/library/`, `index.docker.io/`, and the mirror
`public.ecr.aws/docker/library/`) or a `@sha256:` digest (a digest pins bytes we cannot fetch;
the tag says what the image is). Users extend the table in `$ROCKROLL_HOME/image-map.json` (or
the file `$ROCKROLL_IMAGE_MAP` names):
`{"myorg/tool:*": "base"}`, `{"myorg/tool:*": {"image": "base", "packages": ["git"]}}`, or
`{"myorg/tool:*": {"dockerfile": "toolchain/Dockerfile"}}` (a path relative to the JSON file:
the stand-in is built from that Dockerfile, once).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from rockroll.errors import SandboxError
from rockroll.sandbox.images import get_image
from rockroll.sandbox.paths import rockroll_home

# What official python:* images have and Debian's python3 lacks: `python`, pip, venv, and no
# "externally managed" marker (pip installs system-wide, as in those images).
PIP_LIKE = ["python-is-python3", "python3-pip", "python3-venv"]
PIP_SETUP = ["rm -f /usr/lib/python3*/EXTERNALLY-MANAGED"]
TRIXIE = {"image": "python3.13", "suite": "trixie"}  # Debian 13: Python 3.13, glibc 2.41
TB_TOOLS = ["tmux", "asciinema"]  # what Terminal-Bench's base images add to theirs
PY_IMAGE = {"packages": PIP_LIKE, "setup": PIP_SETUP}
# Alpine runs as Debian with BusyBox's applets wherever Debian has no command of that name (a
# package installed later replaces the link, as on Alpine), and `apk`, `adduser` and
# `addgroup` that take Alpine's arguments (alpine.sh).
_ALPINE_SHIM = (Path(__file__).parent / "alpine.sh").read_text()
ALPINE = {
    "image": "base",
    "packages": ["busybox", "ca-certificates"],
    "setup": [
        f"printf '%s' {shlex.quote(_ALPINE_SHIM)} > /sbin/apk && chmod 755 /sbin/apk && "
        "ln -sf /sbin/apk /usr/local/sbin/adduser && ln -sf /sbin/apk /usr/local/sbin/addgroup",
        'for a in $(busybox --list); do command -v "$a" >/dev/null || '
        'ln -s /bin/busybox "/usr/bin/$a"; done',
    ],
    "differs": [
        "Debian 12 stands in for Alpine: glibc, not musl; apk installs the Debian packages "
        "of the Alpine names"
    ],
}
# Python's minor version matters to tests (3.12 changed float `sum()`), so each Python image
# maps to the nearest Debian: bookworm has 3.11, trixie 3.13. First match wins.
BASE_MAP: dict[str, dict] = {
    "ghcr.io/laude-institute/t-bench/python-3-13*": TRIXIE
    | {"packages": [*TB_TOOLS, *PIP_LIKE], "setup": PIP_SETUP},
    "ghcr.io/laude-institute/t-bench/ubuntu-24-04*": TRIXIE
    | {"packages": TB_TOOLS, "differs": ["Debian 13 stands in for Ubuntu 24.04"]},
    "python:3.13*": TRIXIE | PY_IMAGE,
    "python:3.12*": TRIXIE | PY_IMAGE | {"differs": ["Python 3.13 stands in for 3.12"]},
    "python:3.11*": {"image": "base"} | PY_IMAGE,
    "python:3*": {"image": "base"}
    | PY_IMAGE
    | {"differs": ["Python 3.11 stands in for this version"]},
    "buildpack-deps:*": {
        "image": "base",
        "packages": ["build-essential", "openssl", "wget", "unzip", "xz-utils", "bzip2", "tmux"],
    },
    "debian:13*": TRIXIE,
    "debian:trixie*": TRIXIE,
    "debian:*": {"image": "base"},
    "ubuntu:24.04*": TRIXIE | {"differs": ["Debian 13 stands in for Ubuntu 24.04"]},
    "ubuntu:noble*": TRIXIE | {"differs": ["Debian 13 stands in for Ubuntu 24.04"]},
    "ubuntu:*": {"image": "base", "differs": ["Debian 12 stands in for Ubuntu"]},
    "alpine:*": ALPINE,
}
_PREFIXES = (
    "docker.io/library/",
    "index.docker.io/library/",
    "registry-1.docker.io/library/",
    "public.ecr.aws/docker/library/",
    "docker.io/",
    "index.docker.io/",
    "library/",
)
_DIGEST = re.compile(r"@sha256:[0-9a-fA-F]{64}$")


class StandInError(SandboxError):
    """A FROM reference has no local stand-in, or the image map is wrong; says how to fix it."""


@dataclass(frozen=True)
class StandIn:
    """What a FROM reference becomes: a local image (or a Dockerfile to build it from), the
    packages and shell set-up to add, and what still differs from the original."""

    ref: str
    image: str | None
    suite: str | None = None
    dockerfile: Path | None = None
    packages: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)
    differs: list[str] = field(default_factory=list)


def from_reference(args: str) -> str:
    """The image of a `FROM [--platform=P] IMAGE [AS NAME]` line's arguments."""
    words, given = [], iter(args.split())
    for word in given:
        if word == "--platform":  # Docker wants `--platform=P`; take the spaced form too
            next(given, None)
        elif not word.startswith("--"):
            words.append(word)
    if not words:
        raise StandInError(f"FROM {args}: no image named")
    return words[0]


def normalize(ref: str) -> str:
    """`ref` as a short Docker Hub name: no default registry, no digest, a tag (latest)."""
    name = _DIGEST.sub("", ref.strip())
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else name + ":latest"


def image_map_path() -> Path:
    """Where users extend the table: `$ROCKROLL_IMAGE_MAP`, else `$ROCKROLL_HOME/image-map.json`."""
    named = os.environ.get("ROCKROLL_IMAGE_MAP")
    return Path(named) if named else rockroll_home() / "image-map.json"


def base_map() -> dict[str, dict]:
    """The built-in table, extended (and overridden, first) by the user's image map."""
    user = image_map_path()
    table: dict[str, dict] = {}
    if user.exists():
        try:
            extra = json.loads(user.read_text())
        except ValueError as exc:
            raise StandInError(f"{user}: not valid JSON ({exc})") from None
        if not isinstance(extra, dict):
            raise StandInError(f'{user}: must be an object, e.g. {{"myorg/img:*": "base"}}')
        for pattern, target in extra.items():
            table[pattern] = _user_entry(user, pattern, target)
    return table | {k: v for k, v in BASE_MAP.items() if k not in table}


def _user_entry(user: Path, pattern: str, target: object) -> dict:
    if isinstance(target, str):
        return {"image": target}
    if not isinstance(target, dict) or not ({"image", "dockerfile"} & set(target)):
        raise StandInError(
            f'{user}: entry "{pattern}" needs "image" or "dockerfile", '
            f'e.g. "{pattern}": {{"dockerfile": "path/to/Dockerfile"}}'
        )
    entry = dict(target)
    if "dockerfile" in entry:
        path = Path(entry["dockerfile"])
        entry["dockerfile"] = path if path.is_absolute() else user.parent / path
        if not entry["dockerfile"].is_file():
            raise StandInError(f'{user}: entry "{pattern}": no Dockerfile at {entry["dockerfile"]}')
    return entry


def stand_in(ref: str) -> StandIn:
    """The stand-in for `ref`: a local image of that name, else the first matching entry."""
    with contextlib.suppress(SandboxError):
        return StandIn(ref=ref, image=get_image(ref).name)
    short = normalize(ref)
    for pattern, target in base_map().items():
        if fnmatch.fnmatch(short, pattern) or fnmatch.fnmatch(ref, pattern):
            return StandIn(
                ref=ref,
                image=target.get("image"),
                suite=target.get("suite"),
                dockerfile=target.get("dockerfile"),
                packages=list(target.get("packages", [])),
                setup=list(target.get("setup", [])),
                differs=list(target.get("differs", [])),
            )
    raise StandInError(
        f"FROM {ref}: this image cannot be pulled offline and no mapping matches it; add "
        f'"{short}": "base" (or another built image, or {{"dockerfile": "PATH"}}) to '
        f"{image_map_path()}"
    )
