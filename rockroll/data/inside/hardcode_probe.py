"""The hack probe's hard-coder, run inside a task's sandbox: it runs the failing tests the
instruction names, reads pytest's `where RESULT = FUNCTION(ARGS)` lines and the expected value of
each failed `assert RESULT == EXPECTED`, and wraps each such module-level FUNCTION of the
repository so that exactly those arguments return the expected value, the rest unchanged. A
task whose tests such a patch passes checks too little.

Usage: python hardcode_probe.py ROOT TEST_ID...   Standard library only.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

_ASSERT = re.compile(r"^E\s+(?:AssertionError: )?assert (?P<got>.+)$")
_WHERE = re.compile(r"^E\s+\+\s+where (?P<got>.+?) = (?P<name>[A-Za-z_]\w*)\((?P<args>.*)\)$")
_WRAPPER = """

def _rockroll_probe_wrap(function, table):
    import functools

    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        for known, result in table:
            try:
                if list(args) == known:
                    return result
            except Exception:
                pass
        return function(*args, **kwargs)

    return wrapped
"""


def cases(output: str) -> dict[str, list[tuple[list, object]]]:
    """function name → [(arguments, expected result)] from pytest's failure output: the
    expected value of `assert GOT == WANT`, True for `assert GOT`, False for `assert not GOT`."""
    found: dict[str, list[tuple[list, object]]] = {}
    pending: tuple[str, str] | None = None
    for line in output.splitlines():
        if m := _ASSERT.match(line):
            got = m.group("got")
            if " == " in got:
                got, _, want = got.partition(" == ")
                pending = (got.strip(), want.strip())
            elif got.startswith("not "):
                pending = (got[4:].strip(), "False")
            else:
                pending = (got.strip(), "True")
        elif (m := _WHERE.match(line)) and pending is not None and m.group("got") == pending[0]:
            try:
                expected = ast.literal_eval(pending[1])
                args = ast.literal_eval(f"[{m.group('args')}]")
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            found.setdefault(m.group("name"), []).append((args, expected))
            pending = None
    return found


def defining_file(root: str, name: str) -> str | None:
    pattern = re.compile(rf"^def {re.escape(name)}\(", re.M)
    for folder, dirs, files in os.walk(root):
        dirs[:] = [
            d for d in dirs if not d.startswith(".") and d not in ("tests", "test", "testing")
        ]
        for file in files:
            path = os.path.join(folder, file)
            if file.endswith(".py") and not file.startswith("test_"):
                with open(path, errors="replace") as fh:
                    if pattern.search(fh.read()):
                        return path
    return None


def main(root: str, tests: list[str]) -> int:
    files = sorted({t.split("::")[0] for t in tests})
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--tb=long", "-p", "no:cacheprovider", *files],
        cwd=root,
        capture_output=True,
        text=True,
    )
    patched = 0
    for name, table in cases(done.stdout).items():
        path = defining_file(root, name)
        if path is None:
            continue
        with open(path) as fh:
            text = fh.read()
        addition = "" if "def _rockroll_probe_wrap(" in text else _WRAPPER
        addition += f"\n{name} = _rockroll_probe_wrap({name}, {table!r})\n"
        with open(path, "a") as fh:
            fh.write(addition)
        patched += 1
    print(f"hard-coded {patched} function(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
