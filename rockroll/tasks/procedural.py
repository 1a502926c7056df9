"""reasoning-gym's procedural datasets as sandbox tasks: the agent writes an answer to a file.

Entries are regenerated from (name, seed, size, config) when scoring, so a task carries only
those numbers, never its answer; the dataset's own `score_answer` gives the reward.
"""

from __future__ import annotations

import json
import shlex
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import reasoning_gym

from rockroll.errors import TaskError
from rockroll.tasks.schema import Environment, Metadata, Solution, Task, Verifier

if TYPE_CHECKING:
    from reasoning_gym.dataset import ProceduralDataset

    from rockroll.sandbox.sdk import Sandbox

ANSWER_FILE = "/app/answer.txt"
SCORE_FUNCTION = "rockroll.tasks.procedural:score"
INSTRUCTION_TAIL = f"Write only your final answer to {ANSWER_FILE}."

_DATASETS: OrderedDict[tuple[str, int, int, str], ProceduralDataset] = OrderedDict()
_KEEP = 256  # datasets kept built (an environment drawing a task per reset makes one each)
_LOCK = threading.Lock()


def load_procedural(name: str, *, seed: int, size: int, config: dict | None = None) -> list[Task]:
    """`size` tasks from reasoning-gym dataset `name`; the same arguments give the same tasks."""
    dataset = _dataset(name, seed, size, config)
    return [_task(name, seed, size, config, i, dataset[i]) for i in range(size)]


def score(sandbox: Sandbox, args: dict[str, Any]) -> tuple[float, str]:
    """The python verifier: (reward, detail) for the answer file left in `sandbox`."""
    dataset = _dataset(args["dataset"], args["seed"], args["size"], args.get("config"))
    entry = dataset[args["index"]]
    path = args.get("answer_file", ANSWER_FILE)
    try:
        raw = sandbox.read_bytes(path)
    except FileNotFoundError:
        return 0.0, f"no answer: {path} does not exist"
    except OSError as exc:
        return 0.0, f"no answer: {path} could not be read ({exc})"
    # Agents end files with a newline; exact-match scorers would count it against them.
    answer = raw.decode(errors="replace").strip()
    try:
        reward = float(dataset.score_answer(answer=answer, entry=entry))
    except Exception as exc:
        return 0.0, f"answer {_short(answer)!r} could not be scored: {type(exc).__name__}: {exc}"
    return reward, f"answer {_short(answer)!r} scored {reward:.3g}"


def _dataset(name: str, seed: int, size: int, config: dict | None) -> ProceduralDataset:
    """The dataset, built once per process for each (name, seed, size, config) among the last
    `_KEEP` used (the same arguments build the same dataset again)."""
    key = (name, seed, size, json.dumps(config or {}, sort_keys=True, default=repr))
    with _LOCK:
        if key in _DATASETS:
            _DATASETS.move_to_end(key)
        else:
            while len(_DATASETS) >= _KEEP:
                _DATASETS.popitem(last=False)
            try:
                _DATASETS[key] = reasoning_gym.create_dataset(
                    name, size=size, seed=seed, **(config or {})
                )
            except (ValueError, TypeError, AssertionError) as exc:
                raise TaskError(
                    f"rg/{name}/{seed}", "invalid", f"reasoning-gym refused the dataset: {exc}"
                ) from exc
        return _DATASETS[key]


def _task(
    name: str, seed: int, size: int, config: dict | None, index: int, entry: dict[str, Any]
) -> Task:
    answer = entry.get("answer")
    solution = None
    if answer is not None:  # some datasets (e.g. rush_hour) accept many answers and give none
        solution = Solution(script=f"printf '%s' {shlex.quote(str(answer))} > {ANSWER_FILE}\n")
    return Task(
        id=f"rg/{name}/{seed}/{index}",
        source="reasoning-gym",
        instruction=f"{entry['question'].rstrip()}\n\n{INSTRUCTION_TAIL}",
        environment=Environment(image="base", workdir="/app"),
        verifier=Verifier(
            kind="python",
            function=SCORE_FUNCTION,
            args={
                "dataset": name,
                "seed": seed,
                "size": size,
                "index": index,
                "config": None if config is None else dict(config),
                "answer_file": ANSWER_FILE,
            },
        ),
        solution=solution,
        metadata=Metadata(category=name, tags=["reasoning-gym"]),
    )


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
