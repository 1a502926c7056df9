"""Where synthesized tasks come from: a local git repository, a Python package from the index,
or a folder of seed task descriptions.

A source is never changed in place: a repository is cloned (its committed state at `HEAD`, or
at the revision asked for) and a package's sdist is downloaded, checked against the index's
sha256 and unpacked, both into rockroll's cache (`$ROCKROLL_HOME/data/sources/`), where the next
run finds them. The network is used only here, at build time, as `docker build` would; the
index is `$ROCKROLL_PYPI_URL` (default https://pypi.org/pypi, its JSON API).

Spelled on the command line as a path (a git repository, or a folder of `*.md` seeds),
`pypi:NAME` or `pypi:NAME==VERSION`, and a repository path may end in `@REV`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from rockroll.errors import UsageError
from rockroll.sandbox.paths import rockroll_home

DEFAULT_INDEX = "https://pypi.org/pypi"
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")


class SourceError(UsageError):
    """A source that cannot be read: names it and what would fix it."""


@dataclass(frozen=True)
class Source:
    """A source as asked for: `kind` is "git", "pypi" or "seeds"."""

    kind: str
    name: str
    location: str  # the repository or folder path, or the package name
    version: str | None = None  # a git revision or a package version; None: HEAD / latest


@dataclass(frozen=True)
class Checkout:
    """A source made ready: a copy of its files that the pipeline may read and build from."""

    source: Source
    root: Path  # the working copy (never the original)
    revision: str  # the commit, or the package version


def parse_source(spec: str) -> Source:
    """`spec` as a Source; a bad one is a SourceError naming it."""
    if spec.startswith("pypi:"):
        name, _, version = spec[5:].partition("==")
        if not _NAME.match(name) or (version and not re.match(r"^[\w.+!-]+$", version)):
            raise SourceError(f"{spec}: expected pypi:NAME or pypi:NAME==VERSION")
        return Source("pypi", name, name, version or None)
    path_text, _, rev = spec.rpartition("@") if "@" in spec else (spec, "", "")
    path = Path(path_text).expanduser()
    if not path.is_dir():
        raise SourceError(
            f"{spec}: no such folder (give a git repository, a seeds folder or pypi:NAME)"
        )
    if (path / ".git").exists():
        return Source("git", path.resolve().name, str(path.resolve()), rev or None)
    if rev:
        raise SourceError(f"{spec}: @REV is for git repositories, and {path} is not one")
    if any(path.glob("*.md")):
        return Source("seeds", path.resolve().name, str(path.resolve()))
    raise SourceError(f"{spec}: neither a git repository nor a folder of *.md seed descriptions")


def checkout(source: Source, cache: Path | None = None) -> Checkout:
    """The source's files in the cache, fetched or cloned now unless they are there already."""
    cache = cache or rockroll_home() / "data" / "sources"
    if source.kind == "git":
        return _clone(source, cache)
    if source.kind == "pypi":
        return _sdist(source, cache)
    return Checkout(source, Path(source.location), "seeds")


def _git(*args: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise SourceError("git is not installed; install it (apt-get install git)") from None
    if done.returncode != 0:
        raise SourceError(f"git {' '.join(args[:2])}: {done.stderr.strip()[-300:]}")
    return done.stdout.strip()


def _clone(source: Source, cache: Path) -> Checkout:
    repo = Path(source.location)
    try:
        commit = _git("rev-parse", "--verify", f"{source.version or 'HEAD'}^{{commit}}", cwd=repo)
    except SourceError:
        raise SourceError(
            f"{repo}: no commit {source.version or 'HEAD'} (commit something, or name a revision)"
        ) from None
    root = cache / "git" / f"{source.name}-{commit[:12]}"
    if not (root / ".git").is_dir():
        tmp = _staging(root)
        _git("clone", "--quiet", "--no-hardlinks", "--no-checkout", str(repo), str(tmp))
        _git("checkout", "--quiet", "--detach", commit, cwd=tmp)
        _publish(tmp, root)
    return Checkout(source, root, commit)


def _staging(root: Path) -> Path:
    """An empty-to-be folder beside `root` (its parent made), where it is put together."""
    tmp = root.with_name(f".{root.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    return tmp


def _publish(tmp: Path, root: Path) -> None:
    """`tmp` becomes `root` in one rename, unless another run published it meanwhile."""
    if root.exists():
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, root)


def _sdist(source: Source, cache: Path) -> Checkout:
    index = os.environ.get("ROCKROLL_PYPI_URL", DEFAULT_INDEX).rstrip("/")
    page = f"{index}/{source.name}/json"
    info = _get(page, source).json()
    version, files = str(info["info"]["version"]), info.get("urls", [])
    if source.version:  # the project page lists every release (mirrors may lack the others)
        releases = info.get("releases")
        if releases is None:
            page = f"{index}/{source.name}/{source.version}/json"
            files = _get(page, source).json().get("urls", [])
        elif source.version not in releases:
            raise SourceError(
                f"pypi:{source.name}: no version {source.version} on the index "
                f"(the latest is {version})"
            )
        else:
            files = releases[source.version]
        version = source.version
    root = cache / "pypi" / f"{source.name}-{version}"
    if (root / ".complete").exists():
        return Checkout(source, _top(root), version)
    sdists = [u for u in files if u.get("packagetype") == "sdist"]
    if not sdists:
        raise SourceError(f"pypi:{source.name}=={version}: the index has no sdist, only wheels")
    # a mirror may answer with links relative to the page
    url = str(httpx.URL(page).join(sdists[0]["url"]))
    digest = sdists[0].get("digests", {}).get("sha256")
    data = _get(url, source).content
    if digest and hashlib.sha256(data).hexdigest() != digest:
        raise SourceError(f"pypi:{source.name}=={version}: {url} does not match its sha256")
    tmp = _staging(root)
    tmp.mkdir()
    archive = tmp / Path(url.split("?")[0]).name
    archive.write_bytes(data)
    _unpack(archive, tmp / "src", source)
    archive.unlink()
    (tmp / ".complete").touch()
    _publish(tmp, root)
    return Checkout(source, _top(root), version)


def _get(url: str, source: Source) -> httpx.Response:
    try:
        response = httpx.get(url, follow_redirects=True, timeout=60)
    except httpx.HTTPError as exc:
        raise SourceError(f"pypi:{source.name}: {url}: {exc}") from None
    if response.status_code == 404:
        raise SourceError(f"pypi:{source.name}: not on the index ({url})")
    if response.status_code != 200:
        raise SourceError(f"pypi:{source.name}: {url} answered {response.status_code}")
    return response


def _unpack(archive: Path, into: Path, source: Source) -> None:
    """An sdist (.tar.gz) unpacked with tarfile's `data` filter: no absolute paths, no links out
    of the folder, no devices."""
    if not archive.name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        raise SourceError(f"pypi:{source.name}: {archive.name} is not a tar sdist")
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise SourceError(f"pypi:{source.name}: {archive.name} cannot be unpacked: {exc}") from None


def _top(root: Path) -> Path:
    """The sdist's own folder (NAME-VERSION/) inside the unpacked tree."""
    entries = [p for p in (root / "src").iterdir() if p.is_dir()]
    return entries[0] if len(entries) == 1 else root / "src"
