"""The verifier-preparation layer: what a task's test scripts install, installed ahead of time.

Test scripts often install their tooling as they run (`apt-get install`, `pip install -r
requirements.txt`, `uvx --with pytest==8.4.1 pytest`, `npm install`). Under Docker that works
because the container has the network; a rockroll sandbox has none. So once per task image and
set of install steps, a layer is built on the task image with the build profile's network (the
trust `docker build` has) that runs those steps; the agent's sandbox starts from it, and at
verification the offline rewriter finds everything present, drops the installs, and the tests
run offline. The layer is an image like any other, cached by content (the image, the steps and
the files they read), so a second run builds nothing.

The tests themselves are never in the layer: a step that reads one of their files (`pip install
-r /tests/requirements.txt`) gets them copied in for the build, and they are removed before the
layer is saved; the verifier copies them in only after the agent has finished, as always. Python
packages go where `pip` puts them system-wide (what `uvx` would have put in a throw-away
environment), installing pip first where the image lacks it. A step that fails leaves a line in
the build log and the layer is kept; the test run then shows what is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path

from rockroll.sandbox.accounts import default_user
from rockroll.sandbox.dockerfile import APT_INSTALL, build
from rockroll.sandbox.images import Image
from rockroll.sandbox.paths import rockroll_home
from rockroll.sandbox.sdk import Sandbox
from rockroll.tasks.offline import Install, Probe, make_offline_tree
from rockroll.tasks.offline_rules import MODULES, bare_name, requirement_names
from rockroll.tasks.schema import Task

# `[SETUP && ]bash SCRIPT`: the script a verifier command runs, after optional set-up steps.
SCRIPT_COMMAND = re.compile(r"^(?P<head>(?:.*&&\s*)?)(?P<shell>bash|sh)\s+(?P<path>[^\s;&|]+)\s*$")
PREPARE_VERSION = "2"
_PIP = (
    f"(python3 -m pip --version >/dev/null 2>&1 || ({APT_INSTALL}python3-pip)) "
    "&& PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --root-user-action=ignore "
)


def prepared_image(task: Task, image: Image, log: Callable[[str], None] = lambda s: None) -> Image:
    """`image` with what the task's test scripts install, installed; `image` itself when they
    install nothing it lacks, when the task has the network at test time, or for a python
    verifier. Which steps the image lacks is found once (a sandbox of it is asked) and kept."""
    v = task.verifier
    found = SCRIPT_COMMAND.match(v.command or "") if v.kind == "script" else None
    if task.network != "none" or found is None:
        return image
    read = _host_reader(v.files)
    plan = make_offline_tree(found["path"], read, lambda kind, names: False, v.env)
    if not plan.installs:
        return image
    files = [read(i.requirements) for i in plan.installs if i.requirements]
    asked = hashlib.sha256(
        json.dumps([PREPARE_VERSION, image.name, repr(plan.installs), files]).encode()
    )
    nothing = rockroll_home() / "prepare" / f"{asked.hexdigest()[:16]}.complete"
    if nothing.exists():
        return image
    with Sandbox.create(image.name) as sb:
        probe = sandbox_probe(sb)
        missing = [i for i in plan.installs if not _present(i, probe, read)]
    commands = list(dict.fromkeys(c for i in missing if (c := _command(i))))
    if not commands:
        nothing.parent.mkdir(parents=True, exist_ok=True)
        nothing.touch()
        return image
    needed = {i.requirements for i in missing if i.requirements}
    copies = {t: source for t, source in v.files.items() if any(_under(p, t) for p in needed)}
    key = hashlib.sha256(
        json.dumps([PREPARE_VERSION, image.name, commands, sorted(copies)]).encode()
    )
    for target in sorted(copies):
        _digest(key.update, copies[target])
    folder = rockroll_home() / "prepare" / key.hexdigest()[:16]
    dockerfile = _write_context(folder, image, commands, copies)
    log(f"{task.id}: preparing the verifier's installs ({len(commands)} step(s)) on {image.name}")
    return build(dockerfile, folder, log=log)


def sandbox_probe(sb: Sandbox) -> Probe:
    """Whether packages are in the sandbox: "apt" ones installed (dpkg), "python" modules
    importable by python3."""

    def present(kind: str, names: list[str]) -> bool:
        if kind == "apt":
            return sb.exec(["dpkg", "-s", *names]).exit_code == 0
        modules = [n.lower().replace("-", "_") for n in names]
        # find_spec locates a module without importing it: ~10 ms instead of ~100 for pytest.
        code = "import importlib.util as u, sys; sys.exit(not all(map(u.find_spec, sys.argv[1:])))"
        return sb.exec(["python3", "-c", code, *modules]).exit_code == 0

    return present


def _present(step: Install, probe: Probe, read: Callable[[str], str | None]) -> bool:
    """Whether the image already has what `step` installs (npm: never known, so never)."""
    if step.kind == "npm":
        return False
    names = [bare_name(p) for p in step.packages]
    if step.requirements:
        text = read(step.requirements)
        listed = requirement_names(text) if text is not None else None
        if listed is None:
            return False
        names += listed
    if not names:
        return True
    if step.kind == "apt":
        return probe("apt", names)
    return probe("python", [MODULES.get(n.lower(), n) for n in names])


def _command(step: Install) -> str | None:
    """The shell command that installs what `step` asks for, with the network."""
    packages = " ".join(shlex.quote(p) for p in step.packages)
    if step.kind == "apt":
        return APT_INSTALL + packages if packages else None
    if step.kind == "python":
        parts = [f"-r {shlex.quote(step.requirements)}"] if step.requirements else []
        parts += [packages] if packages else []
        if not parts:
            return None
        # pip cannot replace a distribution's own packages (python3-pytest): install beside them
        args = " ".join(parts)
        return f"{_PIP}{args} || {_PIP}--ignore-installed {args}"
    where = f"cd {shlex.quote(step.directory)} && " if step.directory else ""
    return f"{where}npm install --no-audit --no-fund {packages}".rstrip()


def _host_reader(files: dict[str, Path | str]) -> Callable[[str], str | None]:
    """Read a sandbox path that the verifier's files will hold, from the host."""

    def read(path: str) -> str | None:
        for target, source in files.items():
            if not _under(path, target):
                continue
            if isinstance(source, str):
                return source if path == target else None
            host = source if path == target else source / path[len(target) :].lstrip("/")
            try:
                return host.read_text() if host.is_file() else None
            except (OSError, UnicodeDecodeError):
                return None
        return None

    return read


