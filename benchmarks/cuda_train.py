"""rockroll's RL update and decoder on a GPU: a ~0.5B model, one step's agent-shaped batch.

    PYTHONPATH=$PWD python3 benchmarks/cuda_train.py [--steps 5] [--warmup 1] [--device cuda]
        [--size 0.5b|tiny] [--micro-tokens N] [--budget 200] [--no-generation]
        [--json PATH]

`--size tiny` (a 2-layer model with a 2k vocabulary, 8 short episodes, 8 generated tokens a row)
with `--device cpu` checks the script in seconds.

Needs torch and transformers; rockroll is imported from the checkout, so `pip install -e .` is
not needed, but pydantic (rockroll.train.config) is: a GPU image without it gets it as wheels.

No weights are loaded: a Qwen2 model with Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 query
and 2 key/value heads, MLP 4864, vocabulary 151936, tied embeddings; 494M parameters) is built
from its config with random weights, float32 on the device, as the trainer keeps them (the
update runs the forward passes under bf16 autocast).

The batch is one step as the trainer gets it: 4 tasks x 8 episodes, every episode the task's
prompt (~600 random token ids, shared by its group), then 3 model turns of ~100 tokens with a
~150-token tool observation between them (lengths jittered by a fixed seed, so micro-batches
pad). Rewards are 0/1 at random. The sampling logprobs (mu) are the model's own, scored once,
plus noise; one chunk in 8 is shifted far enough that IPA's mismatch mask drops it.

A step is `Learner.step`, the trainer's own update: a `Learner` built from a TrainConfig
(algorithm `ipa`, autocast, clip 1.0, lr 1e-6; its AdamW fused where torch has it) on a
`LocalModel` around the built model, with the bf16 decode copy training keeps
(`policy.prepare_decoding`). The update never tokenizes, so the LocalModel's tokenizer is a
stand-in that only names the pad id.

Figures (median over `--steps` steps after `--warmup` uncounted ones; every phase is timed by
the learner, with the device synchronised before and after, and read from its stats):

- seconds per step: the wall time of one update.
- training tokens/s: every token of the step's sequences (prompts, tool observations and model
  turns, no padding) over the update time, as the trainer's `train_tokens_per_s`.
- tokens run per pass: what one pass over the batch feeds the model after micro-batching (a
  shared prefix once, padding included), where this checkout's update reports it.
- pi_old / gradient / optimizer / decode sync / rest: the learner's `update_seconds` (the
  pi_old pass, the gradient pass, `optimizer.step`, the decode copy's sync) and the rest (the
  loss, gradient clipping, host transfers).
- peak memory: `torch.cuda.max_memory_allocated` during the step (on the CPU, peak RSS).
- generation tokens/s: `rockroll.models.generation.generate` on the 32 episodes' first prompts
  (8 copies of each of the 4, as a rollout's first turn) or on 32 distinct prompts, 128 new
  tokens each (temperature 1, no stop ids, so every row runs to the end), on a bfloat16 copy
  of the weights (as the decode copy holds them) under eager attention and under SDPA. The
  rate counts every generated token over the whole call; "decode" leaves out a timed 1-token
  call (the prefill).

The run stops taking steps once `--budget` seconds have passed since the start and reports what
it has; a full run is meant to take about a minute on an H100 after the imports.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import random
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from common import console, figures_table, headline, machine, median_of
from rich.table import Table

from rockroll.models.generation import generate
from rockroll.models.local import LocalModel
from rockroll.train import update
from rockroll.train.chunks import ChunkedSequence
from rockroll.train.config import TrainConfig
from rockroll.train.learner import Learner, micro_tokens
from rockroll.train.policy import prepare_decoding

SEED = 0
LR = 1e-6
MU_NOISE = 0.05  # per-token std of log mu around the model's own logprob
MU_SHIFT = 2.0  # log mu - log pi_old of a planted mismatch: exp(-2) < 1/H for H = 5
MU_SHIFT_EVERY = 8  # one chunk in this many is shifted
PHASES = ("pi_old", "gradient", "optimizer", "decode sync")
LEARNER_PHASES = {"pi_old": "pi_old", "gradient": "gradient", "optimizer": "optimizer"}
LEARNER_PHASES["decode sync"] = "decode_sync"  # the learner's name of each phase
FOREIGN = ("fastapi", "uvicorn", "httpx", "pydantic")  # not all in every GPU image


@dataclasses.dataclass(frozen=True)
class Shape:
    """One step's batch: `tasks` x `group` episodes of `turns` model turns, and generation."""

    tasks: int
    group: int
    turns: int
    prompt: int  # tokens of a task's prompt
    turn: int  # tokens of a model turn
    observation: int  # tokens of a tool observation between turns
    gen_tokens: int  # new tokens per row in the generation figures


