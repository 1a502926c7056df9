"""A Harbor environment provider: `harbor run` with its trials in rockroll sandboxes.

    harbor run -p TASK -a oracle -e rockroll.envs.harbor_environment:RockrollEnvironment

Harbor (Python 3.12 or later, `pip install harbor` beside rockroll) loads this class by its
import path. The task's image is built as rockroll builds a Harbor task's (its
`environment/Dockerfile`, or the stand-in for its `docker_image`, with what its tests install
installed beforehand), and the sandbox gets the task's limits, working directory and network
(none unless the task allows the internet). Harbor then uploads, runs and downloads through
the methods here. Options (`--ek key=value`): `server` and `token` to run the sandboxes on a
`rockroll serve` (else ROCKROLL_SERVER / ROCKROLL_TOKEN, else this machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from pathlib import Path
from typing import Any

from harbor.environments.base import BaseEnvironment, ExecResult
from harbor.environments.capabilities import EnvironmentCapabilities
from harbor.environments.options import EnvironmentOptions

from rockroll.sandbox.sdk import Sandbox
from rockroll.tasks.harbor import load_harbor
from rockroll.tasks.workspace import task_image, task_sandbox

ENVIRONMENT_TYPE = "rockroll"


class RockrollOptions(EnvironmentOptions):
    """`--ek` options of the rockroll environment."""

    server: str | None = None
    token: str | None = None


class RockrollEnvironment(BaseEnvironment):
    """One Harbor trial's environment: one rockroll sandbox, made at `start`, closed at `stop`."""

    options_model = RockrollOptions
    options: RockrollOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stack = contextlib.ExitStack()
        self._sandbox: Sandbox | None = None

    @staticmethod
    def type() -> str:
        return ENVIRONMENT_TYPE

    @property
    def capabilities(self) -> EnvironmentCapabilities:
        return EnvironmentCapabilities(disable_internet=True)

    def _validate_definition(self) -> None:
        dockerfile = self.environment_dir / "Dockerfile"
        if not dockerfile.is_file() and not self.task_env_config.docker_image:
            raise FileNotFoundError(
                f"{dockerfile} not found and the task names no docker_image: rockroll builds "
                "the task's image from one of them"
            )

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self, force_build: bool) -> None:
        await asyncio.to_thread(self._start)
        await self.ensure_dirs(self._mount_targets(writable_only=True))

    def _start(self) -> None:
        task = load_harbor(self.environment_dir.parent)
        image = task_image(task, log=self.logger.info)
        overrides: dict[str, Any] = {}
        if self.options.server or self.options.token:
            overrides |= {"server": self.options.server, "token": self.options.token}
        if self._effective_memory_mb:
            overrides["memory"] = f"{self._effective_memory_mb}m"
        if self._effective_cpus:
            overrides["cpus"] = float(self._effective_cpus)
        self._sandbox = self._stack.enter_context(task_sandbox(task, image, **overrides))

    async def stop(self, delete: bool) -> None:
        await asyncio.to_thread(self._stack.close)
        self._sandbox = None

    def _live(self) -> Sandbox:
        if self._sandbox is None:
            raise RuntimeError("the rockroll sandbox is not running: call start() first")
        return self._sandbox

    # -- commands -------------------------------------------------------------------------------
    async def exec(
        self,
        command: str,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout_sec: int | None = None,
        user: str | int | None = None,
    ) -> ExecResult:
        sandbox = self._live()
        user = self._resolve_user(user)
        result = await asyncio.to_thread(
            sandbox.exec,
            ["bash", "-c", command],
            cwd=cwd or self.task_env_config.workdir or None,
            env=self._merge_env(env),
            timeout=timeout_sec,
            user=None if user is None else str(user),
        )
        code = 124 if result.timed_out else result.exit_code
        return ExecResult(stdout=result.stdout, stderr=result.stderr, return_code=code)

    # -- files ----------------------------------------------------------------------------------
    async def upload_file(self, source_path: Path | str, target_path: str) -> None:
        await asyncio.to_thread(self._live().upload, Path(source_path), target_path)

    async def upload_dir(self, source_dir: Path | str, target_dir: str) -> None:
        await asyncio.to_thread(self._live().upload, Path(source_dir), target_dir)

    async def download_file(self, source_path: str, target_path: Path | str) -> None:
        await asyncio.to_thread(self._live().download, source_path, Path(target_path))

    async def download_dir(self, source_dir: str, target_dir: Path | str) -> None:
        await asyncio.to_thread(self._live().download, source_dir, Path(target_dir))

    def __repr__(self) -> str:
        state = self._sandbox.id if self._sandbox is not None else "not started"
        return f"RockrollEnvironment({shlex.quote(self.session_id)}, {state})"
