"""The one grammar for naming tasks: what a user names (a folder, `humaneval`, `humaneval/N`,
`rg:countdown?seed=1&size=20`, `term:note-mkdir,fix-dir?seed=1&size=20`) becomes tasks.

Families register a name: one ending in `:` or `/` is a prefix (`rg:` + the rest), any other
is a suite's exact name (`humaneval`). Anything else names a task folder, or a folder of them.
The bench, the trainer and the environments (`rockroll.envs.make`) all read names here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

from rockroll.errors import TaskError, UsageError
from rockroll.tasks.harbor import is_harbor, load_harbor
from rockroll.tasks.overlay import is_overlay, load_overlay
from rockroll.tasks.schema import Task
from rockroll.tasks.terminal_bench import is_terminal_bench, load_terminal_bench

SuiteLoader = Callable[[str], list[Task]]
"""`loader(rest)`: the tasks a name stands for; `rest` is the name after its prefix."""


@dataclass(frozen=True)
class _Family:
    loader: SuiteLoader
    usage: str


_FAMILIES: dict[str, _Family] = {}


def register_suite(
    name: str, loader: SuiteLoader, *, usage: str = "", replace: bool = False
) -> None:
    """Make names starting with `name` (ending in `:` or `/`), or equal to it, load with
    `loader`; `usage` is how the name is written in help and errors. Clashes are refused."""
    if not name:
        raise UsageError("a suite name cannot be empty")
    if name in _FAMILIES and not replace:
        raise UsageError(f"the suite name {name!r} is already registered")
    _FAMILIES[name] = _Family(loader, usage or (name + "..." if _is_prefix(name) else name))


def suite_names() -> list[str]:
    """The registered names and prefixes."""
    return sorted(_FAMILIES)


def suite_usage() -> str:
    """The names a user can write, for help texts and errors."""
    return ", ".join(f.usage for f in _FAMILIES.values())


def load_task(path: Path) -> Task:
    """One task folder, in whichever format it is."""
    if is_overlay(path):
        return load_overlay(path, load_task, load_suite)
    if is_harbor(path):
        return load_harbor(path)
    if is_terminal_bench(path):
        return load_terminal_bench(path)
    raise TaskError(
        path.name,
        "invalid-task",
        f"{path} is not a task folder: expected task.toml (Harbor), task.yaml (Terminal-Bench) "
        "or overlay.json (a task made from another)",
    )


def load_suite(spec: str) -> list[Task | TaskError]:
    """Tasks, or the error that kept one from loading (so a run can report it and go on)."""
    name = _family_of(spec)
    if name is not None:
        found = list(_FAMILIES[name].loader(spec[len(name) :]))
        if not found:
            raise UsageError(f"{spec!r} names no tasks; ask for at least one (e.g. size=1)")
        return found
    path = Path(spec)
    if not path.is_dir():
        raise UsageError(f"{spec!r} is neither a task folder nor a suite ({suite_usage()})")
    if is_overlay(path) or is_harbor(path) or is_terminal_bench(path):
        folders = [path]
    else:
        folders = sorted((p for p in path.iterdir() if p.is_dir()), key=_natural)
    if not folders:
        raise UsageError(
            f"{spec!r} holds no task folders; a task folder has task.toml (Harbor) or task.yaml "
            "(Terminal-Bench 1.0), and a suite is a folder of them"
        )
    items: list[Task | TaskError] = []
    for folder in folders:
        try:
            items.append(load_task(folder))
        except TaskError as exc:
            items.append(exc)
    return items


def load_one(spec: str, index: int = 0) -> Task:
    """Task number `index` of what `spec` names (one environment's task); errors raise."""
    items = load_suite(spec)
    if not 0 <= index < len(items):
        raise UsageError(
            f"{spec!r} names {len(items)} task(s); index must be in 0..{len(items) - 1}, "
            f"got {index}"
        )
    item = items[index]
    if isinstance(item, TaskError):
        raise item
    return item


def _is_prefix(name: str) -> bool:
    return name.endswith((":", "/"))


def _family_of(spec: str) -> str | None:
    matches = [n for n in _FAMILIES if spec == n or (_is_prefix(n) and spec.startswith(n))]
    return max(matches, key=len, default=None)


def _humaneval_all(rest: str) -> list[Task]:
    from rockroll.tasks.humaneval import load_humaneval

    return load_humaneval(None)


def _humaneval_one(rest: str) -> list[Task]:
    from rockroll.tasks.humaneval import load_humaneval

    if not rest.isdigit():
        raise TaskError(f"humaneval/{rest}", "invalid", "humaneval/N needs a problem number")
    return load_humaneval([int(rest)])


def _procedural(spec: str) -> list[Task]:
    from rockroll.tasks.procedural import load_procedural

    name, _, query = spec.partition("?")
    params = {k: v[-1] for k, v in parse_qs(query).items()}
    try:
        seed, size = int(params.pop("seed", 0)), int(params.pop("size", 10))
    except ValueError:
        raise TaskError(f"rg:{name}", "invalid", "seed and size must be integers") from None
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


def _dataset(rest: str) -> list[Task]:
    """The accepted tasks of a dataset `rockroll data synth` made (DATASET/tasks/), those of one
    difficulty (easy, moderate, hard: the pass rates `rockroll data trajectories` measured)
    with `?difficulty=`; `?moderate` is `?difficulty=moderate`, the paper's RL selection."""
    path, _, query = rest.partition("?")
    folder = Path(path) / "tasks"
    if not folder.is_dir():
        raise UsageError(f"data:{path}: no {folder} (make a dataset with `rockroll data synth`)")
    options = parse_qs(query, keep_blank_values=True)
    wanted = options.get("difficulty", ["moderate"] if "moderate" in options else [None])[-1]
    unknown = set(options) - {"difficulty", "moderate"}
    if unknown:
        raise UsageError(f"data:{rest}: unknown option {sorted(unknown)[0]!r} (use difficulty=)")
    tasks = [load_harbor(p) for p in sorted(folder.iterdir()) if is_harbor(p)]
    return [t for t in tasks if wanted is None or t.metadata.difficulty == wanted]


def _natural(path: Path) -> tuple:
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


register_suite("humaneval", _humaneval_all)
register_suite("humaneval/", _humaneval_one, usage="humaneval/N")
register_suite("rg:", _procedural, usage="rg:NAME?seed=S&size=N")
register_suite("term:", _terminal, usage="term:FAMILY?seed=S&size=N")
register_suite("data:", _dataset, usage="data:DATASET[?difficulty=moderate]")