def _under(path: str, target: str) -> bool:
    """Whether `path` is `target` or inside it."""
    return path == target or path.startswith(target.rstrip("/") + "/")


def _digest(update: Callable[[bytes], None], source: Path | str) -> None:
    """Feed the content of a verifier file (or folder) to a hash."""
    if isinstance(source, str):
        update(source.encode())
        return
    for path in sorted([source] if source.is_file() else source.rglob("*")):
        if path.is_file():
            update(str(path.relative_to(source.parent)).encode() + b"\0" + path.read_bytes())


def _write_context(
    folder: Path, image: Image, commands: list[str], copies: dict[str, Path | str]
) -> Path:
    """A Dockerfile (and the files it copies) that builds the layer; written once, atomically."""
    dockerfile = folder / "Dockerfile"
    if dockerfile.is_file():
        return dockerfile
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.{secrets.token_hex(4)}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "files").mkdir(parents=True)
    lines = [f"FROM {image.name}", "USER root"]
    for n, (target, source) in enumerate(sorted(copies.items())):
        name = f"files/{n}"
        if isinstance(source, str):
            (tmp / name).write_text(source)
        elif source.is_dir():
            shutil.copytree(source, tmp / name, symlinks=True)
        else:
            shutil.copy2(source, tmp / name)
        lines.append(f"COPY {name} {target}")
    for command in commands:
        note = shlex.quote(f"rockroll: preparing the verifier: this step failed: {command[:200]}")
        lines.append(f"RUN ({command}) || echo {note} >&2")
    if copies:
        lines.append("RUN rm -rf " + " ".join(shlex.quote(t) for t in sorted(copies)))
    if user := default_user(image.config.get("user")):
        lines.append(f"USER {user}")
    (tmp / "Dockerfile").write_text("\n".join(lines) + "\n")
    try:
        os.rename(tmp, folder)
    except OSError:  # another run wrote it first
        shutil.rmtree(tmp, ignore_errors=True)
    return dockerfile
