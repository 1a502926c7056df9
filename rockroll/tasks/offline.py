"""Make test scripts that fetch their tooling at verification time run with the network off.

Many published test scripts start by downloading what they need (`curl …/uv/install.sh | sh`,
`uv add pytest`, `pip install pytest`, `apt-get update`). Offline those steps fail and the task
scores 0 whatever the agent did. Each rule below recognises one such bootstrap step; it is
dropped only when what it would install is already in the image, and `uv run X` becomes plain
`X`. Every change is reported, so a result says that verification ran rewritten.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass

Probe = Callable[[str, list[str]], bool]  # (kind "python" | "apt", names) -> all present?


@dataclass(frozen=True)
class Rewrite:
    line: int
    original: str
    replacement: str
    why: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.original!r} -> {self.replacement!r} ({self.why})"


_INSTALLER = re.compile(r"^(curl|wget)\b.*\|\s*(sudo\s+)?(ba)?sh\b")
_ENV_SOURCE = re.compile(r"^(source|\.)\s+\S*\.local/bin/env\s*$")
_APT_UPDATE = re.compile(r"^(sudo\s+)?apt(-get)?\s+update(\s+-\S+)*\s*$")
_APT_INSTALL = re.compile(
    r"^(sudo\s+)?(DEBIAN_FRONTEND=\S+\s+)?apt(-get)?\s+install\s+(?P<rest>.*)$"
)
_PIP_INSTALL = re.compile(r"^(python3?\s+-m\s+)?(uv\s+)?pip3?\s+install\s+(?P<rest>.*)$")
_UV_ADD = re.compile(r"^uv\s+add\s+(?P<rest>.*)$")
_UV_INIT = re.compile(r"^uv\s+(init|venv|sync)\b.*$")
_UV_RUN = re.compile(r"^(?P<indent>\s*)uv\s+run\s+(?P<rest>.*)$")


def make_offline(script: str, probe: Probe) -> tuple[str, list[Rewrite]]:
    """The script with bootstrap steps removed or replaced, and what was changed."""
    out, rewrites = [], []
    for number, line in enumerate(script.splitlines(), 1):
        new, why = _rewrite(line, probe)
        if new is not None and new != line:
            rewrites.append(Rewrite(number, line.strip(), new.strip(), why))
            out.append(new)
        else:
            out.append(line)
    return "\n".join(out) + "\n", rewrites


def _rewrite(line: str, probe: Probe) -> tuple[str | None, str]:
    text = line.strip()
    indent = line[: len(line) - len(line.lstrip())]
    skip = indent + ": # offline: "
    first = text.split("||")[0].split("2>")[0].strip()
    if _INSTALLER.match(text):
        return skip + "installer download skipped", "downloads an installer"
    if _ENV_SOURCE.match(text):
        return skip + "installer environment not needed", "belongs to a skipped installer"
    if _APT_UPDATE.match(text):
        return skip + "package lists not refreshed", "needs the network"
    if m := _APT_INSTALL.match(first):
        names = _names(m.group("rest"))
        if probe("apt", names):
            return skip + "already installed: " + " ".join(names), "packages already installed"
        return None, ""
    if (m := _PIP_INSTALL.match(first)) or (m := _UV_ADD.match(first)):
        names = _names(m.group("rest"))
        if names and probe("python", names):
            return skip + "already installed: " + " ".join(names), "packages already installed"
        return None, ""
    if _UV_INIT.match(text):
        return skip + "project environment not needed", "uv project set-up needs the network"
    if m := _UV_RUN.match(line):
        words = m.group("rest").split(None, 1)
        tail = " " + words[1] if len(words) > 1 else ""
        if words[0] in ("pytest", "py.test"):
            command = "python3 -m pytest" + tail
        elif words[0] in ("python", "python3"):
            command = "python3" + tail
        elif words[0].endswith(".py"):  # `uv run script.py` runs the script with Python
            command = "python3 " + m.group("rest")
        else:
            command = m.group("rest")
        return m.group("indent") + command, "runs with the image's Python instead of uv's"
    return None, ""


def _names(rest: str) -> list[str]:
    """Package names from install arguments, without flags or version pins."""
    try:
        words = shlex.split(rest)
    except ValueError:
        words = rest.split()
    names = []
    for word in words:
        if word.startswith("-") or word in ("&&", ";"):
            if word in ("&&", ";"):
                break
            continue
        names.append(re.split(r"[=<>~!\[;]", word, maxsplit=1)[0])
    return [n for n in names if n]
