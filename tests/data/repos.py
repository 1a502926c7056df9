"""Small git repositories that the data tests synthesize from."""

from __future__ import annotations

import subprocess
from pathlib import Path

CALC = '''import random


def clamp(x, lo, hi):
    """x, limited to the range from lo to hi."""
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


def mean(values):
    """The arithmetic mean of values."""
    total = 0
    for value in values:
        total += value
    return total / len(values)


def shout(word):
    return word.upper() + "!"


def wobble_a(n):
    return n * 2


def wobble_b(n):
    return n * 3


def wobble_c(n):
    return n * 4
'''
TESTS = """import tempfile
from pathlib import Path

from calc import clamp, mean, shout, wobble_a, wobble_b, wobble_c


def test_clamp_stays_in_range():  # checks that no hard-coded answer passes
    for x in range(-5, 16):
        assert 0 <= clamp(x, 0, 10) <= 10


def test_clamp_keeps_what_is_inside():
    for x in range(0, 11):
        assert clamp(x, 0, 10) - x == 0


def test_clamp_ends():
    assert [clamp(x, 0, 10) for x in (-5, 15)] == [0, 10]


def test_mean():
    for values in ([1, 2, 3, 6], [4], [2, 2, 5]):
        assert mean(values) * len(values) == sum(values)


def test_shout():  # one input only: a hard-coded answer passes it
    assert shout("hi") == "HI!"


# flaky: each passes and fails on alternate runs in one machine (a count kept in /tmp), so a
# test of the pipeline sees the flakiness in any two runs, never by chance only
def _flips(name):
    count = Path(tempfile.gettempdir()) / f".wobble-{name}"
    runs = int(count.read_text()) if count.exists() else 0
    count.write_text(str(runs + 1))
    return runs % 2 == 0


def test_wobble_a():
    assert wobble_a(2) == 4 and _flips("a")


def test_wobble_b():
    assert wobble_b(2) == 6 and _flips("b")


def test_wobble_c():
    assert wobble_c(2) == 8 and _flips("c")
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def make_repo(path: Path, files: dict[str, str], *later: tuple[str, dict[str, str]]) -> Path:
    """A git repository of `files`, then of each later (message, files) commit."""
    path.mkdir(parents=True)
    git(path, "init", "-q")
    for message, tree in [("init", files), *later]:
        for rel, text in tree.items():
            (path / rel).parent.mkdir(parents=True, exist_ok=True)
            (path / rel).write_text(text)
        git(path, "add", ".")
        git(path, "commit", "-qm", message)
    return path
