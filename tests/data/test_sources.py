"""Sources: a git repository cloned (never changed in place), a package's sdist fetched from an
index (here a real HTTP server on loopback that the test runs), seeds, and bad input."""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rockroll.data.sources import SourceError, checkout, parse_source
from tests.data.pypi_index import Index


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _repo(tmp_path: Path) -> tuple[Path, str, str]:
    repo = tmp_path / "calc"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "one")
    first = _git(repo, "rev-parse", "HEAD")
    (repo / "calc.py").write_text("def add(a, b):\n    return b + a\n")
    _git(repo, "commit", "-qam", "two")
    return repo, first, _git(repo, "rev-parse", "HEAD")


def test_a_repository_is_cloned_at_head_or_a_revision_and_never_changed(tmp_path: Path) -> None:
    repo, first, head = _repo(tmp_path)
    (repo / "calc.py").write_text("uncommitted\n")  # the working tree is not the source
    got = checkout(parse_source(str(repo)), tmp_path / "cache")
    assert got.revision == head and got.root != repo
    assert (got.root / "calc.py").read_text() == "def add(a, b):\n    return b + a\n"
    (got.root / "calc.py").write_text("changed in the copy\n")
    assert (repo / "calc.py").read_text() == "uncommitted\n"
    again = checkout(parse_source(str(repo)), tmp_path / "cache")
    assert again.root == got.root  # cached, not cloned again
    old = checkout(parse_source(f"{repo}@{first[:8]}"), tmp_path / "cache")
    assert old.revision == first and "a + b" in (old.root / "calc.py").read_text()
    with pytest.raises(SourceError, match="no commit nosuch"):
        checkout(parse_source(f"{repo}@nosuch"), tmp_path / "cache")


def _sdist(name: str, version: str, members: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for rel, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(rel if rel.startswith("..") else f"{name}-{version}/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture
def index(monkeypatch: pytest.MonkeyPatch) -> Iterator[Index]:
    served = Index()
    monkeypatch.setenv("ROCKROLL_PYPI_URL", served.url)
    yield served
    served.server.shutdown()


def test_a_package_is_fetched_checked_unpacked_and_cached(index: Index, tmp_path: Path) -> None:
    members = {"tinylib.py": "X = 1\n", "tests/test_x.py": "def test_x():\n    pass\n"}
    index.packages["tinylib"] = ("1.2", _sdist("tinylib", "1.2", members), None)
    got = checkout(parse_source("pypi:tinylib"), tmp_path / "cache")
    assert got.revision == "1.2" and got.root.name == "tinylib-1.2"
    assert (got.root / "tests" / "test_x.py").is_file()
    again = checkout(parse_source("pypi:tinylib==1.2"), tmp_path / "cache")
    assert again.root == got.root and index.downloads == 1
    index.packages["rellib"] = ("0.1", _sdist("rellib", "0.1", {"rellib.py": ""}), None)
    assert (checkout(parse_source("pypi:rellib"), tmp_path / "cache").root / "rellib.py").is_file()


def test_bad_packages_say_what_is_wrong(index: Index, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(SourceError, match=r"pypi:absent: not on the index"):
        checkout(parse_source("pypi:absent"), cache)
    index.packages["onlyone"] = ("2.0", _sdist("onlyone", "2.0", {"a.py": ""}), None)
    with pytest.raises(SourceError, match=r"no version 1\.0 on the index \(the latest is 2\.0\)"):
        checkout(parse_source("pypi:onlyone==1.0"), cache)
    index.packages["wheelonly"] = ("1.0", None, None)
    with pytest.raises(SourceError, match="no sdist, only wheels"):
        checkout(parse_source("pypi:wheelonly"), cache)
    index.packages["tampered"] = ("1.0", _sdist("tampered", "1.0", {"a.py": ""}), "0" * 64)
    with pytest.raises(SourceError, match="does not match its sha256"):
        checkout(parse_source("pypi:tampered"), cache)
    evil = _sdist("evil", "1.0", {"../../outside.py": "x = 1\n"})
    index.packages["evil"] = ("1.0", evil, None)
    with pytest.raises(SourceError, match="cannot be unpacked"):
        checkout(parse_source("pypi:evil"), cache)
    assert not list(tmp_path.rglob("outside.py"))


def test_spellings_of_sources_and_their_errors(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "one.md").write_text("Count the lines of every log file.\n")
    assert parse_source(str(seeds)).kind == "seeds"
    assert parse_source("pypi:six==1.16.0").version == "1.16.0"
    with pytest.raises(SourceError, match="expected pypi:NAME"):
        parse_source("pypi:bad name")
    with pytest.raises(SourceError, match="no such folder"):
        parse_source(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="neither a git repository nor a folder"):
        parse_source(str(tmp_path / "empty"))
    with pytest.raises(SourceError, match="@REV is for git repositories"):
        parse_source(f"{seeds}@main")
