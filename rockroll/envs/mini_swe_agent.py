"""A mini-swe-agent environment whose commands run in a rockroll sandbox (the `mini` extra).

mini-swe-agent runs each action as a fresh `bash` process, on the host unless told otherwise;
this class is its environment protocol (`execute`, `get_template_vars`, `serialize`) over a
sandbox instead. Name it in a mini-swe-agent config or on its command line:

    mini --environment-class rockroll.envs.mini_swe_agent.RockrollEnvironment ...

    environment:
      environment_class: rockroll.envs.mini_swe_agent.RockrollEnvironment
      image: base            # or a snapshot id; or task: PATH for a rockroll task's sandbox
      cwd: /app
      network: none          # or registries, full
      memory: 2g

With `task` (a task folder or a name in the tasks' grammar), the sandbox is that task's, set up
as rockroll's harness gets it, and `verify()` scores what the agent left. With a server named
(`server`/`token`, or ROCKROLL_SERVER/ROCKROLL_TOKEN) the sandbox runs on that `rockroll serve`.
"""

from __future__ import annotations

import contextlib
import platform
from typing import Any

from minisweagent.exceptions import Submitted
from minisweagent.utils.serialize import recursive_merge
from pydantic import BaseModel, ConfigDict

from rockroll.sandbox.sdk import Sandbox
from rockroll.tasks.schema import Task
from rockroll.tasks.suites import load_one
from rockroll.tasks.verify import VerifyResult, verify
from rockroll.tasks.workspace import task_image, task_sandbox

SUBMIT_MARKER = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
"""mini-swe-agent's word for "done": the first line of a successful command's output."""


class RockrollEnvironmentConfig(BaseModel):
    """What `RockrollEnvironment` takes (mini-swe-agent's `environment:` section)."""

    model_config = ConfigDict(extra="forbid")

    image: str = "base"
    """The image (or snapshot id) of the sandbox; ignored with `task`."""
    task: str | None = None
    """A rockroll task (a folder, or a name such as `humaneval/3`): its sandbox, and `verify()`."""
    cwd: str = "/app"
    """Where commands run unless an action names another directory (with `task` and no cwd
    given: the task's own working directory)."""
    env: dict[str, str] = {}
    """Environment variables of every command."""
    timeout: int = 30
    """Seconds a command may run before it is killed (an action's own timeout wins)."""
    memory: str = "2g"
    cpus: float = 1.0
    network: str = "none"
    """none (the default), registries, or full."""
    server: str | None = None
    token: str | None = None


class RockrollEnvironment:
    """mini-swe-agent's environment protocol over one rockroll sandbox (made when constructed,
    closed by `cleanup()` or when the object goes away)."""

    def __init__(self, *, config_class: type = RockrollEnvironmentConfig, **kwargs: Any) -> None:
        self.config = config_class(**kwargs)
        self._stack = contextlib.ExitStack()
        self.task: Task | None = None
        if self.config.task:
            self.task = load_one(self.config.task)
            self.sandbox = self._stack.enter_context(task_sandbox(self.task, task_image(self.task)))
        else:
            self.sandbox = self._stack.enter_context(
                Sandbox.create(
                    self.config.image,
                    memory=self.config.memory,
                    cpus=self.config.cpus,
                    network=self.config.network,
                    workdir=self.config.cwd,
                    server=self.config.server,
                    token=self.config.token,
                )
            )
        explicit = "cwd" in self.config.model_fields_set
        self.cwd = self.sandbox.spec.workdir if self.task and not explicit else self.config.cwd

    def execute(self, action: dict, cwd: str = "", *, timeout: int | None = None) -> dict[str, Any]:
        """Run `action["command"]` in a fresh bash in the sandbox; output is stdout and stderr
        interleaved, as mini-swe-agent's local environment gives it. Raises `Submitted` when
        the output starts with the submit marker."""
        command = action.get("command", "")
        seconds = timeout or self.config.timeout
        try:
            result = self.sandbox.exec(
                ["bash", "-c", "exec 2>&1\n" + command],
                cwd=cwd or self.cwd,
                env=self.config.env or None,
                timeout=seconds,
            )
        except Exception as exc:  # the sandbox failed, not the command: the agent is told
            output = {
                "output": "",
                "returncode": -1,
                "exception_info": f"An error occurred while executing the command: {exc}",
                "extra": {"exception_type": type(exc).__name__, "exception": str(exc)},
            }
        else:
            output = {"output": result.stdout, "returncode": result.exit_code, "exception_info": ""}
            if result.timed_out:
                output |= {
                    "returncode": -1,
                    "exception_info": f"The command timed out after {seconds} seconds and was "
                    "killed, with everything it started.",
                    "extra": {"exception_type": "TimeoutExpired"},
                }
        self._check_finished(output)
        return output

    def verify(self) -> VerifyResult:
        """The task's verdict on the sandbox as the agent left it (needs `task`)."""
        if self.task is None:
            raise ValueError("verify() needs a task: give the environment `task: PATH`")
        return verify(self.task, self.sandbox)

    def get_template_vars(self, **kwargs: Any) -> dict[str, Any]:
        return recursive_merge(self.config.model_dump(), platform.uname()._asdict(), kwargs)

    def serialize(self) -> dict:
        return {
            "info": {
                "config": {
                    "environment": self.config.model_dump(mode="json"),
                    "environment_type": f"{type(self).__module__}.{type(self).__name__}",
                    "sandbox": self.sandbox.id,
                }
            }
        }

    def cleanup(self) -> None:
        """Close the sandbox (safe to call again)."""
        self._stack.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.cleanup()

    @staticmethod
    def _check_finished(output: dict) -> None:
        lines = output.get("output", "").lstrip().splitlines(keepends=True)
        if lines and lines[0].strip() == SUBMIT_MARKER and output["returncode"] == 0:
            submission = "".join(lines[1:])
            raise Submitted(
                {
                    "role": "exit",
                    "content": submission,
                    "extra": {"exit_status": "Submitted", "submission": submission},
                }
            )
