"""Build: a draft as a task folder in the Harbor format, which `rockroll bench run` and
`rockroll train` load as they load any other.

    instruction.md
    task.toml                     metadata (source, strategy, the change), limits
    environment/Dockerfile        the project's shared Dockerfile, then `COPY change/ /app/`
    environment/repo/             the repository (hard links to the dataset's one copy)
    environment/change/PATH       the changed file
    solution/solve.sh             puts the file back as it was (solution/original/PATH)
    solution/fix.diff             the reference change, for people
    tests/test.sh                 restores the tests, runs exactly the task's tests, writes the
                                  reward: 1 when every one of them passed
    tests/expected.json           those tests: fail-to-pass and pass-to-pass
    tests/originals/              the repository's test files and pytest's configuration
    tests/plugin/                 the pytest plugin that reports each test's outcome

The image of every task of one repository is the shared one plus the layer of its changed file,
since the Dockerfile builder caches each COPY as a layer of its own.
"""

from __future__ import annotations

import difflib
import json
import os
import shlex
import shutil
from pathlib import Path

from rockroll.data.project import APP, CONFIG_FILES, Project
from rockroll.data.strategies import Draft
from rockroll.data.testrun import PLUGIN, files_of

TEST_TIMEOUT = 600


def write_task(
    folder: Path,
    draft: Draft,
    project: Project,
    context: Path,
    instruction: str,
    fail_to_pass: list[str],
    pass_to_pass: list[str],
    source: str,
) -> Path:
    """The task folder for `draft`, written at `folder` (replaced if it is there);
    `context` is the project's shared build context (`project.write_context`)."""
    shutil.rmtree(folder, ignore_errors=True)
    env = folder / "environment"
    env.mkdir(parents=True)
    shutil.copytree(context / "repo", env / "repo", symlinks=True, copy_function=link_file)
    _write(env / "change" / draft.path, draft.changed)
    dockerfile = (context / "Dockerfile").read_text()
    (env / "Dockerfile").write_text(dockerfile + f"COPY change/ {APP}/\n")
    (folder / "instruction.md").write_text(instruction)
    commands = expert_commands(draft, fail_to_pass)
    (folder / "task.toml").write_text(_toml(draft, project, source, commands))
    solution = folder / "solution"
    _write(solution / "original" / draft.path, draft.original)
    (solution / "fix.diff").write_text(fix_diff(draft))
    solve = solution / "solve.sh"
    solve.write_text(
        "#!/bin/bash\n# The reference change: the file as it was before the task changed it.\n"
        f"cp /solution/original/{shlex.quote(draft.path)} {APP}/{shlex.quote(draft.path)}\n"
    )
    solve.chmod(0o755)
    _tests(folder / "tests", project, fail_to_pass, pass_to_pass)
    return folder


def fix_diff(draft: Draft) -> str:
    return "".join(
        difflib.unified_diff(
            draft.changed.splitlines(keepends=True),
            draft.original.splitlines(keepends=True),
            f"a/{draft.path}",
            f"b/{draft.path}",
        )
    )


def expert_commands(draft: Draft, fail_to_pass: list[str]) -> list[str]:
    """The reference change as an agent would make it, one shell command a turn: run a failing
    test, edit the file (the changed lines replaced by the original ones, with what context
    makes them unique), run the failing tests again. The trainer's SFT and resampling replay
    these (`expert_commands` in the task's metadata)."""
    before, after = _hunk(draft.changed, draft.original)
    edit = (
        "python - <<'EOF'\nfrom pathlib import Path\n"
        f"path = Path({draft.path!r})\ntext = path.read_text()\n"
        f"path.write_text(text.replace({before!r}, {after!r}, 1))\nEOF"
    )
    some = " ".join(shlex.quote(t) for t in fail_to_pass[:5])
    return [
        f"python -m pytest -q -x {shlex.quote(fail_to_pass[0])}",
        edit,
        f"python -m pytest -q {some}",
    ]


