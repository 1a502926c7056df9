"""Overlay task folders: a task made from another by adding to it, without copying its format.

    overlay.json      {"id", "base", "setup", "verifier_before", "tools", "metadata"}
    base/             the base task's folder (any format), when the base has one

`base` is {"folder": "base"} (a folder beside overlay.json) or {"suite": NAME, "task": ID}
(a task of a suite that is regenerated, as `term:` and `rg:` tasks are). The overlay task is
the base with `setup` scripts added (run as root before the agent starts), `verifier_before`
scripts (run before the tests), extra `tools` for the harness, and `metadata` keys merged in;
its instruction, environment and tests are the base's. The red-team suite
(`rockroll safety redteam`) writes these.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rockroll.errors import TaskError
from rockroll.tasks.schema import Task, ToolSpec

OVERLAY = "overlay.json"


class Base(BaseModel):
    model_config = ConfigDict(extra="forbid")

    folder: str | None = Field(None, description="the base task's folder, beside overlay.json")
    suite: str | None = Field(None, description="a suite name (term:..., humaneval)")
    task: str | None = Field(None, description="the task's id within that suite")

    @model_validator(mode="after")
    def _one(self) -> Base:
        if (self.folder is None) == (self.suite is None):
            raise ValueError('give either "folder" or "suite" (with "task")')
        if self.suite is not None and not self.task:
            raise ValueError('"suite" needs "task", the id of one of its tasks')
        return self


class Overlay(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    base: Base
    setup: list[str] = Field(default_factory=list)
    verifier_before: list[str] = Field(default_factory=list)
    tools: list[ToolSpec] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


def is_overlay(path: Path) -> bool:
    return (path / OVERLAY).is_file()


def write_overlay(folder: Path, overlay: Overlay) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / OVERLAY).write_text(overlay.model_dump_json(indent=1, exclude_none=True) + "\n")
    return folder


def load_overlay(
    path: Path,
    load_folder: Callable[[Path], Task],
    load_suite: Callable[[str], list[Any]],
) -> Task:
    """The task an overlay folder makes; the base is loaded with the callables given (the
    folder formats and suites of `rockroll.tasks.suites`)."""
    file = path / OVERLAY
    try:
        overlay = Overlay.model_validate(json.loads(file.read_text()))
    except (ValueError, ValidationError) as exc:
        raise TaskError(path.name, "invalid-task", f"{file}: {_first(exc)}") from None
    base = _base(path, overlay, load_folder, load_suite)
    meta = base.metadata.model_dump() | overlay.metadata
    return base.model_copy(
        update={
            "id": overlay.id,
            "path": path,
            "setup": [*base.setup, *overlay.setup],
            "tools": [*base.tools, *overlay.tools],
            "verifier": base.verifier.model_copy(
                update={"before": [*base.verifier.before, *overlay.verifier_before]}
            ),
            "metadata": type(base.metadata).model_validate(meta),
        }
    )


def _base(
    path: Path,
    overlay: Overlay,
    load_folder: Callable[[Path], Task],
    load_suite: Callable[[str], list[Any]],
) -> Task:
    ref = overlay.base
    if ref.folder is not None:
        folder = path / ref.folder
        if not folder.is_dir():
            raise TaskError(
                overlay.id, "invalid-task", f"{path / OVERLAY}: no base folder {folder}"
            )
        return load_folder(folder)
    assert ref.suite is not None
    found = _suite(ref.suite, load_suite).get(ref.task or "")
    if found is None:
        raise TaskError(
            overlay.id, "invalid-task", f"{path / OVERLAY}: {ref.suite!r} has no task {ref.task!r}"
        )
    if isinstance(found, TaskError):
        raise found
    return found


@functools.lru_cache(maxsize=32)
def _suite(spec: str, load_suite: Callable[[str], list[Any]]) -> dict[str, Any]:
    """A suite's tasks by id, loaded once per process (an overlay suite names it per task)."""
    return {(t.task_id if isinstance(t, TaskError) else t.id): t for t in load_suite(spec)}


def _first(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "the file"
        return f"{where}: {err['msg']}"
    return f"not valid JSON ({exc})"
