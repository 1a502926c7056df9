"""`TaskEnv`: a task's sandbox behind Gymnasium's reset/step API; a `gymnasium.Env` when
gymnasium is installed (the `gym` extra), the same API without it.

Actions are calls of the agent's own tools (`rockroll.agent.tools`), validated by the same JSON
schemas, so the same environment serves LLM agents (which emit tool calls) and RL trainers
(which need a reward and an end of episode), and what a policy learns here is what the harness
runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from rockroll.agent.tools import (
    Tool,
    ToolContext,
    call_problem,
    default_tools,
    run_tool,
    tools_by_name,
)
from rockroll.envs.base import HAVE_GYMNASIUM, EnvBase
from rockroll.errors import UsageError
from rockroll.sandbox.images import Image
from rockroll.sandbox.sdk import Sandbox
from rockroll.tasks.schema import Task
from rockroll.tasks.verify import VerifyResult, verify
from rockroll.tasks.workspace import task_image, task_sandbox


class Action(BaseModel):
    """One tool call. A plain dict works too: `{"tool": ..., "arguments": {...}}` or flat keys."""

    model_config = ConfigDict(extra="forbid")

    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)


TaskDraw = Callable[[int], Task]
"""A task drawn from a seed: what a procedural family's environment plays (`reset(seed=)`)."""

MAX_TEXT = 1 << 24
"""The longest observation the observation space holds, in characters."""


UNREPEATABLE = ("duration",)
"""Tool details left out of `info["meta"]`: an info is the same for the same seed and actions."""


class ActionError(UsageError):
    """The agent's action is not a tool call; the message is the observation it gets back."""


