"""A repository read as a Python project: which files are its code, which its tests, what it
needs installed, and the build context of the image every task made from it shares.

Tests are `test_*.py` and `*_test.py` files and everything in a folder named `test`, `tests` or
`testing`; the code is the other Python files of its packages (under `src/` when there is one),
not setup scripts, docs or examples. What pytest reads besides the tests (`conftest.py`,
`pytest.ini`, `tox.ini`, `setup.cfg`, `pyproject.toml`) is the tests' support: a task's test
script restores it, with the tests, before it runs them.
"""

from __future__ import annotations

import configparser
import re
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from rockroll.data.sources import Checkout, SourceError

PYTHON_IMAGE = "python:3.11-slim"
APP = "/app"
SKIP_DIRS = {
    ".git", ".hg", ".svn", ".tox", ".nox", ".venv", "venv", "env", "build", "dist", "__pycache__",
    ".eggs", ".mypy_cache", ".pytest_cache", ".ruff_cache", "node_modules", "site-packages",
}  # fmt: skip
NOT_CODE_DIRS = {"docs", "doc", "examples", "example", "benchmarks", "bench", "scripts", "tools"}
TEST_DIRS = {"test", "tests", "testing"}
CONFIG_FILES = ("pytest.ini", ".pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml")
NOT_CODE_FILES = {"setup.py", "conftest.py", "noxfile.py", "fabfile.py", "tasks.py", "manage.py"}
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class Project:
    """What the pipeline knows of a checkout. Paths are relative to `root`, with `/`."""

    root: Path
    name: str  # the package's or repository's name
    version: str  # the package version or the commit
    import_root: str  # "src" for a src/ layout, else "."
    code: tuple[str, ...]
    tests: tuple[str, ...]
    support: tuple[str, ...]
    requirements: tuple[str, ...] = field(default=())

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{self.name}-{self.version[:12]}")

    @property
    def pythonpath(self) -> str:
        return APP if self.import_root == "." else f"{APP}/{self.import_root}"


def read_project(checkout: Checkout) -> Project:
    """The checkout as a Project; a SourceError (naming it) when it has no tests or no code."""
    root, label = checkout.root, _label(checkout)
    files = sorted(_python_files(root))
    tests = [f for f in files if _is_test(f)]
    if not tests:
        raise SourceError(f"{label}: no tests (no test_*.py, *_test.py or tests/ folder)")
    import_root = "src" if (root / "src").is_dir() and _has_package(root / "src") else "."
    code = [f for f in files if f not in tests and _is_code(f, import_root)]
    if not code:
        raise SourceError(f"{label}: no Python code outside its tests")
    support = [f for f in files if f.endswith("/conftest.py") or f == "conftest.py"]
    support += [c for c in CONFIG_FILES if (root / c).is_file()]
    return Project(
        root=root,
        name=checkout.source.name,
        version=checkout.revision,
        import_root=import_root,
        code=tuple(code),
        tests=tuple(tests),
        support=tuple(support),
        requirements=tuple(_requirements(root, checkout.source.name)),
    )


def _label(checkout: Checkout) -> str:
    s = checkout.source
    return f"pypi:{s.name}=={checkout.revision}" if s.kind == "pypi" else s.location


def _python_files(root: Path) -> list[str]:
    found = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if any(p in SKIP_DIRS or p.endswith(".egg-info") for p in rel.parts[:-1]):
            continue
        if path.is_file() and not path.is_symlink():
            found.append(rel.as_posix())
    return found


def _is_test(rel: str) -> bool:
    parts = rel.split("/")
    name = parts[-1]
    if name == "conftest.py":
        return False
    return name.startswith("test_") or name.endswith("_test.py") or bool(TEST_DIRS & set(parts))


def _is_code(rel: str, import_root: str) -> bool:
    parts = rel.split("/")
    if parts[-1] in NOT_CODE_FILES or NOT_CODE_DIRS & set(parts[:-1]):
        return False
    if import_root != ".":
        return parts[0] == import_root
    return len(parts) > 1 or parts[-1] != "__init__.py"


def _has_package(folder: Path) -> bool:
    return any(p.is_dir() and (p / "__init__.py").is_file() for p in folder.iterdir())


def _requirements(root: Path, name: str) -> list[str]:
    """What the package needs to run: `[project] dependencies`, or setup.cfg's
    `install_requires`; its own name (the source's, or pyproject's) left out."""
    found: list[str] = []
    names = {_normal(name)}
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        try:
            table = tomllib.loads(pyproject.read_text()).get("project", {})
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            table = {}
        found = [str(r) for r in table.get("dependencies", [])]
        names.add(_normal(str(table.get("name", name))))
    setup_cfg = root / "setup.cfg"
    if not found and setup_cfg.is_file():
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(setup_cfg.read_text())
            text = parser.get("options", "install_requires", fallback="")
        except (configparser.Error, UnicodeDecodeError):
            text = ""
        found = [line.strip() for line in text.splitlines() if line.strip()]
    return [r for r in found if (m := _REQUIREMENT.match(r)) and _normal(m.group(1)) not in names]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def write_context(project: Project, folder: Path, installs: list[str]) -> Path:
    """The shared image's build context in `folder`: `repo/` (the checkout, without VCS data or
    caches) and a Dockerfile that copies it and installs pytest, the requirements and
    `installs`. A task's Dockerfile adds one COPY of its changed file, which the builder makes a
    layer of its own on this image (a COPY after a RUN starts one)."""
    repo = folder / "repo"
    if not repo.is_dir():
        tmp = folder / ".repo.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(project.root, tmp, symlinks=True, ignore=_ignored)
        tmp.rename(repo)
    (folder / "Dockerfile").write_text(dockerfile(project, installs))
    return folder


def dockerfile(project: Project, installs: list[str]) -> str:
    pip = " ".join(_quote(r) for r in ["pytest>=7", *project.requirements, *installs])
    return (
        f"FROM {PYTHON_IMAGE}\n"
        f"ENV PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "
        f"PYTHONPATH={project.pythonpath}\n"
        f"WORKDIR {APP}\n"
        f"COPY repo/ {APP}/\n"
        f"RUN python -m pip install -q --root-user-action=ignore {pip}\n"
    )


def _quote(requirement: str) -> str:
    return "'" + requirement.replace("'", "") + "'"


def _ignored(folder: str, names: list[str]) -> set[str]:
    return {n for n in names if n in SKIP_DIRS or n.endswith((".pyc", ".egg-info"))}
