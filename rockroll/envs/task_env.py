"""`TaskEnv`: a task's sandbox behind Gymnasium's reset/step API, without depending on gymnasium.

Actions are tool calls, so the same environment serves LLM agents (which emit tool calls) and
RL trainers (which need a reward and an end of episode).
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from rockroll.sandbox.errors import SandboxError
from rockroll.sandbox.images import Image
from rockroll.sandbox.sdk import Sandbox
from rockroll.tasks.model import Task
from rockroll.tasks.verify import VerifyResult, verify
from rockroll.tasks.workspace import open_sandbox, task_image

Tool = Literal["bash", "write_file", "submit"]

# tool -> argument -> (accepted types, required, what the agent is told is expected)
TOOLS: dict[str, dict[str, tuple[tuple[type, ...], bool, str]]] = {
    "bash": {
        "command": ((str,), True, "a string, the shell command to run"),
        "timeout": ((int, float), False, "a positive number of seconds"),
    },
    "write_file": {
        "path": ((str,), True, "a string, the file's path in the sandbox"),
        "content": ((str,), True, "a string, the file's whole new text"),
    },
    "submit": {},
}


class Action(BaseModel):
    """One tool call. A plain dict works too: `{"tool": ..., "arguments": {...}}` or flat keys."""

    model_config = ConfigDict(extra="forbid")

    tool: Tool
    arguments: dict[str, Any] = Field(default_factory=dict)


class ActionError(ValueError):
    """The agent's action cannot be carried out; the message is the observation it gets back."""


class TaskEnv:
    """One task, one sandbox per episode; `reset()` starts an episode, `step()` plays an action.

    Observations are text: the instruction after `reset()`, the tool's output after `step()`.
    The reward is 0 on every step but the last. `submit` ends the episode (terminated) with the
    verifier's reward; reaching `max_steps` without a submit ends it too (truncated), and the
    verifier still runs then, so the final reward is known either way. Malformed actions count
    as steps: the observation explains the mistake and `info["error"]` is set.

    Each bash command runs in a fresh shell in the task's working directory (`cd` and exports
    do not carry over; files do), with `command_timeout` seconds unless the action gives its own
    `timeout` (at most the task's `agent_timeout`). Output longer than `max_output` characters
    keeps its head and tail.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    render_mode: str | None = None

    def __init__(
        self,
        task: Task,
        *,
        max_steps: int = 50,
        command_timeout: float = 60.0,
        max_output: int = 16_000,
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        if command_timeout <= 0:
            raise ValueError(f"command_timeout must be positive, got {command_timeout}")
        self.task = task
        self.max_steps = max_steps
        self.command_timeout = command_timeout
        self.max_output = max_output
        self._sandbox: Sandbox | None = None
        self._image: Image | None = None
        self._steps = 0
        self._done = True

    # -- Gymnasium API --------------------------------------------------------------------------
    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Start an episode in a fresh sandbox; the observation is the task's instruction.

        `seed` and `options` are accepted for Gymnasium compatibility and ignored: the task is
        fixed when the environment is made (procedural tasks take their seed in `make`).
        """
        self.close()
        if self._image is None:
            self._image = task_image(self.task)
        self._sandbox = open_sandbox(self.task, self._image)
        self._steps = 0
        self._done = False
        return self.task.instruction, {
            "task_id": self.task.id,
            "source": self.task.source,
            "workdir": self._sandbox.spec.workdir,
        }

    def step(self, action: Action | dict[str, Any]) -> tuple[str, float, bool, bool, dict]:
        """Play one tool call: (observation, reward, terminated, truncated, info)."""
        sb = self._live_sandbox()
        self._steps += 1
        info: dict[str, Any] = {"step": self._steps}
        try:
            tool, args = _parse(action)
            info["tool"] = tool
            if tool == "submit":
                return self._finish(sb, "submitted", info, terminated=True)
            obs = self._bash(sb, args) if tool == "bash" else _write_file(sb, args)
        except ActionError as exc:
            obs = f"error: {exc}"
            info["error"] = str(exc)
        if self._steps >= self.max_steps:
            obs += f"\n\n[step limit of {self.max_steps} reached: the episode ends here]"
            return self._finish(sb, obs, info, terminated=False)
        return obs, 0.0, False, False, info

    def close(self) -> None:
        """Release the sandbox (safe to call any number of times); `reset()` starts anew."""
        sb, self._sandbox = getattr(self, "_sandbox", None), None
        self._done = True
        if sb is not None:
            sb.close()

    # -- conveniences ---------------------------------------------------------------------------
    @property
    def sandbox(self) -> Sandbox | None:
        """The current episode's sandbox (kept after the episode ends, until reset or close)."""
        return self._sandbox

    @property
    def steps(self) -> int:
        return self._steps

    def __enter__(self) -> TaskEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Best effort: at interpreter shutdown what close() needs may already be gone.
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        state = "open" if self._sandbox is not None else "closed"
        return f"TaskEnv({self.task.id!r}, step {self._steps}/{self.max_steps}, {state})"

    # -- internals ------------------------------------------------------------------------------
    def _live_sandbox(self) -> Sandbox:
        if self._sandbox is None:
            raise RuntimeError(f"{self.task.id}: no episode is running; call reset() first")
        if self._done:
            raise RuntimeError(
                f"{self.task.id}: the episode has ended (terminated or truncated); "
                "call reset() to start a new one"
            )
        return self._sandbox

    def _finish(
        self, sb: Sandbox, obs: str, info: dict[str, Any], *, terminated: bool
    ) -> tuple[str, float, bool, bool, dict]:
        self._done = True
        result = _verify(self.task, sb)
        info["verify"] = result.model_dump()
        verdict = "passed" if result.passed else f"not passed: {result.reason}"
        obs += f"\n[verifier: reward {result.reward:g}, {verdict}]"
        return obs, result.reward, terminated, not terminated, info

    def _bash(self, sb: Sandbox, args: dict[str, Any]) -> str:
        timeout = float(args.get("timeout", self.command_timeout))
        if timeout <= 0:
            raise ActionError(f"bash: argument 'timeout' must be {TOOLS['bash']['timeout'][2]}")
        timeout = min(timeout, self.task.agent_timeout)
        try:
            res = sb.exec(args["command"], timeout=timeout)
        except SandboxError as exc:
            raise ActionError(f"bash: the command could not run: {exc}") from None
        out = _clip(res.output, self.max_output)
        if out and not out.endswith("\n"):
            out += "\n"
        if res.timed_out:
            return f"{out}[timed out after {timeout:g} s; the command was killed]"
        return f"{out}[exit code {res.exit_code}]"


