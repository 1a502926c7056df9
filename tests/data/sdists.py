"""Real packages for the pipeline's tests: sdists (with their test suites) fetched from the
package index when the suite is installed (`make test` runs this), so the tests themselves
serve them from a loopback index and use no other network.

    python tests/data/sdists.py FOLDER      fetch what FOLDER lacks
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

# Small, dependency-free, their tests in the sdist and quick.
SDISTS = {"iniconfig": "2.3.1", "toolz": "1.2.0", "six": "1.17.0"}
FOLDER = Path(__file__).resolve().parents[2] / ".cache" / "sdists"
INDEX = "https://pypi.org/pypi"


def fetch(folder: Path) -> None:
    import httpx

    folder.mkdir(parents=True, exist_ok=True)
    for name, version in SDISTS.items():
        target = folder / f"{name}-{version}.tar.gz"
        if target.is_file():
            continue
        page = f"{INDEX}/{name}/json"
        urls = httpx.get(page, follow_redirects=True, timeout=60).json()["releases"][version]
        sdist = next(u for u in urls if u["packagetype"] == "sdist")
        data = httpx.get(
            str(httpx.URL(page).join(sdist["url"])), follow_redirects=True, timeout=120
        ).content
        if hashlib.sha256(data).hexdigest() != sdist["digests"]["sha256"]:
            raise SystemExit(f"{name}=={version}: the download does not match its sha256")
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.rename(target)
        print(f"fetched {name}=={version} ({len(data)} bytes)")
    (folder / "index.json").write_text(json.dumps(SDISTS))


def load(folder: Path = FOLDER) -> dict[str, tuple[str, bytes]]:
    """name → (version, sdist bytes); an AssertionError saying how to fetch what is missing."""
    found = {}
    for name, version in SDISTS.items():
        path = folder / f"{name}-{version}.tar.gz"
        assert path.is_file(), f"{path} is missing: run `make test`, or python {__file__} {folder}"
        found[name] = (version, path.read_bytes())
    return found


if __name__ == "__main__":
    fetch(Path(sys.argv[1]) if len(sys.argv) > 1 else FOLDER)