class TaskEnv(EnvBase):
    """One task, one sandbox per episode; `reset()` starts an episode, `step()` plays an action.

    `task` is one task, or a draw (`seed -> Task`, as for a procedural family): then each
    `reset()` plays a new task drawn with the environment's `np_random`, so `reset(seed=S)`
    starts the same task every time and a sequence of unseeded resets after it is the same
    sequence too. For one fixed task the seed only seeds `np_random`.

    Observations are text: the instruction after `reset()`, the tool's output after `step()`.
    The reward is 0 on every step but the last. `submit` ends the episode (terminated) with the
    verifier's reward; reaching `max_steps` without a submit ends it too (truncated), and the
    verifier still runs then, so the final reward is known either way. Malformed actions and
    failed tool calls count as steps: the observation explains the mistake and `info["error"]`
    is set; `info["meta"]` holds the tool's details (`exit_code` of a bash command, ...), but
    not its timings, so that the same seed and actions give the same infos.

    The tools are the agent's (`default_tools()` unless `tools` is given; `tool_schemas` is
    their OpenAI `tools` list). bash runs in one shell per episode, as in the agent harness
    (`cd` and exports carry over), with `command_timeout` seconds unless the action gives its
    own `timeout`, never more than the task's `agent_timeout`. Output longer than `max_output`
    characters keeps its head and tail.

    With gymnasium installed, `observation_space` is text (`rockroll.envs.spaces.Text`) and
    `action_space` the tool calls (`ToolCalls`); without it both are None.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    render_mode: str | None = None

    def __init__(
        self,
        task: Task | TaskDraw,
        *,
        max_steps: int = 50,
        command_timeout: float = 60.0,
        max_output: int = 16_000,
        tools: list[Tool] | None = None,
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        if command_timeout <= 0:
            raise ValueError(f"command_timeout must be positive, got {command_timeout}")
        self._draw: TaskDraw | None = None if isinstance(task, Task) else task
        self.task: Task | None = task if isinstance(task, Task) else None
        self.max_steps = max_steps
        self.command_timeout = command_timeout
        self.max_output = max_output
        self.tools = tools_by_name(tools or default_tools())
        self._sandbox: Sandbox | None = None
        self._ctx: ToolContext | None = None
        self._stack = contextlib.ExitStack()  # the sandbox, and a task's services beside it
        self._image: Image | None = None
        self._steps = 0
        self._done = True
        self.observation_space: Any = None
        self.action_space: Any = None
        if HAVE_GYMNASIUM:
            from rockroll.envs.spaces import Text, ToolCalls

            self.observation_space = Text(MAX_TEXT)
            self.action_space = ToolCalls(self.tools)

    # -- Gymnasium API --------------------------------------------------------------------------
    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Start an episode in a fresh sandbox; the observation is the task's instruction.

        `seed` seeds `np_random` (Gymnasium's rule: only when given); an environment made from
        a draw plays a new task drawn with it. `options` takes no keys yet.
        """
        if options:
            raise UsageError(f"reset(options=...): no options are known, got {sorted(options)}")
        super().reset(seed=seed)
        self.close()
        if self._draw is not None:
            drawn = self._draw(int(self.np_random.integers(2**31)))
            if self.task is None or drawn.id != self.task.id:
                self._image = None
            self.task = drawn
        task = self._task()
        if self._image is None:
            self._image = task_image(task)
        self._sandbox = self._stack.enter_context(task_sandbox(task, self._image))
        self._ctx = ToolContext(
            sandbox=self._sandbox,
            max_output=self.max_output,
            command_timeout=min(self.command_timeout, task.agent_timeout),
        )
        self._steps = 0
        self._done = False
        return task.instruction, {
            "task_id": task.id,
            "source": task.source,
            "workdir": self._sandbox.spec.workdir,
        }

    def step(self, action: Action | dict[str, Any]) -> tuple[str, float, bool, bool, dict]:
        """Play one tool call: (observation, reward, terminated, truncated, info)."""
        sb, ctx = self._live()
        self._steps += 1
        info: dict[str, Any] = {"step": self._steps}
        try:
            name, args = _parse(action)
            problem = call_problem(self.tools, name, args)
            if problem:
                raise ActionError(problem)
        except ActionError as exc:
            obs = f"error: {exc}"
            info["error"] = str(exc)
        else:
            info["tool"] = name
            result = run_tool(self.tools[name], ctx, self._capped(args))
            info["meta"] = {k: v for k, v in result.meta.items() if k not in UNREPEATABLE}
            if result.error:
                info["error"] = result.output
            if result.done:
                return self._finish(sb, result.output, info, terminated=True)
            obs = result.output
        if self._steps >= self.max_steps:
            obs += f"\n\n[step limit of {self.max_steps} reached: the episode ends here]"
            return self._finish(sb, obs, info, terminated=False)
        return obs, 0.0, False, False, info

    def close(self) -> None:
        """Release the sandbox (safe to call any number of times); `reset()` starts anew."""
        ctx, self._ctx = getattr(self, "_ctx", None), None
        self._sandbox = None
        self._done = True
        if ctx is not None:
            ctx.close()
        if (stack := getattr(self, "_stack", None)) is not None:
            stack.close()

    # -- conveniences ---------------------------------------------------------------------------
    @property
    def tool_schemas(self) -> list[dict]:
        """The tools as an OpenAI `tools` list, for a model that picks the actions."""
        return [tool.schema() for tool in self.tools.values()]

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

    def __str__(self) -> str:
        return repr(self)

    def __repr__(self) -> str:
        state = "open" if self._sandbox is not None else "closed"
        name = self.task.id if self.task is not None else "a task drawn at reset"
        return f"TaskEnv({name!r}, step {self._steps}/{self.max_steps}, {state})"

    # -- internals ------------------------------------------------------------------------------
    def _task(self) -> Task:
        if self.task is None:
            raise RuntimeError("no task is drawn yet; call reset() first")
        return self.task

    def _live(self) -> tuple[Sandbox, ToolContext]:
        name = self.task.id if self.task is not None else "TaskEnv"
        if self._sandbox is None or self._ctx is None:
            raise RuntimeError(f"{name}: no episode is running; call reset() first")
        if self._done:
            raise RuntimeError(
                f"{name}: the episode has ended (terminated or truncated); "
                "call reset() to start a new one"
            )
        return self._sandbox, self._ctx

    def _capped(self, args: dict[str, Any]) -> dict[str, Any]:
        """The arguments, a bash `timeout` held to the task's own time limit."""
        timeout = args.get("timeout")
        if isinstance(timeout, int | float) and not isinstance(timeout, bool):
            return {**args, "timeout": min(timeout, self._task().agent_timeout)}
        return args

    def _finish(
        self, sb: Sandbox, obs: str, info: dict[str, Any], *, terminated: bool
    ) -> tuple[str, float, bool, bool, dict]:
        self._done = True
        result = _verify(self._task(), sb)
        info["verify"] = result.model_dump()
        verdict = "passed" if result.passed else f"not passed: {result.reason}"
        obs += f"\n[verifier: reward {result.reward:g}, {verdict}]"
        return obs, result.reward, terminated, not terminated, info


def _parse(action: object) -> tuple[str, dict[str, Any]]:
    """The tool and its arguments (their schema is checked next), or an ActionError saying what
    an action looks like."""
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
    if not isinstance(tool, str):
        raise ActionError(f"'tool' must name a tool, got {tool!r}")
    return tool, args


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