def _parse(action: object) -> tuple[str, dict[str, Any]]:
    """The tool and its checked arguments, or an ActionError saying what was expected."""
    if isinstance(action, Action):
        tool, args = action.tool, dict(action.arguments)
    elif isinstance(action, dict):
        tool = action.get("tool")
        if "arguments" in action:
            args = action["arguments"]
            if not isinstance(args, dict):
                raise ActionError(f"'arguments' must be an object, got {type(args).__name__}")
        else:
            args = {k: v for k, v in action.items() if k != "tool"}
    else:
        raise ActionError(
            f"an action is a tool call like {{'tool': 'bash', 'command': 'ls'}}, "
            f"got {type(action).__name__}"
        )
    if tool not in TOOLS:
        raise ActionError(f"unknown tool {tool!r}; the tools are {', '.join(map(repr, TOOLS))}")
    spec = TOOLS[tool]
    for name in args:
        if name not in spec:
            accepted = ", ".join(map(repr, spec)) or "none"
            raise ActionError(f"{tool}: unexpected argument {name!r} (accepted: {accepted})")
    for name, (types, required, expected) in spec.items():
        if name not in args:
            if required:
                raise ActionError(f"{tool}: missing argument {name!r}, expected {expected}")
            continue
        value = args[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ActionError(
                f"{tool}: argument {name!r} must be {expected}, got {type(value).__name__}"
            )
    return tool, args


def _write_file(sb: Sandbox, args: dict[str, Any]) -> str:
    data = args["content"].encode()
    try:
        sb.write_bytes(args["path"], data)
    except (SandboxError, OSError) as exc:
        raise ActionError(f"write_file: could not write {args['path']!r}: {exc}") from None
    return f"wrote {len(data)} bytes to {args['path']}"


def _verify(task: Task, sb: Sandbox) -> VerifyResult:
    """The verdict; a verifier that crashes gives reward 0 and says why, so training goes on."""
    try:
        return verify(task, sb)
    except Exception as exc:
        return VerifyResult(
            reward=0.0,
            passed=False,
            reason="verifier-error",
            output_tail=f"{type(exc).__name__}: {exc}"[-2000:],
        )


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    cut = len(text) - 2 * half
    return f"{text[:half]}\n[... {cut} characters cut ...]\n{text[-half:]}"
