"""What a training run shows a person: live progress per step, and the before/after table."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from rockroll.progress import RunProgress
from rockroll.train.config import TrainConfig
from rockroll.train.evaluation import EvalResult


def _step_line(m: dict) -> str:
    last = (
        f"reward {m.get('reward', 0):.2f} success {m.get('success', 0):.0%} "
        f"loss {m.get('loss', 0):+.3f} |g| {m.get('grad_norm', 0):.3f} "
        f"rollout {m.get('rollout_seconds', 0):.0f}s train {m.get('train_seconds', 0):.0f}s"
    )
    return last + (f" eval {m['eval_success']:.0%}" if "eval_success" in m else "")


@contextlib.contextmanager
def progress_printer(console: Console, cfg: TrainConfig) -> Iterator[Callable[[dict], None]]:
    """A progress bar over the RL steps, with the latest reward, success and timings; on a pipe
    or a file, a line per step and a status line at least every 30 s (warm-up and evaluations
    included, which run before and between the steps)."""
    if not console.is_terminal:
        with RunProgress(f"{cfg.algorithm} steps", cfg.steps, console, counted=None) as lines:
            yield lambda m: lines.done(f"step {m['step']}: {_step_line(m)}")
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[last]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(f"{cfg.algorithm} steps", total=cfg.steps, last="")

        def on_step(m: dict) -> None:
            progress.update(bar, completed=m["step"], last=_step_line(m))

        yield on_step


def evals_table(evals: list[EvalResult]) -> Table:
    """Held-out success per family at each evaluation (first column: before training)."""
    table = Table(title="held-out success")
    table.add_column("family")
    for e in evals:
        table.add_column(e.label or f"step {e.step}", justify="right")
    families = sorted({f for e in evals for f in e.per_family})
    for fam in families:
        cells = []
        for e in evals:
            passed, total = e.per_family.get(fam, (0, 0))
            cells.append(f"{passed}/{total}" if total else "-")
        table.add_row(fam, *cells)
    table.add_row("[bold]all[/]", *[f"[bold]{e.success:.0%}[/]" for e in evals])
    for channel in sorted({c for e in evals for c in e.attacks}):
        cells = []
        for e in evals:
            followed, total = e.attacks.get(channel, (0, 0))
            cells.append(f"{followed}/{total}" if total else "-")
        table.add_row(f"red team {channel}: followed (sampled)", *cells)
    return table


def print_evals(console: Console, evals: list[EvalResult]) -> None:
    if evals:
        console.print(evals_table(evals))
