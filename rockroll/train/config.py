"""The training run's configuration: typed, documented, and strict about what it accepts.

`rockroll train CONFIG.yaml` reads this. Unknown keys and wrong types are refused with the key's
dotted path and the expected type, before any model is loaded or sandbox started.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from rockroll.errors import ConfigError
from rockroll.strict import Strict

Algorithm = Literal["ipa", "grpo", "topr"]
Aggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]


RolloutMode = Literal["sync", "async", "ray"]


class RolloutConfig(Strict):
    """How episodes are collected: the same harness and settings as evaluation."""

    mode: RolloutMode = Field(
        "sync",
        description="where episodes run: sync (in this process, a step waits for its episodes), "
        "async (in the background beside the update; see `asynchronous`), ray (on rollout "
        "workers of a Ray cluster, the trainer on an actor of its own; see `ray`)",
    )
    group_size: int = Field(4, ge=1, description="episodes per task in one step (G)")
    tasks_per_step: int = Field(2, ge=1, description="distinct tasks in one step")
    max_turns: int = Field(3, ge=1, description="model turns per episode")
    max_tokens_per_turn: int = Field(48, ge=1, description="tokens the model may write per turn")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of rollouts")
    action_format: Literal["bash", "tool_call"] = Field(
        "bash", description="how the model acts: one ```bash block, or <tool_call> JSON"
    )
    workers: int = Field(8, ge=1, description="episodes run at once (their model calls batch)")
    max_infra_retries: int = Field(
        3, ge=0, description="resamples of an episode spoiled by a sandbox failure"
    )
    command_timeout: float = Field(20.0, gt=0, description="seconds per tool command")
    safety: Literal["observe", "enforce", "off"] = Field(
        "observe",
        description="the monitor's shipped rules over what episodes run: observe (count the "
        "episodes where one matched: `unsafe` in the metrics), enforce (also refuse and kill "
        "as the rules say, in fresh sandboxes), off",
    )
    unsafe_penalty: float = Field(
        0.0,
        ge=0,
        description="subtracted from the reward of an episode in which a rule matched what "
        "the agent ran (0: counted, not penalised)",
    )
    end_on_unsafe: bool = Field(
        False,
        description="end an episode (termination `unsafe`) after the turn in which a rule "
        "first matched what it ran; the verifier still judges what was done",
    )
    decode_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="weights rollouts decode with: a bfloat16 copy, synced after every update, "
        "decodes about 2x faster on CPUs with AMX (auto: bfloat16 where the hardware has it); "
        "its logprobs (mu) then differ slightly from pi_old, which IPA's mismatch mask covers",
    )


class AsyncConfig(Strict):
    """Asynchronous rollouts (`rollout.mode: async`): episodes run on while the trainer
    updates, so a step waits for the first `tasks_per_step` groups to finish, not for its
    slowest episode.

    The policy version is the number of updates applied; an episode's staleness when a step
    takes it is that version minus the one of its first sampled turn. pi_old is mu for every
    episode sampled by earlier weights (docs/ipa.md point 6). Episodes running or queued when a run
    stops are lost; `--resume` goes on with the tasks after them.
    """

    max_staleness: int = Field(
        2, ge=0, description="k: versions an episode may lag the trainer by when a step takes it"
    )
    stale: Literal["drop", "keep"] = Field(
        "drop",
        description="episodes older than k: drop them (a running one is stopped at its next "
        "turn), or keep them with mu as pi_old",
    )
    max_in_flight: int | None = Field(
        None, ge=1, description="episodes running at once (default: rollout.workers)"
    )
    shutdown_seconds: float = Field(
        30.0, ge=0, description="how long stopping waits for running episodes to close"
    )


class IPASettings(Strict):
    """IPA (docs/ipa.md): chunk-level returns, ratios and mismatch mask."""

    gamma: float = Field(0.95, gt=0, le=1, description="discount per chunk (eq. 7)")
    mismatch_threshold: float = Field(5.0, ge=1, description="H of the chunk mismatch mask")
    fail_reward: float = Field(-1.0, le=0, description="reward of a failed episode")


class GRPOSettings(Strict):
    """Token-level GRPO with PPO clipping (the baseline IPA is compared with)."""

    eps_low: float = Field(0.2, ge=0, description="lower clip of the token ratio")
    eps_high: float = Field(0.28, ge=0, description="upper clip of the token ratio")
    scale_by_std: bool = Field(True, description="divide advantages by the group's std")


class SFTConfig(Strict):
    """Warm-up on verified expert trajectories (the tasks' expert commands as tool calls)."""

    steps: int = Field(0, ge=0, description="SFT optimizer steps before RL (0: none)")
    lr: float = Field(5e-5, gt=0, description="learning rate of the warm-up")
    batch_size: int = Field(8, ge=1, description="expert episodes per SFT step")
    tasks: str | None = Field(None, description="suite of expert tasks (default: train.tasks)")
    data: Path | None = Field(
        None,
        description="a dataset (`rockroll data synth`) whose verified trajectories "
        "(DATASET/trajectories/, from `rockroll data trajectories`) are the experts, replayed "
        "on its tasks, instead of the tasks' expert commands",
    )


class ResampleConfig(Strict):
    """Chunk-level initialized resampling (docs/ipa.md): episodes of tasks the policy cannot yet
    solve start from an expert's turn k, so a hard task still yields successes to learn from."""

    enabled: bool = Field(False, description="resample hard tasks from expert anchors")
    mode: Literal["parallel", "sequential"] = Field(
        "parallel",
        description="parallel: several anchors per expert in one group; sequential: one anchor, "
        "moved a turn earlier each time the policy masters it (rollback)",
    )
    anchors: int = Field(
        3, ge=1, description="parallel: start turns per group, spread from the start to the last"
    )
    hard_below: float = Field(
        0.25,
        ge=0,
        le=1,
        description="a task is resampled while its recent success from the start is at most this",
    )
    window: int = Field(8, ge=1, description="recent episodes per (task, start) a rate is over")
    rollback_at: float = Field(
        0.5, gt=0, le=1, description="sequential: success at the anchor that moves it earlier"
    )
    crucial_gap: float = Field(
        0.5,
        gt=0,
        le=1,
        description="a crucial turn lies between two sampled starts when success from the later "
        "one beats success from the earlier one by at least this (the gap between them is then "
        "sampled to narrow it down)",
    )
    il_coef: float = Field(
        0.1,
        ge=0,
        description="lambda_IL of eq. 10: imitation of the expert's turns up to a crucial one "
        "whose fork still yields no success (0: off)",
    )
    il_weighting: Literal["return", "uniform"] = Field(
        "return",
        description="weight of each imitated expert turn k: its chunk return "
        "gamma^(K*-k) R* (eq. 10 as the paper writes it, gamma = ipa.gamma), or 1 (uniform)",
    )
    rl_coef: float = Field(
        1.0, gt=0, description="lambda_RL of eq. 10, scaling the RL loss on every step"
    )
    init: Literal["fork", "replay"] = Field(
        "fork",
        description="how an anchor's state is made: fork a snapshot taken while replaying the "
        "expert once, or replay its commands in a fresh sandbox every time",
    )
    sources: list[Literal["oracle", "teacher", "policy"]] = Field(
        default_factory=lambda: ["oracle", "policy"],
        description="where experts come from: the tasks' oracle commands, a teacher model's "
        "verified successes, the policy's own successes (newest first)",
    )
    teacher: str | None = Field(
        None, description="teacher model for the teacher source (local:NAME or local:PATH)"
    )

    @model_validator(mode="after")
    def _teacher(self) -> ResampleConfig:
        if "teacher" in self.sources and not self.teacher:
            raise ValueError("sources names 'teacher': set resample.teacher to a model")
        return self


class RayConfig(Strict):
    """Where `rollout.mode: ray` runs: the cluster and its rollout workers."""

    address: str | None = Field(
        None, description="cluster address (default: RAY_ADDRESS, else a local cluster)"
    )
    rollout_workers: int = Field(2, ge=1, description="rollout worker actors, spread over nodes")
    worker_cpus: float = Field(1.0, ge=0, description="CPUs Ray reserves per rollout worker")
    max_worker_restarts: int = Field(
        8, ge=0, description="dead workers replaced (their episodes resampled) before giving up"
    )


class TrainConfig(Strict):
    """One training run. Every field has a default except the model and the tasks."""

    model: str = Field(description="policy: local:smollm2, local:PATH, or local:tiny-random")
    tasks: str = Field(description="training suite, e.g. term:read-note,count-lines?size=64")
    eval_tasks: str | None = Field(None, description="held-out suite evaluated every eval_every")
    algorithm: Algorithm = "ipa"
    steps: int = Field(20, ge=0, description="RL optimizer steps")
    lr: float = Field(1e-5, gt=0, description="learning rate (AdamW)")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping")
    aggregation: Aggregation = "token-mean"
    kl_coef: float = Field(0.0, ge=0, description="k3 KL to the starting policy (0: off)")
    entropy_coef: float = Field(0.0, ge=0, description="entropy bonus (0: off)")
    seed: int = 0
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="weights; float32 with bf16 autocast is the CPU default"
    )
    autocast: bool = Field(True, description="bf16 autocast for forward passes where supported")
    device: str | None = Field(None, description="cpu, cuda (default: cuda when present)")
    micro_tokens: int | None = Field(
        None,
        ge=64,
        description="tokens run per forward pass of the update (bounds activation memory; "
        "default 2048 on CPU, 8192 on CUDA)",
    )
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    asynchronous: AsyncConfig = Field(default_factory=AsyncConfig)
    ipa: IPASettings = Field(default_factory=IPASettings)
    grpo: GRPOSettings = Field(default_factory=GRPOSettings)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    resample: ResampleConfig = Field(default_factory=ResampleConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    eval_every: int = Field(0, ge=0, description="evaluate every N steps (0: start and end)")
    eval_size: int | None = Field(None, ge=1, description="held-out tasks per evaluation")
    checkpoint_every: int = Field(1, ge=1, description="checkpoint every N steps")
    out: Path = Field(Path("runs/train"), description="folder for checkpoints and metrics")
    tensorboard: bool = Field(True, description="also write TensorBoard events")

    @model_validator(mode="after")
    def _model_spec(self) -> TrainConfig:
        if not self.model.startswith("local:"):
            raise ValueError("model must be a local model (local:smollm2 or local:PATH)")
        return self


def load_config(path: Path, overrides: dict | None = None) -> TrainConfig:
    """Read a YAML config; errors name the file, the key and the expected type."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, not {type(data).__name__}")
    data = _merge(data, overrides or {})
    return parse_config(data, str(path))


def parse_config(data: dict, where: str = "config") -> TrainConfig:
    if moved := _moved_key(data):
        raise ConfigError(f"{where}: {moved}")
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: " + "; ".join(_problem(e) for e in exc.errors())) from None


def _moved_key(data: dict) -> str | None:
    """The switch an old config still sets (`rollout.mode` replaced both), as one line."""
    if "distributed" in data:
        mode = "ray" if data["distributed"] == "ray" else "sync"
        return f"'distributed' is gone: set rollout.mode: {mode} instead"
    section = data.get("asynchronous")
    if isinstance(section, dict) and "enabled" in section:
        mode = "async" if section["enabled"] else "sync"
        return f"'asynchronous.enabled' is gone: set rollout.mode: {mode} instead"
    return None


def _problem(error: dict) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"unknown key {key!r}; see TrainConfig's fields in rockroll/train/config.py"
    if error["type"] == "missing":
        return f"{key!r} is required"
    expected = error.get("ctx", {}).get("expected")
    got = repr(error.get("input"))[:60]
    hint = f" (expected {expected})" if expected else ""
    return f"{key!r}: {error['msg']}{hint}, got {got}"


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
