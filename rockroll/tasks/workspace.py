"""A task's sandbox: its image (built from the task's Dockerfile if needed) and its files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rockroll.errors import SandboxError, TaskError
from rockroll.sandbox.dockerfile import BuildError, build
from rockroll.sandbox.images import Image, get_image
from rockroll.sandbox.sdk import Sandbox
from rockroll.tasks.schema import Task


def task_image(task: Task, log: Callable[[str], None] = lambda s: None) -> Image:
    """The image the task runs in; a Dockerfile is built once per distinct content."""
    env = task.environment
    try:
        if env.dockerfile is not None:
            return build(env.dockerfile, env.context, log=log)
        return get_image(env.image or "base")
    except BuildError as exc:
        raise TaskError(task.id, "build-failed", str(exc)) from None
    except SandboxError as exc:
        raise TaskError(task.id, "image-missing", str(exc)) from None


def open_sandbox(task: Task, image: Image, **overrides: Any) -> Sandbox:
    """A fresh sandbox for the task, with the image's and the task's settings and files;
    `overrides` are further `Sandbox.create` options (detached, ttl...)."""
    config = image.config
    sb = Sandbox.create(
        image.name,
        memory=task.resources.memory,
        cpus=task.resources.cpus,
        pids=task.resources.pids,
        disk=task.resources.disk,
        network=task.network,
        env=dict(config.get("env", {})) | task.environment.env,
        workdir=task.environment.workdir or config.get("workdir", "/"),
        **overrides,
    )
    try:
        put_files(sb, task.files)
    except BaseException:
        sb.close()
        raise
    return sb


def put_files(sb: Sandbox, files: dict[str, Path | str]) -> None:
    """Copy host files and directories (Path) or write text (str) to sandbox paths."""
    for target, source in files.items():
        if isinstance(source, Path):
            if not source.exists():
                raise FileNotFoundError(f"{source} does not exist (to be copied to {target})")
            sb.upload(source, target)
            if source.is_file() and os.access(source, os.X_OK):
                sb.exec(["chmod", "+x", target])
        else:
            sb.write_text(target, source)
