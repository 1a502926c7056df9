"""Build sandbox images from Dockerfiles, without Docker.

Each RUN step runs in a build sandbox (profile "build": like `docker build`, with the host's
network) stacked on a local base image; COPY/ADD take files from the build context. The result
is one read-only layer on top of the base. FROM images that cannot be pulled offline stand in
as local images (`rockroll.sandbox.standins`: the table, its normalisation of references, and
`$ROCKROLL_HOME/image-map.json` where users extend it).
Images are named by a hash of the Dockerfile and its context, so identical tasks build once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from rockroll.errors import InvalidArgument, SandboxError
from rockroll.sandbox.accounts import default_user
from rockroll.sandbox.disk import BUILD_DISK
from rockroll.sandbox.images import Image, build_image, get_image, image_lock, images_dir
from rockroll.sandbox.local import LocalSandbox
from rockroll.sandbox.spec import DEFAULT_PATH, make_spec
from rockroll.sandbox.standins import StandIn, StandInError, from_reference, stand_in

BUILDER_VERSION = "6"
STEP_TIMEOUT = 1800.0
# Installs Debian packages in a build step (their names follow)
APT_INSTALL = (
    "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
    "--no-install-recommends "
)
MAX_PARTS = 8  # layers one Dockerfile's steps are cut into (overlayfs stacks them all)
MAX_STAND_IN_DEPTH = 4  # image-map Dockerfiles that start FROM other mapped Dockerfiles
KNOWN = {
    "FROM", "RUN", "COPY", "ADD", "WORKDIR", "ENV", "ARG", "USER", "CMD", "ENTRYPOINT",
    "LABEL", "EXPOSE", "VOLUME", "SHELL", "STOPSIGNAL", "HEALTHCHECK", "MAINTAINER", "ONBUILD",
}  # fmt: skip
_VAR = re.compile(r"\$(?:\{(\w+)(?::-([^}]*))?\}|(\w+))")


# What a download tool prints when its host cannot be reached (curl, wget, pip, apt, git). A
# build has the host's network, so a build that printed one needs more of the internet than
# this machine has; a RUN step whose download failed quietly (`curl ... | sh` succeeds on
# empty input) is remembered, since a later step that needed the download is what fails.
UNREACHABLE = re.compile(
    r"Could not resolve host|Temporary failure in name resolution|Name or service not known|"
    r"Network is unreachable|Failed to connect to|unable to resolve host address|"
    r"Could not connect to|Connection timed out"
)


def unreachable_lines(output: str) -> list[str]:
    """The lines of `output` that say a download host could not be reached."""
    return [line.strip()[:300] for line in output.splitlines() if UNREACHABLE.search(line)]


class BuildError(SandboxError):
    """A Dockerfile could not be built; names the file, the line and what went wrong.
    `unreached`: what steps of this build (the failing one or an earlier one that still
    succeeded) printed about a download host they could not reach."""

    def __init__(self, message: str, output: str = "", unreached: Sequence[str] = ()) -> None:
        unreached = list(unreached) + unreachable_lines(output)
        if unreached and not UNREACHABLE.search(output):
            message += f"; an earlier step could not download: {unreached[0]}"
        super().__init__(message + (f"\n--- output (tail) ---\n{output[-3000:]}" if output else ""))
        self.output = output
        self.unreached = unreached


class UnmappedBase(BuildError):
    """The Dockerfile starts FROM a registry image that has no local stand-in."""


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


@dataclass
class _State:
    env: dict[str, str] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = "root"
    shell: list[str] = field(default_factory=lambda: ["/bin/sh", "-c"])
    config: dict = field(default_factory=dict)
    unreached: list[str] = field(default_factory=list)  # see BuildError.unreached
    deadline: float | None = None  # time.monotonic() past which the build has run too long

    def step_timeout(self, where: str) -> float:
        """Seconds the next RUN step may take: STEP_TIMEOUT, or what the build has left."""
        if self.deadline is None:
            return STEP_TIMEOUT
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise BuildError(f"{where}: the build ran past its time limit")
        return min(STEP_TIMEOUT, left)

    def expand(self, text: str) -> str:
        # Docker images define PATH, so `ENV PATH=/x:$PATH` keeps the system directories.
        values = {"PATH": DEFAULT_PATH} | self.args | self.env

        def one(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(3)
            return values.get(name, m.group(2) or "")

        return _VAR.sub(one, text)


def parse(text: str, path: str = "Dockerfile") -> list[Instruction]:
    """Instructions with their line numbers; continuation lines joined, comments dropped."""
    out: list[Instruction] = []
    buf, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and (not line or line.startswith("#")):
            continue  # like Docker: blank and comment lines inside a continued line are skipped
        if not buf:
            start = number
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, args = [*buf.split(None, 1), ""][:2]
        if keyword.upper() not in KNOWN:
            raise BuildError(
                f"{path}:{start}: unknown instruction {keyword!r}; "
                f"known: {', '.join(sorted(KNOWN))}"
            )
        out.append(Instruction(start, keyword.upper(), args.strip()))
        buf = ""
    if buf:
        raise BuildError(f"{path}:{start}: the file ends inside a continued line")
    first = next((i for i in out if i.keyword != "ARG"), None)
    if first is None or first.keyword != "FROM":
        where = f"{path}:{first.line}" if first else path
        raise BuildError(f"{where}: a Dockerfile must start with FROM (after optional ARGs)")
    return out


def resolve_base(ref: str, log: Callable[[str], None] = lambda s: None, depth: int = 0) -> StandIn:
    """The stand-in for a FROM reference, with its local image built if needed (debootstrap
    for a Debian suite, or the Dockerfile an image-map entry names); `image` is then set."""
    found = stand_in(ref)
    if found.dockerfile is not None:
        if depth >= MAX_STAND_IN_DEPTH:
            raise BuildError(f"FROM {ref}: image-map Dockerfiles nest deeper than {depth}")
        image = build(found.dockerfile, log=log, depth=depth + 1)
        return replace(found, image=image.name)
    assert found.image is not None
    if found.suite:
        try:
            get_image(found.image)
        except SandboxError:
            build_image(found.image, suite=found.suite, log=log)
    if found.differs:
        log(f"FROM {ref}: stands in with {found.image}; differs: {'; '.join(found.differs)}")
    return found


def _copied_files(context: Path, steps: list[Instruction]) -> list[Path]:
    sources: list[str] = []
    for ins in steps:
        if ins.keyword in ("COPY", "ADD"):
            words = _exec_form(ins.args) or shlex.split(ins.args)
            sources += [w for w in words[:-1] if not w.startswith("--")]
    if any("$" in s for s in sources):
        sources = ["."]
    files: set[Path] = set()
    for src in sources:
        for path in context.glob(src) if any(c in src for c in "*?[") else [context / src]:
            if path.is_dir():
                files.update(p for p in path.rglob("*") if p.is_file() or p.is_symlink())
            elif path.exists() or path.is_symlink():
                files.add(path)
    return sorted(files)


def _key(parent: str, state: _State, steps: list[Instruction], context: Path) -> str:
    """A hash of everything a build depends on: parent, starting state, steps, copied files."""
    digest = hashlib.sha256(BUILDER_VERSION.encode() + parent.encode())
    digest.update(
        json.dumps([state.env, state.args, state.workdir, state.shell, state.user]).encode()
    )
    digest.update(json.dumps([(i.keyword, i.args) for i in steps]).encode())
    for path in _copied_files(context, steps):
        digest.update(str(path.relative_to(context)).encode() + b"\0")
        digest.update(oct(path.lstat().st_mode).encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return "df-" + digest.hexdigest()[:16]


def build(
    dockerfile: Path,
    context: Path | None = None,
    *,
    log: Callable[[str], None] = lambda s: None,
    depth: int = 0,
    timeout: float | None = None,
) -> Image:
    """The image for this Dockerfile, built now unless an identical one was built before.

    The steps before the first COPY/ADD read nothing from the context, so they are built (and
    cached) as an image of their own: Dockerfiles that differ only in what they copy share it;
    each COPY/ADD then starts a layer of its own (`_parts`), so a later copy shares the earlier.
    So are the steps that complete a stand-in base (its packages), shared by every Dockerfile
    that starts FROM the same image. `timeout` bounds the steps that run (cached ones cost
    nothing), as Harbor's `build_timeout_sec` does.
    """
    dockerfile = Path(dockerfile)
    context = Path(context) if context else dockerfile.parent
    if not dockerfile.is_file():
        raise BuildError(f"{dockerfile}: no such Dockerfile")
    instructions = parse(dockerfile.read_text(), str(dockerfile))
    state = _State(deadline=None if timeout is None else time.monotonic() + timeout)
    while instructions and instructions[0].keyword == "ARG":
        _arg(state, instructions.pop(0).args)
    first = instructions[0]
    try:
        base = resolve_base(from_reference(state.expand(first.args)), log, depth)
    except StandInError as exc:
        raise UnmappedBase(f"{dockerfile}:{first.line}: {exc}") from None
    assert base.image is not None
    parent = get_image(base.image)
    state.env = dict(parent.config.get("env", {}))
    state.workdir = parent.config.get("workdir", "/")
    state.user = parent.config.get("user", "root")
    steps = instructions[1:]
    if later := next((i for i in steps if i.keyword == "FROM"), None):
        raise BuildError(f"{dockerfile}:{later.line}: multi-stage builds are not supported")
    # What makes the stand-in like the original is a layer of its own, shared by every
    # Dockerfile that starts FROM the same reference.
    image, parts = parent, []
    if stand_in_steps := [Instruction(first.line, "RUN", c) for c in _stand_in_steps(base)]:
        parts.append(stand_in_steps)
    parts += _parts(steps)
    for part in parts:
        image = _cached(image, part, state, dockerfile, context, log)
    return image


def _parts(steps: list[Instruction]) -> list[list[Instruction]]:
    """The steps as the layers they are built and cached in: those before the first COPY/ADD
    (they read nothing from the context), then a new layer at each COPY/ADD that follows a RUN.
    So `COPY repo/ /app/` + `RUN pip install ...` is a layer shared by every Dockerfile that
    starts the same way and differs only in a later COPY (one task's changed file), as Docker's
    per-instruction cache shares it. At most MAX_PARTS layers: the last holds the rest."""
    parts: list[list[Instruction]] = [[]]
    copied = False
    for ins in steps:
        if ins.keyword in ("COPY", "ADD"):
            here, first, copied = parts[-1], not copied, True
            ran = any(i.keyword == "RUN" for i in here)
            if here and len(parts) < MAX_PARTS and (first or ran):
                parts.append([])
        parts[-1].append(ins)
    return [p for p in parts if p]


def _stand_in_steps(base: StandIn) -> list[str]:
    """RUN commands that make the stand-in image more like the one it replaces."""
    steps = []
    if base.packages:
        steps.append(APT_INSTALL + " ".join(base.packages))
    return steps + list(base.setup)


def _cached(
    parent: Image,
    steps: list[Instruction],
    state: _State,
    dockerfile: Path,
    context: Path,
    log: Callable[[str], None],
) -> Image:
    name = _key(parent.name, state, steps, context)
    with image_lock(name, log):
        try:
            image = get_image(name)
        except SandboxError:
            started = time.monotonic()
            image = _build(name, parent, steps, state, dockerfile, context, log)
            log(f"built {name} from {dockerfile} in {time.monotonic() - started:.1f} s")
    config = image.config
    state.env, state.workdir = dict(config["env"]), config["workdir"]
    state.args, state.shell = dict(config["args"]), list(config["shell"])
    state.user = config.get("user", state.user)  # a cached layer's USER holds for the next
    state.unreached = list(config.get("unreached", []))
    state.config = {
        k: v for k, v in config.items() if k not in ("env", "workdir", "args", "unreached")
    }
    return image


def _build(
    name: str,
    parent: Image,
    steps: list[Instruction],
    state: _State,
    dockerfile: Path,
    context: Path,
    log: Callable[[str], None],
) -> Image:
    spec = make_spec(
        image=parent.name,
        profile="build",
        network="full",
        memory="8g",
        cpus=2,
        pids=8192,
        disk=BUILD_DISK,
    )
    tmp = images_dir() / f".{name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with LocalSandbox.open(spec) as sb:  # built here, into this machine's images
            for ins in steps:
                where = f"{dockerfile}:{ins.line}: {ins.keyword} {ins.args[:200]}"
                log(where)
                _step(sb, state, ins, context, where)
            sb.kill_all()  # a daemon a RUN step left must not write while the layer is copied
            done = subprocess.run(
                ["cp", "-a", "--", sb.upper_layer(), str(tmp / "rootfs")],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise BuildError(f"{dockerfile}: saving the image failed: {done.stderr}")
        config = state.config | {
            "env": state.env,
            "workdir": state.workdir,
            "args": state.args,
            "shell": state.shell,
            "unreached": state.unreached,
        }
        meta = {
            "name": name,
            "parent": parent.name,
            "dockerfile": str(dockerfile),
            "created": time.time(),
            "config": config,
        }
        (tmp / "image.json").write_text(json.dumps(meta, indent=1))
        os.rename(tmp, images_dir() / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return get_image(name)


def _step(sb, state: _State, ins: Instruction, context: Path, where: str) -> None:
    args = state.expand(ins.args) if ins.keyword not in ("RUN", "CMD", "ENTRYPOINT") else ins.args
    if ins.keyword == "RUN":
        argv = _exec_form(ins.args) or [*state.shell, ins.args]
        user = default_user(state.user)
        timeout = state.step_timeout(where)
        try:
            res = sb.exec(
                argv,
                cwd=state.workdir,
                env=state.args | state.env,
                timeout=timeout,
                user=user,
            )
        except InvalidArgument as exc:  # USER names no account of the image
            raise BuildError(f"{where}: {exc}") from None
        if res.timed_out:
            raise BuildError(
                f"{where}: timed out after {timeout:.0f} s", res.output, state.unreached
            )
        if res.exit_code != 0:
            raise BuildError(
                f"{where}: failed with exit code {res.exit_code}", res.output, state.unreached
            )
        state.unreached += [f"{where[:160]}: {line}" for line in unreachable_lines(res.output)]
    elif ins.keyword in ("COPY", "ADD"):
        _copy(sb, state, args, context, where, ins.keyword)
    elif ins.keyword == "WORKDIR":
        state.workdir = _abs(args, state.workdir)
        sb.exec(["mkdir", "-p", state.workdir])
    elif ins.keyword == "ENV":
        state.env.update(_pairs(args, where))
    elif ins.keyword == "ARG":
        _arg(state, args)
    elif ins.keyword == "USER":
        state.user = args.strip()
        state.config["user"] = state.user
    elif ins.keyword == "SHELL":
        state.shell = _exec_form(args) or state.shell
    elif ins.keyword in ("CMD", "ENTRYPOINT"):
        state.config[ins.keyword.lower()] = _exec_form(args) or [*state.shell, args]
    elif ins.keyword in ("LABEL", "EXPOSE", "VOLUME", "STOPSIGNAL", "HEALTHCHECK"):
        state.config.setdefault(ins.keyword.lower(), []).append(args)
    elif ins.keyword == "FROM":
        raise BuildError(f"{where}: multi-stage builds are not supported")


def _copy(sb, state: _State, args: str, context: Path, where: str, keyword: str) -> None:
    words = _exec_form(args) or shlex.split(args)
    flags = [w for w in words if w.startswith("--")]
    words = [w for w in words if not w.startswith("--")]
    if any(f.startswith("--from") for f in flags):
        raise BuildError(f"{where}: COPY --from (multi-stage) is not supported")
    owner = next((f.split("=", 1)[1] for f in flags if f.startswith("--chown=")), None)
    if len(words) < 2:
        raise BuildError(f"{where}: {keyword} needs a source and a destination")
    *sources, dest = words
    dest_abs = _abs(dest, state.workdir)
    into_dir = dest.endswith("/") or len(sources) > 1
    root = context.resolve()
    for src in sources:
        if re.match(r"^https?://", src):
            raise BuildError(f"{where}: ADD from a URL is not supported (no network at run time)")
        matches = sorted(root.glob(src)) if any(c in src for c in "*?[") else [root / src]
        for path in matches:
            path = path.resolve()
            if not path.is_relative_to(root):
                raise BuildError(f"{where}: {src} is outside the build context {root}")
            if not path.exists():
                raise BuildError(f"{where}: {src} does not exist in the build context {root}")
            target = dest_abs
            # Like Docker, a file copied onto an existing directory (`COPY a.txt .`) goes into it.
            if not path.is_dir() and (into_dir or _is_dir(sb, dest_abs)):
                target = f"{dest_abs.rstrip('/')}/{path.name}"
            try:
                sb.upload(path, target, owner=owner)
            except (OSError, SandboxError) as exc:
                raise BuildError(f"{where}: copying {src} to {target} failed: {exc}") from None


def _is_dir(sb, path: str) -> bool:
    try:
        return sb.is_dir(path)
    except OSError:
        return False


def _exec_form(args: str) -> list[str] | None:
    if args.startswith("["):
        try:
            value = json.loads(args)
        except ValueError:
            return None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return None


def _pairs(args: str, where: str) -> dict[str, str]:
    words = shlex.split(args)
    if words and "=" not in words[0]:
        if len(words) < 2:
            raise BuildError(f"{where}: ENV needs a value")
        return {words[0]: args.split(None, 1)[1].strip()}
    pairs = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            raise BuildError(f"{where}: expected NAME=value, got {word!r}")
        pairs[key] = value
    return pairs


def _arg(state: _State, args: str) -> None:
    key, _, default = args.partition("=")
    state.args.setdefault(key.strip(), default.strip().strip('"'))


def _abs(path: str, cwd: str) -> str:
    return os.path.normpath(path if path.startswith("/") else f"{cwd.rstrip('/')}/{path}")
