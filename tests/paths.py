"""Where the tests find what lives outside the repository, and what CI demands of it.

`shared/` (the real external task sets, among others) sits beside the repository: a clone at
/x/repo has /x/shared. `ROCKROLL_SHARED` names another place. Tests that need something from it
use `needs(path)`: a skip on a developer's machine that lacks it, a failure under CI (where the
`CI` environment variable is set), so that CI never passes by skipping them.

A test that can only run on a GPU skips with a reason starting with `NO_GPU`; under CI, every
other skip fails the run (see `pytest_sessionfinish` in tests/conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NO_GPU = "no GPU"  # the reason prefix of the one skip CI accepts


def in_ci() -> bool:
    """True when the `CI` environment variable is set (to anything but 0/false/no)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def shared_dir() -> Path:
    """`$ROCKROLL_SHARED`, else the `shared` folder beside the repository."""
    named = os.environ.get("ROCKROLL_SHARED")
    return Path(named).expanduser().resolve() if named else REPO.parent / "shared"


SHARED = shared_dir()
TASKS = SHARED / "tasks"


def needs(path: Path) -> pytest.MarkDecorator:
    """The mark for a module or test that needs `path` (under shared/): nothing when it is there;
    when it is missing, a skip, or under CI a failure (raised while collecting, so the run stops
    with this one line)."""
    if path.exists():
        return pytest.mark.skipif(False, reason=f"{path} is present")
    where = (
        f"shared/ is looked for beside the repository, at {SHARED}; ROCKROLL_SHARED names another"
    )
    if in_ci():
        pytest.fail(f"CI needs {path}, which is not present ({where})", pytrace=False)
    return pytest.mark.skipif(True, reason=f"{path} is not present ({where})")
