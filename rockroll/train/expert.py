"""Expert trajectories: a task's expert commands, played through the harness as the policy.

The expert's commands become the policy's own replies (one ```bash block per turn, then
`submit`), run in a real sandbox by the same loop, and are kept only when the verifier passes.
The replies are tokenized with the policy's tokenizer and end with its end-of-turn token, and
prompts continue from those exact ids, so SFT trains on the sequence the policy would have
produced and the trainer's chunking applies unchanged.
"""

from __future__ import annotations

from rockroll.agent.local import LocalModel
from rockroll.agent.loop import AgentConfig
from rockroll.agent.messages import Completion, Message
from rockroll.agent.models import ModelError
from rockroll.tasks.model import Task
from rockroll.train.config import RolloutConfig
from rockroll.train.rollout import Episode, Job, run_episode

EXPERT_KEY = "expert_commands"


def expert_replies(task: Task, action_format: str = "bash") -> list[str]:
    """The task's expert commands as replies in the action format, ending with a submit."""
    commands = getattr(task.metadata, EXPERT_KEY, None)
    if not commands:
        raise ValueError(f"{task.id} has no {EXPERT_KEY} in its metadata")
    if action_format != "bash":
        raise ValueError(f"expert replies are written in the bash format, not {action_format}")
    return [f"```bash\n{command}\n```" for command in [*commands, "submit"]]


class ForcedModel:
    """The policy, forced to say `replies` in order: what it sees and says, in its own ids.

    The reply is chosen by the number of assistant turns already in the conversation, so an
    episode run again (an infrastructure retry) starts the script again by itself.
    """

    native_tools = False

    def __init__(self, policy: LocalModel, replies: list[str]) -> None:
        self.policy = policy
        self.replies = replies
        self.name = f"expert:{policy.name}"
        self.context_window = policy.context_window

    def count_tokens(self, messages: list[Message]) -> int:
        return self.policy.count_tokens(messages)

    def complete(
        self,
        messages: list[Message],
        tools: list[dict] | None,
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> Completion:
        turn = sum(m.role == "assistant" for m in messages)
        if turn >= len(self.replies):
            raise ModelError(f"the expert has no reply after {turn}")
        text = self.replies[turn]
        prompt = self.policy.prompt_ids(messages, tools)
        ids = self.policy.tokenizer.encode(text, add_special_tokens=False)
        ids.append(self.policy.end_of_turn_id)
        self.policy.remember(prompt, ids)
        return Completion(
            message=Message(role="assistant", content=text),
            finish_reason="stop",
            prompt_tokens=len(prompt),
            completion_tokens=len(ids),
            prompt_token_ids=prompt,
            token_ids=ids,
            logprobs=[0.0] * len(ids),
        )


class ResumedModel:
    """The policy restarted at chunk `start` of an expert trajectory (ipa.md, "Initialize at
    chunk k", by replay): the expert's first `start` replies are imposed and marked forced (so
    they are context, not trained on), and their commands run in the episode's fresh sandbox;
    from then on the policy samples as usual."""

    native_tools = False

    def __init__(self, policy: LocalModel, replies: list[str], start: int) -> None:
        if not 0 <= start < len(replies):
            raise ValueError(
                f"start must be in [0, {len(replies)}), the expert's turns; got {start}"
            )
        self.policy = policy
        self.start = start
        self.expert = ForcedModel(policy, replies[:start])
        self.name = policy.name
        self.context_window = policy.context_window

    def count_tokens(self, messages: list[Message]) -> int:
        return self.policy.count_tokens(messages)

    def complete(
        self, messages: list[Message], tools: list[dict] | None, **kw: object
    ) -> Completion:
        if sum(m.role == "assistant" for m in messages) < self.start:
            return self.expert.complete(messages, tools).model_copy(update={"forced": True})
        return self.policy.complete(messages, tools, **kw)  # type: ignore[arg-type]


def expert_episode(policy: LocalModel, task: Task, cfg: RolloutConfig) -> Episode:
    """The expert's episode on `task`; check `passed` before training on it."""
    replies = expert_replies(task, cfg.action_format)
    forced = ForcedModel(policy, replies)
    agent_cfg = AgentConfig(
        max_turns=len(replies),
        max_tokens_per_turn=cfg.max_tokens_per_turn,
        action_format=cfg.action_format,
        context_mode="linear",
        command_timeout=cfg.command_timeout,
    )
    return run_episode(forced, Job(task, 0), agent_cfg, cfg)  # type: ignore[arg-type]


def resumed_episode(
    policy: LocalModel, task: Task, start: int, cfg: RolloutConfig, *, seed: int = 0
) -> Episode:
    """An episode of the policy on `task` that begins after the expert's first `start` turns
    (replayed in a fresh sandbox); `start=0` is a plain episode from the task's start."""
    model = ResumedModel(policy, expert_replies(task, cfg.action_format), start)
    agent_cfg = AgentConfig(
        seed=seed,
        max_turns=cfg.max_turns + start,
        max_tokens_per_turn=cfg.max_tokens_per_turn,
        temperature=cfg.temperature,
        action_format=cfg.action_format,
        context_mode="linear",
        command_timeout=cfg.command_timeout,
    )
    return run_episode(model, Job(task, seed), agent_cfg, cfg)  # type: ignore[arg-type]
