"""Rollouts restarted from an expert's chunk k (by replay) in a real sandbox with a tiny model:
the expert's turns run and stay in the context, and carry no loss."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from rockroll.models.local import tiny_random_model
from rockroll.tasks.suites import load_suite
from rockroll.train.chunks import chunk_trajectory
from rockroll.train.config import RolloutConfig
from rockroll.train.episodes import resumed_episode
from rockroll.train.expert import expert_replies


@pytest.fixture(scope="module")
def task(base_image: str):  # type: ignore[no-untyped-def]
    [task] = load_suite("term:count-lines?seed=0&size=1")
    return task


def test_a_resumed_episode_replays_the_expert_prefix_and_trains_only_on_the_rest(task) -> None:  # type: ignore[no-untyped-def]
    policy = tiny_random_model(seed=0)
    cfg = RolloutConfig(max_turns=2, max_tokens_per_turn=8, workers=1)
    replies = expert_replies(task)
    episode = resumed_episode(policy, task, 1, cfg, seed=3)
    assert episode.infra_error is None and episode.trajectory is not None
    agent = [s for s in episode.trajectory.steps if s.source == "agent"]
    first = agent[0]
    assert first.message == replies[0] and first.metrics.extra == {"forced": True}
    assert all(not (s.metrics.extra or {}).get("forced") for s in agent[1:])
    # The forced turn is not one of the policy's max_turns (a random model never submits).
    assert len(agent) == 1 + cfg.max_turns and episode.termination == "max_turns"
    # The expert's command really ran in the episode's sandbox: its output, the line count of
    # the task's data.txt, is the observation and is in the policy's next prompt.
    assert first.message == "```bash\nwc -l data.txt\n```"
    lines = str(task.files["/app/data.txt"]).count("\n")
    output = f"{lines} data.txt\n"
    assert first.observation.results[0].content == output
    next_prompt = policy.tokenizer.decode(agent[1].metrics.prompt_token_ids)
    assert next_prompt.endswith(f"Observation (bash):\n{output}<|im_end|>\n<|im_start|>assistant\n")

    [seq] = chunk_trajectory(episode.trajectory, episode.reward, passed=episode.passed)
    assert seq.num_chunks == len(agent) - 1
    forced_ids = first.metrics.completion_token_ids
    at = len(first.metrics.prompt_token_ids)
    assert seq.input_ids[at : at + len(forced_ids)] == forced_ids
    assert seq.response_mask[: at + len(forced_ids)] == [0] * (at + len(forced_ids))
    generated = [c for c in seq.chunk_ids if c >= 0]
    assert generated and generated[0] == 0 and max(generated) == seq.num_chunks - 1
    assert sum(seq.response_mask) == sum(len(s.metrics.completion_token_ids) for s in agent[1:])


def test_start_zero_is_a_plain_episode_and_bad_starts_are_refused(task) -> None:  # type: ignore[no-untyped-def]
    policy = tiny_random_model(seed=0)
    cfg = RolloutConfig(max_turns=1, max_tokens_per_turn=4, workers=1)
    episode = resumed_episode(policy, task, 0, cfg, seed=1)
    agent = [s for s in episode.trajectory.steps if s.source == "agent"]
    assert len(agent) == 1 and not (agent[0].metrics.extra or {}).get("forced")
    with pytest.raises(ValueError, match="start must be in"):
        resumed_episode(policy, task, len(expert_replies(task)), cfg)