SHAPES = {"0.5b": Shape(4, 8, 3, 600, 100, 150, 128), "tiny": Shape(2, 4, 3, 60, 10, 15, 8)}

Row = tuple[str, str, str, bool | None, str]


# -- the model -----------------------------------------------------------------------------------
def model_config(size: str) -> Any:
    from transformers import Qwen2Config

    if size == "tiny":
        shape = dict(
            vocab_size=2048,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    else:  # Qwen2.5-0.5B
        shape = dict(
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
        )
    return Qwen2Config(
        **shape, max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True
    )


def build_model(size: str, device: torch.device) -> Any:
    """Random float32 weights, initialised on the device (far faster than on a few cores)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(SEED)
    with device:
        model = AutoModelForCausalLM.from_config(model_config(size), dtype=torch.float32)
    return model.to(device)


class IdsOnly:
    """The tokenizer of a model that is only ever given token ids: the update never tokenizes,
    so all a LocalModel needs of it is a pad id (and something for its template check)."""

    chat_template = "(token ids only)"
    eos_token_id = None

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def get_vocab(self) -> dict[str, int]:
        return {}


def learner_for(model: Any, size: str, micro: int) -> Learner:
    """The trainer's learner on `model`: a LocalModel with training's bf16 decode copy (grouped
    eager attention on CPU, the model's own on CUDA)."""
    pad_id = model.config.pad_token_id or 0
    window = model.config.max_position_embeddings
    policy = LocalModel(model, IdsOnly(pad_id), f"random-{size}", window)
    prepare_decoding(policy, "bfloat16")
    cfg = TrainConfig(
        model="local:bench",
        tasks="none",
        algorithm="ipa",
        lr=LR,
        max_grad_norm=1.0,
        seed=SEED,
        micro_tokens=micro,
    )
    return Learner(cfg, policy)


# -- the batch -----------------------------------------------------------------------------------
def make_batch(shape: Shape, vocab: int) -> tuple[list[ChunkedSequence], list[int]]:
    """One step's sequences, a group's episodes side by side as the trainer orders them."""
    rng = random.Random(SEED)

    def ids(n: int) -> list[int]:
        return [rng.randrange(vocab) for _ in range(n)]

    def about(n: int, spread: float) -> int:
        return max(1, round(n * rng.uniform(1 - spread, 1 + spread)))

    seqs, groups = [], []
    for task in range(shape.tasks):
        prompt = ids(about(shape.prompt, 0.1))
        for episode in range(shape.group):
            passed = rng.random() < 0.5
            s = ChunkedSequence(
                reward=float(passed),
                passed=passed,
                num_chunks=shape.turns,
                episode_id=f"{task}-{episode}",
            )
            s.add_environment(prompt)
            for k in range(shape.turns):
                if k:
                    s.add_environment(ids(about(shape.observation, 0.4)))
                n = about(shape.turn, 0.4)
                s.add_turn(k, ids(n), [0.0] * n)
            seqs.append(s)
            groups.append(task)
    return seqs, groups


def set_mu(model: Any, seqs: list[ChunkedSequence], pad_id: int, micro_tokens: int) -> int:
    """Fill in the sampling logprobs: the model's own plus noise, one chunk in MU_SHIFT_EVERY
    shifted past the mismatch threshold so the mask has work. Returns the shifted chunks."""
    model.eval()
    scored = update.score_tokens(model, seqs, pad_id, amp=True, micro_tokens=micro_tokens)
    scored = scored.float().cpu()
    gen = torch.Generator().manual_seed(SEED)
    rng = random.Random(SEED + 1)
    at, shifted = 0, 0
    for s in seqs:
        for k in range(s.num_chunks):  # chunk k's tokens all come before chunk k + 1's
            where = [i for i, c in enumerate(s.chunk_ids) if c == k]
            shift = MU_SHIFT if rng.randrange(MU_SHIFT_EVERY) == 0 else 0.0
            shifted += shift > 0
            noise = torch.randn(len(where), generator=gen) * MU_NOISE + shift
            for i, v in zip(where, (scored[at : at + len(where)] + noise).tolist(), strict=True):
                s.mu_logprobs[i] = v
            at += len(where)
    return shifted


def tokens_run(seqs: list[ChunkedSequence], micro_tokens: int) -> int | None:
    """Tokens one pass feeds the model, per this checkout's `update.cost`; None without it."""
    cost = getattr(update, "cost", None)
    try:
        return sum(cost(mb) for mb in update.micro_batches(seqs, micro_tokens)) if cost else None
    except Exception:  # a figure on the side: never lose the report to it
        return None


# -- timing --------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_steps(
    learner: Learner, seqs: list[ChunkedSequence], groups: list[int], n: int, deadline: float
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to `n` timed `Learner.step`s; the error that ended them, if one did."""
    device = learner.device
    n_tokens = sum(len(s) for s in seqs)
    records: list[dict[str, Any]] = []
    while len(records) < n and time.perf_counter() < deadline:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        t0 = time.perf_counter()
        try:
            metrics = learner.step(seqs, groups)
        except Exception as exc:
            traceback.print_exc()
            first = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            return records, f"step {len(records) + 1}: {first}"
        sync(device)
        seconds = time.perf_counter() - t0
        spent = metrics["update_seconds"]
        phases = {k: spent.get(name, 0.0) for k, name in LEARNER_PHASES.items()}
        phases["rest"] = seconds - sum(phases.values())
        records.append(
            {
                "seconds": seconds,
                "tokens_per_s": n_tokens / seconds,
                "peak_gib": peak_gib(device),
                "peak_reserved_gib": (
                    torch.cuda.max_memory_reserved(device) / (1 << 30)
                    if device.type == "cuda"
                    else None
                ),
                **{f"{k}_s": v for k, v in phases.items()},
                **{k: v for k, v in metrics.items() if isinstance(v, int | float)},
            }
        )
        r = records[-1]
        console.print(
            f"[dim]  step {len(records)}: {seconds:.2f} s, {r['tokens_per_s']:,.0f} tokens/s, "
            f"loss {r.get('loss', float('nan')):.4g}, grad norm {r.get('grad_norm', 0):.3g}[/dim]"
        )
    return records, None


def peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / (1 << 30)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)


# -- generation ----------------------------------------------------------------------------------
def time_generation(
    model: Any, prompts: list[list[int]], new_tokens: int, attention: str, device: torch.device
) -> dict[str, Any]:
    """One warm-up call, a timed 1-token call (the prefill), and the timed full call."""
    seeds = list(range(len(prompts)))
    gen = functools.partial(generate, model, temperature=1.0, stop_ids=())
    before = getattr(model.config, "_attn_implementation", None)
    model.set_attn_implementation(attention)
    try:
        gen(prompts[:2], max_tokens=4, seeds=seeds[:2])
        sync(device)
        t0 = time.perf_counter()
        gen(prompts, max_tokens=1, seeds=seeds)
        sync(device)
        prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = gen(prompts, max_tokens=new_tokens, seeds=seeds)
        sync(device)
        seconds = time.perf_counter() - t0
    finally:
        if before is not None:
            model.set_attn_implementation(before)
    n = sum(len(g.token_ids) for g in out)
    return {
        "attention": attention,
        "rows": len(prompts),
        "new_tokens": new_tokens,
        "distinct_prompts": len({tuple(p) for p in prompts}),
        "prompt_tokens": sum(len(p) for p in prompts),
        "generated": n,
        "seconds": seconds,
        "prefill_s": prefill,
        "tokens_per_s": n / seconds,
        # None where the separate prefill call took as long as the whole call (a noisy host)
        "decode_tokens_per_s": (n - len(prompts)) / (seconds - prefill)
        if seconds > 1.05 * prefill
        else None,
    }


# -- the report ----------------------------------------------------------------------------------
def summary_rows(result: dict[str, Any]) -> list[Row]:
    counted, b = result["counted"], result["batch"]
    mem = "GPU max allocated" if result["device"].startswith("cuda") else "peak RSS"
    rows: list[Row] = [
        ("update path", result["update_path"], "", None, "the trainer's own update"),
        ("parameters", f"{result['params'] / 1e6:.1f} M", "", None, result["size"]),
        ("micro_tokens", str(result["micro_tokens"]), "", None, "tokens per forward pass"),
        (
            "batch",
            f"{b['sequences']} seqs, {b['tokens']:,} tokens",
            "",
            None,
            f"{b['generated']:,} generated, {b['planted_mismatch']} of "
            f"{b['chunks']} chunks shifted",
        ),
        (
            "tokens run per pass",
            f"{b['tokens_run']:,}" if b["tokens_run"] is not None else "n/a",
            "",
            None,
            "shared prefixes once, padding included",
        ),
    ]
    if counted:
        s = median_of(counted, "seconds")
        rows += [
            ("seconds per step", f"{s:.3f}", "", None, f"median of {len(counted)}"),
            ("training tokens/s", f"{median_of(counted, 'tokens_per_s'):,.0f}", "", None, ""),
            (
                "generated tokens/s (update)",
                f"{b['generated'] / s:,.0f}",
                "",
                None,
                "model-turn tokens over the update time",
            ),
        ]
        for phase in (*PHASES, "rest"):
            v = median_of(counted, f"{phase}_s")
            rows.append((f"  {phase}", f"{v:.3f} s", "", None, f"{100 * v / s:.0f}% of the step"))
        rows += [
            (f"peak memory ({mem})", f"{median_of(counted, 'peak_gib'):.2f} GiB", "", None, ""),
            (
                "masked chunk fraction",
                f"{median_of(counted, 'masked_chunk_fraction'):.3f}",
                "",
                None,
                f"planted: {b['planted_mismatch'] / max(b['chunks'], 1):.3f}",
            ),
        ]
    for g in result["generation"]:
        decode = g["decode_tokens_per_s"]
        rows.append(
            (
                f"generation tokens/s ({g['attention']}, {g['distinct_prompts']} prompts)",
                f"{g['tokens_per_s']:,.0f}",
                "",
                None,
                f"{g['rows']} x {g['new_tokens']} in {g['seconds']:.2f} s; "
                f"prefill {g['prefill_s']:.2f} s, "
                + (f"decode {decode:,.0f} tokens/s" if decode else "decode n/a"),
            )
        )
    return rows


def steps_table(records: list[dict[str, Any]], warmup: int) -> Table:
    table = Table(title="every step (warm-up steps dimmed)")
    for col in ("step", "s", "tokens/s", *PHASES, "rest", "peak GiB", "loss", "grad norm"):
        table.add_column(col, justify="right")
    for i, r in enumerate(records):
        table.add_row(
            str(i + 1),
            f"{r['seconds']:.3f}",
            f"{r['tokens_per_s']:,.0f}",
            *(f"{r[f'{p}_s']:.3f}" for p in (*PHASES, "rest")),
            f"{r['peak_gib']:.2f}",
            f"{r.get('loss', float('nan')):.4g}",
            f"{r.get('grad_norm', float('nan')):.3g}",
            style="dim" if i < warmup else None,
        )
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="counted steps")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted steps first")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", choices=("0.5b", "tiny"), default="0.5b")
    parser.add_argument("--micro-tokens", type=int, default=None, help="default: the trainer's")
    parser.add_argument("--budget", type=float, default=200.0, help="seconds before stopping")
    parser.add_argument("--no-generation", action="store_true", help="time the update only")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    deadline = started + args.budget

    device = torch.device(args.device)
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    extra = f"  |  {name}, torch {torch.__version__}, transformers {transformers.__version__}"
    console.print(headline("rockroll RL update on one device", info := machine(), extra))
    micro = micro_tokens(args.micro_tokens, device)

    model = build_model(args.size, device)
    params = sum(p.numel() for p in model.parameters())
    pad_id = model.config.pad_token_id or 0
    shape = SHAPES[args.size]
    seqs, groups = make_batch(shape, model.config.vocab_size)
    shifted = set_mu(model, seqs, pad_id, micro)
    learner = learner_for(model, args.size, micro)
    fused = bool(learner.optimizer.defaults.get("fused"))
    console.print(
        f"[dim]{params / 1e6:.1f} M parameters, {len(seqs)} sequences, micro_tokens {micro}, "
        f"ready after {time.perf_counter() - started:.0f} s[/dim]"
    )

    findings: list[str] = []
    records, error = run_steps(learner, seqs, groups, args.warmup + args.steps, deadline)
    stopped = len(records) < args.warmup + args.steps and error is None
    if stopped:
        findings.append(
            f"stopped after {len(records)} steps: the {args.budget:.0f} s budget ran out"
        )
    if error:
        findings.append(f"the update failed: {error}")
    counted = records[args.warmup :] or records[-1:]
    decoder = copy.deepcopy(model).to(torch.bfloat16).eval()  # the decode copy's weights
    del learner
    if device.type == "cuda":
        torch.cuda.empty_cache()

    first = [s.input_ids[: s.response_mask.index(1)] for s in seqs]
    rng = random.Random(SEED + 2)
    distinct = [[rng.randrange(model.config.vocab_size) for _ in range(len(p))] for p in first]
    generation = []
    runs = [(p, a) for p in (first, distinct) for a in ("eager", "sdpa")]
    for prompts, attention in [] if args.no_generation else runs:
        if time.perf_counter() > deadline:
            findings.append("generation stopped: the budget ran out")
            break
        try:
            generation.append(
                time_generation(decoder, prompts, shape.gen_tokens, attention, device)
            )
        except Exception as exc:
            traceback.print_exc()
            findings.append(f"generation ({attention}) failed: {type(exc).__name__}: {exc}")

    generated = sum(sum(s.response_mask) for s in seqs)
    result = {
        "machine": info,
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "size": args.size,
        "shape": dataclasses.asdict(shape),
        "params": params,
        "micro_tokens": micro,
        "fused_adamw": fused,
        "update_path": "Learner.step",
        "batch": {
            "sequences": len(seqs),
            "tokens": sum(len(s) for s in seqs),
            "generated": generated,
            "chunks": sum(s.num_chunks for s in seqs),
            "planted_mismatch": shifted,
            "tokens_run": tokens_run(seqs, micro),
        },
        "steps": records,
        "warmup": args.warmup,
        "counted": counted,
        "median": {k: median_of(counted, k) for k in (counted[0] if counted else {})},
        "generation": generation,
        "findings": findings,
        "seconds_total": time.perf_counter() - started,
    }
    result["foreign_modules"] = [m for m in FOREIGN if m in sys.modules]
    if args.json:  # before the tables, so a failure printing them loses no figures
        args.json.write_text(json.dumps(result, indent=1, default=str))

    if records:
        console.print(steps_table(records, args.warmup))
    console.print(figures_table(summary_rows(result)))
    for finding in findings:
        console.print(f"[yellow]finding: {finding}[/yellow]")
    if result["foreign_modules"]:
        console.print(
            f"[yellow]warning: imported {', '.join(result['foreign_modules'])} "
            "(a GPU image may lack them; pydantic travels as wheels)[/yellow]"
        )
    console.print(f"[dim]total {result['seconds_total']:.0f} s[/dim]")
    if args.json:
        console.print(f"figures written to {args.json}")
    return 0 if records and not error else 1


if __name__ == "__main__":
    sys.exit(main())