def _hunk(changed: str, original: str) -> tuple[str, str]:
    """The smallest block of whole lines of `changed` that, replaced by its counterpart in
    `original`, gives `original`, grown by context lines until it occurs once."""
    a, b = changed.splitlines(keepends=True), original.splitlines(keepends=True)
    ops = [
        op
        for op in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
        if op[0] != "equal"
    ]
    i1, i2, j1, j2 = ops[0][1], ops[-1][2], ops[0][3], ops[-1][4]
    for context in range(len(a) + 1):
        lo, hi = max(0, i1 - context), min(len(a), i2 + context)
        before = "".join(a[lo:hi])
        if before and changed.count(before) == 1:
            after = "".join(a[lo:i1] + b[j1:j2] + a[i2:hi])
            return before, after
    return changed, original


def link_file(src: str, dst: str) -> None:
    """A hard link where it can be made (one copy of a repository for all its tasks)."""
    try:
        os.link(src, dst)
    except OSError:  # another file system: a copy
        shutil.copy2(src, dst)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _toml(draft: Draft, project: Project, source: str, commands: list[str]) -> str:
    def q(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)  # a TOML basic string

    difficulty = "unknown"
    return (
        'version = "1.0"\n\n[metadata]\n'
        f"category = {q(draft.strategy)}\n"
        f"difficulty = {q(difficulty)}\n"
        f'tags = ["synthesized", {q(draft.strategy)}, {q(project.name)}]\n'
        f"source = {q(source)}\n"
        f"revision = {q(project.version)}\n"
        f"change = {q(draft.detail)}\n"
        f"expert_commands = [{', '.join(q(c) for c in commands)}]\n\n"
        "[agent]\ntimeout_sec = 900\n\n"
        f"[verifier]\ntimeout_sec = {TEST_TIMEOUT + 60}\n\n"
        "[environment]\ncpus = 1\nmemory_mb = 2048\nstorage_mb = 4096\nbuild_timeout_sec = 1800\n"
    )


def _tests(tests: Path, project: Project, fail_to_pass: list[str], pass_to_pass: list[str]) -> None:
    tests.mkdir(parents=True)
    expected = {"tests": sorted(fail_to_pass + pass_to_pass), "fail_to_pass": sorted(fail_to_pass)}
    (tests / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    for rel in [*project.tests, *project.support]:
        _write(tests / "originals" / rel, (project.root / rel).read_text(errors="replace"))
    (tests / "plugin").mkdir()
    shutil.copy(PLUGIN, tests / "plugin" / PLUGIN.name)
    script = tests / "test.sh"
    script.write_text(test_script(project, files_of(expected["tests"])))
    script.chmod(0o755)


def test_script(project: Project, files: list[str]) -> str:
    """tests/test.sh: the reward is 1 only when every expected test passed, in a repository
    whose tests and pytest configuration are those of the original (what the agent added or
    changed there is undone first)."""
    support = [s for s in project.support if s.endswith("conftest.py")]
    allowed = " ".join(shlex.quote(f"{APP}/{s}") for s in support) or "''"
    configs = " ".join(c for c in CONFIG_FILES if c not in project.support)
    run = " ".join(shlex.quote(f) for f in files)
    return f"""#!/bin/bash
# Verifies the task: the repository's tests, restored as they were, run by pytest; the
# reward is 1 only when every test in expected.json passed.
mkdir -p /logs/verifier
echo 0 > /logs/verifier/reward.txt
cd {APP} || exit 0
cp -r /tests/originals/. {APP}/
allowed=({allowed})
find {APP} -name conftest.py -not -path '*/.*' | while read -r found; do
  case " ${{allowed[*]}} " in *" $found "*) ;; *) rm -f "$found" ;; esac
done
for added in {configs}; do rm -f "{APP}/$added"; done
export PYTHONPATH=/tests/plugin:{project.pythonpath} PYTHONDONTWRITEBYTECODE=1
export ROCKROLL_SELECT=/tests/expected.json ROCKROLL_OUTCOMES=/tmp/rockroll-outcomes.json
rm -f "$ROCKROLL_OUTCOMES"
timeout {TEST_TIMEOUT} python -m pytest -p rockroll_outcomes -p no:cacheprovider -q --tb=short \\
  --rootdir {APP} {run}
python -S -I /tests/plugin/rockroll_outcomes.py /tests/expected.json "$ROCKROLL_OUTCOMES" \\
  /logs/verifier/reward.txt
"""
