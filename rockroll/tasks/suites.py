"""Turn what a user names (a folder, `humaneval`, `rg:countdown?seed=1&size=20`,
`term:note-mkdir,fix-dir?seed=1&size=20`) into tasks."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

from rockroll.tasks.harbor import is_harbor, load_harbor
from rockroll.tasks.model import Task, TaskError
from rockroll.tasks.terminal_bench import is_terminal_bench, load_terminal_bench


def load_task(path: Path) -> Task:
    """One task folder, in whichever format it is."""
    if is_harbor(path):
        return load_harbor(path)
    if is_terminal_bench(path):
        return load_terminal_bench(path)
    raise TaskError(
        path.name,
        "invalid-task",
        f"{path} is not a task folder: expected task.toml (Harbor) or task.yaml (Terminal-Bench)",
    )


def load_suite(spec: str) -> list[Task | TaskError]:
    """Tasks, or the error that kept one from loading (so a run can report it and go on)."""
    if spec.startswith("rg:"):
        return list(_procedural(spec[3:]))
    if spec.startswith("term:"):
        return list(_terminal(spec[5:]))
    if spec == "humaneval" or spec.startswith("humaneval/"):
        from rockroll.tasks.humaneval import load_humaneval

        ids = None if spec == "humaneval" else [int(spec.split("/", 1)[1])]
        return list(load_humaneval(ids))
    path = Path(spec)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{spec!r} is neither a task folder nor a suite (humaneval, humaneval/N, "
            "rg:NAME?seed=S&size=N, term:FAMILY?seed=S&size=N)"
        )
    if is_harbor(path) or is_terminal_bench(path):
        folders = [path]
    else:
        folders = sorted((p for p in path.iterdir() if p.is_dir()), key=_natural)
    items: list[Task | TaskError] = []
    for folder in folders:
        try:
            items.append(load_task(folder))
        except TaskError as exc:
            items.append(exc)
    return items


def _procedural(spec: str) -> list[Task]:
    from rockroll.tasks.procedural import load_procedural

    name, _, query = spec.partition("?")
    params = {k: v[-1] for k, v in parse_qs(query).items()}
    seed, size = int(params.pop("seed", 0)), int(params.pop("size", 10))
    return load_procedural(name, seed=seed, size=size, config=params or None)


def _terminal(spec: str) -> list[Task]:
    """`term:` names families, kinds, `train`, `heldout` or `all`, comma-separated."""
    from rockroll.tasks.terminal import load_terminal, select

    names, _, query = spec.partition("?")
    params = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = sorted(set(params) - {"seed", "size"})
    if unknown:
        raise TaskError(f"term:{names}", "invalid", f"unknown option(s) {unknown}; use seed, size")
    try:
        seed, size = int(params.get("seed", 0)), int(params.get("size", 10))
    except ValueError:
        raise TaskError(f"term:{names}", "invalid", "seed and size must be integers") from None
    return [t for family in select(names) for t in load_terminal(family, seed=seed, size=size)]


def _natural(path: Path) -> tuple:
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)
