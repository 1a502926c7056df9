"""Offline rewriting of real Terminal-Bench test scripts, checked line by line and in sandboxes."""

from __future__ import annotations

import subprocess

from rockroll import Sandbox
from rockroll.tasks.offline import make_offline
from tests.paths import TASKS, needs

EVOEVAL = TASKS / "evoeval" / "0" / "run-tests.sh"
AIDER = TASKS / "aider-polyglot-python" / "polyglot_python_affine-cipher" / "run-tests.sh"

pytestmark = needs(TASKS)


class Probe:
    """Answers every question with `answer` and remembers what it was asked."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, kind: str, names: list[str]) -> bool:
        self.calls.append((kind, names))
        return self.answer


def _changed(original: str, rewritten: str) -> dict[int, str]:
    """Line number -> new text, for the lines that differ; the line count must not change."""
    old, new = original.splitlines(), rewritten.splitlines()
    assert len(old) == len(new)
    return {n: b for n, (a, b) in enumerate(zip(old, new, strict=True), 1) if a != b}


def _bash_syntax_ok(script: str) -> None:
    res = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


EVOEVAL_REWRITES = {
    6: ": # offline: package lists not refreshed",  # apt-get update
    7: ": # offline: already installed: curl",  # apt-get install -y curl
    10: ": # offline: installer download skipped",  # curl -LsSf .../install.sh | sh
    12: ": # offline: installer environment not needed",  # source $HOME/.local/bin/env
    20: ": # offline: project environment not needed",  # uv init
    21: ": # offline: already installed: pytest",  # uv add pytest==8.4.1
    23: "python3 -m pytest $TEST_DIR/test_outputs.py -rA",  # uv run pytest ...
}


def test_evoeval_script_with_everything_installed() -> None:
    original = EVOEVAL.read_text()
    probe = Probe(True)
    script, rewrites = make_offline(original, probe)
    assert _changed(original, script) == EVOEVAL_REWRITES
    assert [r.line for r in rewrites] == sorted(EVOEVAL_REWRITES)
    assert rewrites[0].original == "apt-get update"
    assert rewrites[-1].original == "uv run pytest $TEST_DIR/test_outputs.py -rA"
    assert all(r.why for r in rewrites)
    assert "line 21: 'uv add pytest==8.4.1' -> " in str(rewrites[5])
    # Version pins and flags are not package names.
    assert probe.calls == [("apt", ["curl"]), ("python", ["pytest"])]
    _bash_syntax_ok(script)


def test_evoeval_script_keeps_installs_the_image_lacks() -> None:
    original = EVOEVAL.read_text()
    script, rewrites = make_offline(original, Probe(False))
    changed = _changed(original, script)
    # The install steps stay, so offline they fail for real instead of pretending.
    kept = original.splitlines()
    assert kept[6] == "apt-get install -y curl" and 7 not in changed
    assert kept[20] == "uv add pytest==8.4.1" and 21 not in changed
    assert changed == {n: t for n, t in EVOEVAL_REWRITES.items() if n not in (7, 21)}
    assert [r.line for r in rewrites] == sorted(changed)


def test_aider_script_pip_install_with_fallback() -> None:
    original = AIDER.read_text()
    line = "pip3 install --no-cache-dir pytest 2>/dev/null || pip install --no-cache-dir pytest"
    number = original.splitlines().index(line) + 1
    probe = Probe(True)
    script, rewrites = make_offline(original, probe)
    assert _changed(original, script) == {number: ": # offline: already installed: pytest"}
    assert [(r.line, r.original) for r in rewrites] == [(number, line)]
    assert probe.calls == [("python", ["pytest"])]
    _bash_syntax_ok(script)

    probe = Probe(False)
    script, rewrites = make_offline(original, probe)
    assert script == original and rewrites == []
    assert probe.calls == [("python", ["pytest"])]


def test_indentation_and_other_lines_are_kept() -> None:
    script = (
        "#!/bin/bash\n"
        "set -e\n"
        "if true; then\n"
        "    apt-get update -qq\n"
        "\tpip install -q 'requests>=2' pytest-timeout==2.3\n"
        "    uv run python check.py --fast\n"
        "  uv run tool.py arg\n"
        "    uv run py.test -x tests/\n"
        "fi\n"
        "echo 'apt-get update'  # quoted, not a command\n"
        "python3 -m pytest -rA\n"
        "curl -fsSL https://example.com/data.json -o data.json\n"
    )
    probe = Probe(True)
    out, rewrites = make_offline(script, probe)
    assert _changed(script, out) == {
        4: "    : # offline: package lists not refreshed",
        5: "\t: # offline: already installed: requests pytest-timeout",
        6: "    python3 check.py --fast",
        7: "  python3 tool.py arg",
        8: "    python3 -m pytest -x tests/",
    }
    assert probe.calls == [("python", ["requests", "pytest-timeout"])]
    assert [r.line for r in rewrites] == [4, 5, 6, 7, 8]
    _bash_syntax_ok(out)


def test_a_script_without_bootstrap_steps_is_unchanged() -> None:
    script = "#!/bin/sh\ncd /app\npython3 -m pytest -rA\n"
    probe = Probe(True)
    assert make_offline(script, probe) == (script, [])
    assert probe.calls == []


def test_rewritten_scripts_pass_offline_in_a_sandbox(base_image: str) -> None:
    """The base image has curl and pytest and no network: the originals cannot bootstrap
    there, the rewritten evoeval script and the rewritten aider script pass."""
    test = "def test_ok():\n    assert 1 + 1 == 2\n"
    with Sandbox.create(base_image, network="none") as sb:
        sb.write_text("/tests/test_outputs.py", test)
        sb.exec(["mkdir", "-p", "/app"])
        env = {"TEST_DIR": "/tests"}
        for name, path in (("evoeval", EVOEVAL), ("aider", AIDER)):
            original = path.read_text()
            sb.write_text(f"/tests/{name}.sh", original)
            script, _ = make_offline(original, Probe(True))
            sb.write_text(f"/tests/{name}-offline.sh", script)
            res = sb.exec(["bash", f"/tests/{name}-offline.sh"], cwd="/app", env=env, timeout=60)
            assert res.exit_code == 0, res.output
            assert "1 passed" in res.stdout, res.output
            assert "PASSED" in res.stdout
        # The original uv bootstrap cannot download uv: `uv` is not found, nothing is tested.
        res = sb.exec(["bash", "/tests/evoeval.sh"], cwd="/app", env=env, timeout=60)
        assert res.exit_code != 0
        assert "uv: command not found" in res.output
        assert "1 passed" not in res.stdout
