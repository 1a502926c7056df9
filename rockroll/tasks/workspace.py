"""A task's sandbox: its image (built from the task's Dockerfile if needed) and its files."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rockroll.errors import SandboxError, TaskError
from rockroll.sandbox.dockerfile import BuildError, UnmappedBase, build
from rockroll.sandbox.images import Image, get_image
from rockroll.sandbox.paths import rockroll_home
from rockroll.sandbox.sdk import Sandbox
from rockroll.tasks.compose import ServiceUnhealthy, running_services
from rockroll.tasks.prepare import prepared_image
from rockroll.tasks.schema import Service, Task


def task_image(task: Task, log: Callable[[str], None] = lambda s: None) -> Image:
    """The image the task runs in, with what its tests install already installed
    (`rockroll.tasks.prepare`); a Dockerfile is built once per distinct content."""
    env = task.environment
    try:
        if env.dockerfile is not None:
            image = build(env.dockerfile, env.context, log=log, timeout=env.build_timeout)
        else:
            image = _named_image(env.image or "base", log)
        return prepared_image(task, image, log)
    except UnmappedBase as exc:  # no stand-in for a registry image: say how to add one
        raise TaskError(task.id, "image-missing", str(exc)) from None
    except BuildError as exc:
        raise TaskError(task.id, _build_reason(exc), str(exc)) from None
    except SandboxError as exc:
        raise TaskError(task.id, "image-missing", str(exc)) from None


def _named_image(ref: str, log: Callable[[str], None]) -> Image:
    """A local image of that name, else the stand-in for a registry image (Harbor's
    `docker_image`), built as the Dockerfile `FROM ref` would be."""
    try:
        return get_image(ref)
    except SandboxError:
        pass
    folder = rockroll_home() / "from" / hashlib.sha256(ref.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    dockerfile = folder / "Dockerfile"
    if not dockerfile.is_file():
        tmp = folder / f".Dockerfile.{os.getpid()}.{threading.get_ident()}"
        tmp.write_text(f"FROM {ref}\n")
        os.replace(tmp, dockerfile)
    return build(dockerfile, folder, log=log)


def open_sandbox(task: Task, image: Image, **overrides: Any) -> Sandbox:
    """A fresh sandbox for the task, with the image's and the task's settings and files;
    `overrides` are further `Sandbox.create` options (detached, ttl...). A task with Compose
    services needs them running: `task_sandbox` starts them (and stops them after), this
    refuses such a task."""
    if task.environment.services:
        raise TaskError(
            task.id,
            "invalid-task",
            "the task has Compose services, which `rockroll bench run`, training and "
            "environments start; `agent run` does not yet",
        )
    return _open(task, image, **overrides)


def _open(task: Task, image: Image, **overrides: Any) -> Sandbox:
    defaults = image.defaults()
    settings: dict[str, Any] = {
        "memory": task.resources.memory,
        "cpus": task.resources.cpus,
        "pids": task.resources.pids,
        "disk": task.resources.disk,
        "network": task.network,
        "env": defaults["env"] | task.environment.env,
        "workdir": task.environment.workdir or defaults["workdir"],
        "user": defaults["user"],
    }
    sb = Sandbox.create(image.name, **(settings | overrides))
    try:
        put_files(sb, task.files)
        run_scripts(sb, task.setup, task.id, "setup", settings["workdir"])
    except BaseException:
        sb.close()
        raise
    return sb


@contextlib.contextmanager
def task_sandbox(
    task: Task, image: Image, log: Callable[[str], None] = lambda s: None, **overrides: Any
) -> Iterator[Sandbox]:
    """The task's sandbox, as a context; for a multi-container task with its Compose services
    running beside it on a private network (`rockroll.tasks.compose`), stopped on exit."""
    services = task.environment.services
    if not services:
        with _open(task, image, **overrides) as sb:
            yield sb
        return
    if task.network != "none":
        raise TaskError(
            task.id, "invalid-task", "a task with services runs on their private network only"
        )
    images = {s.name: _service_image(task, s, log) for s in services}
    env = task.environment
    main = lambda: _open(task, image, **overrides)  # noqa: E731
    with contextlib.ExitStack() as stack:
        try:
            sb = stack.enter_context(
                running_services(services, images, main, log, env.main, env.subnet)
            )
        except ServiceUnhealthy as exc:  # as `docker compose up`: a dependency failed to start
            reason = "needs-network" if exc.unreached else "service-unhealthy"
            raise TaskError(task.id, reason, str(exc)) from None
        yield sb


def _service_image(task: Task, service: Service, log: Callable[[str], None]) -> Image:
    try:
        if service.dockerfile is not None:
            return build(service.dockerfile, service.context, log=log)
        return _named_image(service.image or "base", log)
    except UnmappedBase as exc:
        raise TaskError(task.id, "image-missing", f"service {service.name}: {exc}") from None
    except BuildError as exc:
        raise TaskError(task.id, _build_reason(exc), f"service {service.name}: {exc}") from None


def _build_reason(exc: BuildError) -> str:
    return "needs-network" if exc.unreached else "build-failed"


SCRIPT_DIR = "/run/rockroll-scripts"


def run_scripts(sb: Sandbox, scripts: list[str], task_id: str, what: str, cwd: str) -> None:
    """Run a task's `setup` (or its verifier's `before`) scripts as root in `cwd`. Each is
    written by the host to a root-only file and run from there, so its text is in no command
    line the monitor sees, and removed after; a failing one stops the task with its output."""
    for n, script in enumerate(scripts):
        path = f"{SCRIPT_DIR}/{what}-{n}.sh"
        sb.exec(["mkdir", "-p", "-m", "700", SCRIPT_DIR], user="root")
        sb.write_text(path, script, mode=0o700)
        try:
            res = sb.exec(["bash", path], user="root", cwd=cwd or "/", timeout=120)
        finally:
            sb.remove(SCRIPT_DIR)
        if res.exit_code != 0:
            raise TaskError(
                task_id,
                f"{what}-failed",
                f"the task's {what} script {n + 1} exited {res.exit_code}: {res.output[-500:]}",
            )


def put_files(sb: Sandbox, files: dict[str, Path | str]) -> None:
    """Copy host files and directories (Path) or write text (str) to sandbox paths."""
    for target, source in files.items():
        if isinstance(source, Path):
            if not source.exists():
                raise FileNotFoundError(f"{source} does not exist (to be copied to {target})")
            sb.upload(source, target)
            if source.is_file() and os.access(source, os.X_OK):
                sb.exec(["chmod", "+x", target], user="root")
        else:
            sb.write_text(target, source)
