"""The agent loop: messages -> model -> tool calls -> results appended -> repeat.

It ends with a named reason: the model submitted, or a limit hit (turns, tokens, wall time,
consecutive format errors), or the model or the sandbox failed. Malformed replies are answered
with an error the model can act on; repeated identical calls are pointed out. The trajectory is
written after every step.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass

from rockroll.agent.context import ContextManager
from rockroll.agent.tools import (
    CommandRules,
    Tool,
    ToolContext,
    call_problem,
    default_tools,
    tools_by_name,
)
from rockroll.agent.tools.command import as_commands, commands_section, install_commands
from rockroll.agent.trajectory import (
    AtifFinalMetrics,
    AtifMetrics,
    AtifObservation,
    AtifResult,
    AtifToolCall,
    Trajectory,
)
from rockroll.errors import ConfigError, ModelError, SandboxError
from rockroll.models import Completion, Model, textformat
from rockroll.models.messages import Message, ToolCall
from rockroll.sandbox.sdk import Sandbox

Termination = Literal[
    "submitted", "answered", "max_turns", "max_tokens", "max_seconds", "format_errors",
    "model_error", "sandbox_error", "unsafe",
]  # fmt: skip

SYSTEM_PROMPT = """You are an autonomous agent working in a Linux sandbox (working directory \
{workdir}). Solve the task by running commands and editing files with the tools below. \
There is no network. When the task is done, submit.
"""


# A pydantic dataclass, not a BaseModel: callers derive configs with `dataclasses.replace`
# (validated again) and store them with `dataclasses.asdict`.
@pydantic_dataclass(config=ConfigDict(extra="forbid", validate_assignment=True))
class AgentConfig:
    """Limits and formats of a run. Every limit ends the run with its own reason.

    Validated: an unknown field or a value of the wrong type raises pydantic's ValidationError
    naming the field; `build_agent_config` turns that into one ConfigError line for a user.
    """

    max_turns: int = 50
    max_total_tokens: int | None = None
    max_seconds: float | None = None
    max_format_errors: int = 3
    repeat_warning: int = 3
    action_format: Literal["auto", "native", "tool_call", "bash"] = "auto"
    max_tokens_per_turn: int = 1024
    temperature: float = 0.0
    seed: int | None = None
    command_timeout: float = 120.0
    context_mode: Literal["compact", "linear"] = "compact"
    keep_last: int = 10
    # Chat: a reply without a tool call answers the user ("answered") instead of being a
    # format error, and the next user message continues the same state.
    interactive: bool = False


def build_agent_config(options: dict[str, Any], where: str = "agent settings") -> AgentConfig:
    """An AgentConfig from settings a user gave; a bad one is a ConfigError naming the field."""
    try:
        return AgentConfig(**options)
    except ValidationError as exc:
        raise ConfigError(f"{where}: " + "; ".join(_problem(e) for e in exc.errors())) from None


def _problem(error: Any) -> str:
    name = ".".join(str(p) for p in error["loc"]) or "(settings)"
    if error["type"] == "unexpected_keyword_argument":
        fields = ", ".join(AgentConfig.__dataclass_fields__)
        return f"unknown setting {name!r}; the settings are: {fields}"
    return f"{name!r}: {error['msg']}, got {error.get('input')!r:.60}"


@dataclass
class RunResult:
    termination: Termination
    turns: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    trajectory: Trajectory
    error: str | None = None
    events: list[dict] = field(default_factory=list)

    def record(self) -> dict:
        """The final JSON record of a headless run."""
        return {
            "session_id": self.trajectory.session_id,
            "termination": self.termination,
            "turns": self.turns,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


class AgentLoop:
    """One agent: a model, tools and limits. `run()` drives it in a sandbox."""

    def __init__(
        self,
        model: Model,
        *,
        tools: list[Tool] | None = None,
        config: AgentConfig | None = None,
        rules: CommandRules | None = None,
    ) -> None:
        self.model = model
        self.tools = tools or default_tools()
        self.by_name = tools_by_name(self.tools)
        self.config = config or AgentConfig()
        self.rules = rules or CommandRules(mode="yolo")

    @property
    def action_format(self) -> str:
        fmt = self.config.action_format
        if fmt == "auto":
            return "native" if self.model.native_tools else "tool_call"
        return fmt

    def start(self, instruction: str, workdir: str) -> LoopState:
        """A fresh episode: the system prompt (with the tool format) and the task."""
        system = SYSTEM_PROMPT.format(workdir=workdir)
        if self.action_format != "native":
            schemas = [t.schema() for t in self.tools]
            system += "\n" + textformat.system_prompt_section(self.action_format, schemas)
        if self.action_format == "bash" and (commands := as_commands(self.tools)):
            system += "\n\n" + commands_section(commands)
        state = LoopState(
            messages=[
                Message(role="system", content=system),
                Message(role="user", content=instruction),
            ]
        )
        state.trajectory.agent.model_name = self.model.name
        state.trajectory.add("system", system)
        state.trajectory.add("user", instruction)
        return state

    def run(
        self,
        instruction: str | None,
        sandbox: Sandbox,
        *,
        workdir: str | None = None,
        trajectory_path: Path | None = None,
        on_event: Callable[[dict], None] = lambda e: None,
        state: LoopState | None = None,
        on_step: Callable[[LoopState], None] = lambda s: None,
    ) -> RunResult:
        """Run until a termination; `state` continues an earlier run (resume, or chat with a
        new user message already added), and `on_step` sees the state after every step."""
        cfg = self.config
        workdir = workdir or sandbox.spec.workdir
        if state is None:
            if instruction is None:
                raise ValueError("give an instruction, or the state of a run to continue")
            state = self.start(instruction, workdir)
            if self.action_format == "bash":
                install_commands(as_commands(self.tools), sandbox)
        state.begin()
        ctx = ToolContext(
            sandbox=sandbox,
            workdir=workdir,
            rules=self.rules,
            command_timeout=cfg.command_timeout,
            todo=state.todo,
            read_files=state.read_files,
        )
        traj = state.trajectory
        schemas = [t.schema() for t in self.tools]
        context = ContextManager(
            window=self.model.context_window, mode=cfg.context_mode, keep_last=cfg.keep_last
        )

        def save() -> None:
            traj.extra = {"termination": state.termination, "turns": state.turns}
            if trajectory_path is not None:
                traj.save(trajectory_path)
            on_step(state)

        try:
            save()
            while state.termination is None:
                self._step(state, ctx, context, schemas, on_event)
                save()
        finally:
            ctx.close()
        traj.final_metrics = AtifFinalMetrics(
            total_prompt_tokens=state.prompt_tokens,
            total_completion_tokens=state.completion_tokens,
            total_steps=len(traj.steps),
        )
        save()
        on_event({"type": "end", "termination": state.termination})
        return RunResult(
            termination=state.termination or "model_error",
            turns=state.turns,
            prompt_tokens=state.prompt_tokens,
            completion_tokens=state.completion_tokens,
            seconds=state.elapsed(),
            trajectory=traj,
            error=state.error,
            events=state.events,
        )

    def _step(
        self,
        state: LoopState,
        ctx: ToolContext,
        context: ContextManager,
        schemas: list[dict],
        on_event: Callable[[dict], None],
    ) -> None:
        """One model call and the tools it asked for; sets `state.termination` when done."""
        if (reason := self._limit(state)) is not None:
            state.termination = reason
            return
        completion = self._complete(state, ctx, context, schemas, on_event)
        if completion is None:
            return
        state.turns += 1
        state.prompt_tokens += completion.prompt_tokens or 0
        state.completion_tokens += completion.completion_tokens or 0
        reply = completion.message
        calls, errors = self._actions(reply)
        state.messages.append(reply)
        results = self._act(state, ctx, calls, errors)
        self._answer(state.messages, results)
        self._record_step(state, completion, calls, errors, results, on_event)

    def _complete(
        self,
        state: LoopState,
        ctx: ToolContext,
        context: ContextManager,
        schemas: list[dict],
        on_event: Callable[[dict], None],
    ) -> Completion | None:
        """The model's next reply to the (managed) history; None when the model failed."""
        cfg = self.config
        try:
            state.messages, events = context.manage(state.messages, self.model, ctx.todo)
            for event in events:
                self._record_context(event, state, on_event)
            return self.model.complete(
                state.messages,
                schemas if self.action_format == "native" else None,
                max_tokens=cfg.max_tokens_per_turn,
                temperature=cfg.temperature,
                # One seed per turn: the same seed every turn would repeat the same draws.
                seed=None if cfg.seed is None else cfg.seed + state.turns,
            )
        except ModelError as exc:
            state.termination, state.error = "model_error", str(exc)
            return None

    def _act(
        self, state: LoopState, ctx: ToolContext, calls: list[ToolCall], errors: list[str]
    ) -> list[tuple[ToolCall | None, str, bool]]:
        """Run the reply's tool calls (or answer its format errors): (call, output, failed)."""
        results: list[tuple[ToolCall | None, str, bool]] = []
        if self.config.interactive and not calls and not errors:
            state.termination = "answered"
        elif errors or not calls:
            state.format_errors += 1
            text = "; ".join(errors) or "no tool call found: call a tool, or submit when done"
            results.append((None, f"error: {text}", True))
            if state.format_errors >= self.config.max_format_errors:
                state.termination = "format_errors"
        else:
            state.format_errors = 0
            for call in calls:
                output, failed, done = self._call(call, ctx, state)
                results.append((call, output, failed))
                if done:
                    state.termination = "submitted"
                    break
                if state.termination is not None:
                    break
        return results

    def _record_step(
        self,
        state: LoopState,
        completion: Completion,
        calls: list[ToolCall],
        errors: list[str],
        results: list[tuple[ToolCall | None, str, bool]],
        on_event: Callable[[dict], None],
    ) -> None:
        """The turn as an ATIF agent step, and as a `step` event."""
        reply = completion.message
        state.trajectory.add(
            "agent",
            reply.content,
            model_name=self.model.name,
            tool_calls=[
                AtifToolCall(tool_call_id=c.id, function_name=c.name, arguments=c.arguments)
                for c in calls
            ]
            or None,
            observation=AtifObservation(
                results=[
                    AtifResult(source_call_id=c.id if c else None, content=o) for c, o, _ in results
                ]
            ),
            metrics=AtifMetrics(
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
                prompt_token_ids=completion.prompt_token_ids,
                completion_token_ids=completion.token_ids,
                logprobs=completion.logprobs,
                extra={"forced": True} if completion.forced else None,
            ),
        )
        on_event(
            {
                "type": "step",
                "turn": state.turns,
                "calls": [c.name for c in calls],
                "errors": errors,
                "message": reply.content,
                "results": [o for _, o, _ in results],
            }
        )

    def _record_context(
        self, event: dict, state: LoopState, on_event: Callable[[dict], None]
    ) -> None:
        """Compaction is a system step of the trajectory, so a run can be replayed as it was."""
        state.prompt_tokens += event.get("summary_prompt_tokens") or 0
        state.completion_tokens += event.get("summary_completion_tokens") or 0
        state.trajectory.add(
            "system",
            f"context management: {event['type']}",
            observation=AtifObservation(results=[AtifResult(content=json.dumps(event))]),
            extra={"event": event},
        )
        state.events.append(event)
        on_event({"type": "context", **event})

    def _limit(self, state: LoopState) -> Termination | None:
        cfg = self.config
        if state.turns >= cfg.max_turns:
            return "max_turns"
        used = state.prompt_tokens + state.completion_tokens
        if cfg.max_total_tokens is not None and used >= cfg.max_total_tokens:
            return "max_tokens"
        if cfg.max_seconds is not None and state.elapsed() >= cfg.max_seconds:
            return "max_seconds"
        return None

    def _time_left(self, state: LoopState) -> float:
        limit = self.config.command_timeout
        if self.config.max_seconds is not None:
            limit = min(limit, self.config.max_seconds - state.elapsed())
        return max(limit, 1.0)

    def _actions(self, reply: Message) -> tuple[list[ToolCall], list[str]]:
        fmt = self.action_format
        if fmt == "native":
            calls = reply.tool_calls
            errors = [
                f"the arguments of {c.name} are not valid JSON: {c.arguments['__raw__']!r}"
                for c in calls
                if "__raw__" in c.arguments
            ]
            if not calls and "<tool_call>" in reply.content:
                # A server's tool parser left a broken block in the text: say what is wrong.
                errors += textformat.parse_tool_calls(reply.content)[1]
            return [c for c in calls if "__raw__" not in c.arguments], errors
        if fmt == "bash":
            command, error = textformat.parse_bash_block(reply.content)
            if error:
                return [], [error]
            if command == textformat.SUBMIT:
                return [ToolCall(id="call_1", name="submit")], []
            return [ToolCall(id="call_1", name="bash", arguments={"command": command})], []
        calls, errors = textformat.parse_tool_calls(reply.content)
        return calls, errors

    def _call(self, call: ToolCall, ctx: ToolContext, state: LoopState) -> tuple[str, bool, bool]:
        problem = call_problem(self.by_name, call.name, call.arguments)
        if problem:
            return f"error: {problem}", True, False
        tool = self.by_name[call.name]
        arguments = dict(call.arguments)
        if isinstance(arguments.get("timeout"), int | float):
            # A model may ask for any timeout; the run's own budget is the ceiling.
            arguments["timeout"] = min(arguments["timeout"], self._time_left(state))
        key = json.dumps([call.name, call.arguments], sort_keys=True)
        state.recent = [*state.recent[-(self.config.repeat_warning - 1) :], key]
        try:
            result = tool.run(ctx, arguments)
        except SandboxError as exc:
            state.termination, state.error = "sandbox_error", str(exc)
            return f"error: the sandbox failed: {exc}", True, False
        output = result.output
        if len(state.recent) >= self.config.repeat_warning and len(set(state.recent)) == 1:
            output += (
                f"\n[note: this is the same {call.name} call {self.config.repeat_warning} times "
                "in a row with the same arguments; try something different]"
            )
        return output, result.error, result.done

    def _answer(
        self, messages: list[Message], results: list[tuple[ToolCall | None, str, bool]]
    ) -> None:
        if self.action_format == "native":
            for call, output, _ in results:
                if call is None:
                    messages.append(Message(role="user", content=output))
                else:
                    messages.append(
                        Message(role="tool", content=output, tool_call_id=call.id, name=call.name)
                    )
            return
        text = "\n\n".join(
            f"Observation ({call.name if call else 'format error'}):\n{output}"
            for call, output, _ in results
        )
        messages.append(Message(role="user", content=text))


