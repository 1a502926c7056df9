"""Bug injection by AST mutation: each operator, the edit's extent, what is never touched."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from rockroll.data.mutations import OPERATORS, apply, find_mutations

SOURCE = '''\
"""A module."""
import math  # a comment that must stay


def clamp(x, lo, hi):
    """Keep x within [lo, hi]: 1 < 2 is not code."""
    if x < lo:
        return lo
    elif x > hi:
        return hi
    return x


def window(items, size=3):
    label = f"{size + 1} items"  # f-strings are left alone
    out = []
    for i in range(0, len(items) - size + 1):
        out.append(items[i : i + size])
    return out[0] if out else math.pow(2, 3)


class Stack:
    def push(self, item):
        self.items.append(item)
        self.size += 1
        return "é" if self.size > 10 else True
'''


def _module(source: str) -> dict:
    scope: dict = {}
    exec(compile(source, "sample.py", "exec"), scope)
    return scope


def _by(operator: str, before: str):
    found = [m for m in find_mutations(SOURCE, "sample.py") if m.operator == operator]
    return [m for m in found if m.before == before]


def test_every_operator_finds_its_sites() -> None:
    assert [m.after for m in _by("flip-comparison", "x < lo")] == ["x >= lo"]
    assert [m.after for m in _by("off-by-one", "x > hi")] == ["x >= hi"]
    assert [m.after for m in _by("off-by-one", "len(items) - size + 1")] == [
        "len(items) - size + 2"
    ]
    assert [m.after for m in _by("off-by-one", "out[0]")] == ["out[1]"]
    assert [m.after for m in _by("swap-arguments", "math.pow(2, 3)")] == ["math.pow(3, 2)"]
    assert [m.after for m in _by("change-constant", "True")] == ["False"]
    assert [m.after for m in _by("change-constant", "10")] == ["11"]
    assert [m.after for m in _by("delete-statement", "self.items.append(item)")] == ["pass"]
    (drop,) = [
        m
        for m in find_mutations(SOURCE, "sample.py")
        if m.operator == "drop-branch" and m.line == 7
    ]
    assert drop.after == "if x > hi:\n        return hi"  # the elif is all that is left
    assert {m.operator for m in find_mutations(SOURCE, "sample.py")} == set(OPERATORS)
    # a float added is change-constant's (off-by-one moves integers only)
    floats = find_mutations("def f(x):\n    return x + 0.5\n", "f.py")
    assert [(m.operator, m.after) for m in floats if m.before == "0.5"] == [
        ("change-constant", "1.5")
    ]


def test_a_mutation_changes_only_its_node_and_the_program_behaves_differently() -> None:
    mutations = find_mutations(SOURCE, "sample.py")
    for m in mutations:
        mutated = apply(SOURCE, m)
        assert mutated[: m.start] == SOURCE[: m.start]
        assert mutated[m.start + len(m.after) :] == SOURCE[m.end :]
        assert ast.dump(ast.parse(mutated)) != ast.dump(ast.parse(SOURCE))
    assert len({apply(SOURCE, m) for m in mutations}) == len(mutations)  # no two alike
    assert len({m.id for m in mutations}) == len(mutations)
    (flip,) = _by("flip-comparison", "x < lo")
    assert _module(SOURCE)["clamp"](5, 0, 3) == 3
    assert _module(apply(SOURCE, flip))["clamp"](5, 0, 3) == 0


def test_docstrings_f_strings_and_defaults_are_never_touched() -> None:
    found = find_mutations(SOURCE, "sample.py")
    text = SOURCE.splitlines()
    assert not [m for m in found if '"""' in text[m.line - 1]]
    on_label = [m for m in found if 'f"' in text[m.line - 1]]
    assert [(m.operator, m.after) for m in on_label] == [("delete-statement", "pass")]
    assert not [m for m in found if text[m.line - 1].startswith("def ")]  # size=3


def test_columns_after_non_ascii_text_are_found() -> None:
    (m,) = _by("flip-comparison", "self.size > 10")
    assert apply(SOURCE, m).splitlines()[-1].endswith('"é" if self.size <= 10 else True')


def test_only_the_functions_asked_for() -> None:
    found = find_mutations(SOURCE, "sample.py", functions={"Stack.push"})
    assert found and {m.function for m in found} == {"Stack.push"}
    only = find_mutations(SOURCE, "sample.py", operators=("swap-arguments",))
    assert [m.function for m in only] == ["window", "window"]  # range(0, ...), math.pow(2, 3)


def test_bad_input_is_refused_with_what_would_fix_it() -> None:
    with pytest.raises(ValueError, match=r"unknown mutation operator.*known"):
        find_mutations(SOURCE, "sample.py", operators=("invert-everything",))
    (m,) = _by("flip-comparison", "x < lo")
    with pytest.raises(ValueError, match=r"sample\.py:7: the file changed"):
        apply(SOURCE.replace("x < lo", "x<lo"), m)


@pytest.mark.parametrize("module", ["textwrap", "shlex", "json.decoder"])
def test_on_real_modules_every_mutation_parses_and_each_is_a_different_program(
    module: str,
) -> None:
    """Modules nobody here wrote (the standard library's own source)."""
    path = importlib.util.find_spec(module).origin  # type: ignore[union-attr]
    source = Path(path).read_text()  # type: ignore[arg-type]
    mutations = find_mutations(source, module)
    assert len(mutations) > 150
    assert {m.operator for m in mutations} == set(OPERATORS)
    programs = {ast.dump(ast.parse(apply(source, m))) for m in mutations}
    assert len(programs) == len(mutations)
    assert ast.dump(ast.parse(source)) not in programs
