"""Explore by commit replay: commits that change code and tests together become tasks whose
reference solution is the commit's code change, verified by the tests it added or changed.

The project's image holds the repository at the checked-out revision, so a commit is replayed
backwards there: its one changed code file is put back as it was before the commit (only when
that file has not changed since, so the rest of the repository is as the commit left it), and
the tests of the files the commit touched must fail then and pass with the file as it is. The
commit's message is the instruction, as an issue would be; the leak gate still checks it, since
messages often say what the fix was.

One code file per commit for now: commits changing several are skipped.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

from rockroll.data.project import Project
from rockroll.data.strategies import Draft, listing

MAX_COMMITS = 500
MAX_MESSAGE = 3000


class CommitReplay:
    name = "commit-replay"

    def drafts(self, project: Project, covered: set[tuple[str, str]]) -> Iterator[Draft]:
        if not (project.root / ".git").exists():
            return
        code, tests = set(project.code), set(project.tests)
        commits = _git(project, "rev-list", "--no-merges", f"--max-count={MAX_COMMITS}", "HEAD")
        for commit in (commits or "").split():
            names = _git(project, "diff-tree", "--no-commit-id", "--name-only", "-r", commit)
            changed = (names or "").splitlines()
            files = [f for f in changed if f in code]
            touched = tuple(f for f in changed if f in tests)
            if len(files) != 1 or not touched:
                continue
            path = files[0]
            now = (project.root / path).read_text(errors="replace")
            after = _show(project, commit, path)
            before = _show(project, f"{commit}^", path)
            if after != now or before is None or before == now:
                continue  # changed since, or added by the commit: not replayable on this tree
            message = (_git(project, "log", "-1", "--format=%B", commit) or "").strip()
            yield Draft(
                self.name,
                path,
                "*",
                0,
                f"commit {commit[:12]}: {message.splitlines()[0][:120] if message else ''}",
                now,
                before,
                message[:MAX_MESSAGE],
                touched,
            )

    def instruction(self, draft: Draft, project: Project, failing: dict[str, str]) -> str:
        title, _, body = draft.docstring.partition("\n")
        return (
            f"# {title.strip() or 'A change to ' + project.name}\n\n"
            + (f"{body.strip()}\n\n" if body.strip() else "")
            + f"Make this change to {project.name} (under `/app`). These tests check it and "
            f"fail now; they must pass, and the others still:\n\n{listing(failing)}\n"
        )


def _git(project: Project, *args: str) -> str | None:
    """git's output in the repository, None when it fails (a file a revision lacks)."""
    done = subprocess.run(
        ["git", *args], cwd=project.root, capture_output=True, text=True, errors="replace"
    )
    return done.stdout if done.returncode == 0 else None


def _show(project: Project, revision: str, path: str) -> str | None:
    return _git(project, "show", f"{revision}:{path}")