class LoopState(BaseModel):
    """Everything a run needs to continue: the messages the model sees, the trajectory, the
    counters and the tools' shared state. Serialisable, so a crashed or stopped run resumes."""

    messages: list[Message]
    trajectory: Trajectory = Field(default_factory=Trajectory)
    turns: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    format_errors: int = 0
    termination: Termination | None = None
    error: str | None = None
    recent: list[str] = Field(default_factory=list)
    events: list[dict] = Field(default_factory=list)
    todo: list[dict] = Field(default_factory=list)
    read_files: set[str] = Field(default_factory=set)
    seconds: float = Field(0.0, description="wall time used by earlier runs of this state")
    _started: float | None = PrivateAttr(None)

    def begin(self) -> None:
        """Start (or continue) the clock; a limit that ended an earlier run is re-checked."""
        if self._started is not None:
            self.seconds = self.elapsed()
        self._started = time.monotonic()
        self.termination, self.error, self.recent = None, None, []

    def elapsed(self) -> float:
        extra = 0.0 if self._started is None else time.monotonic() - self._started
        return self.seconds + extra

    def add_user(self, text: str) -> None:
        """A new user message (chat), as the model and the trajectory will see it."""
        self.messages.append(Message(role="user", content=text))
        self.trajectory.add("user", text)
