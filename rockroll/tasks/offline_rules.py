"""The per-command rules of `rockroll.tasks.offline`, and the bit of shell syntax they need.

`lex` splits a command line into words and operators, each with its place in the text, so that
a rule can change one word and keep the rest as written. `process` decides for one simple
command: drop a bootstrap step that is not needed, rewrite `uv run`/`uvx`, drop flags of pytest
plugins the image lacks. Paths resolve heuristically: `$VAR` from the environment and the
script's assignments, `$(dirname "$0")` and the like to the script's directory, relative paths
against the script's directory (at run time they are relative to the working directory).
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Probe = Callable[[str, list[str]], bool]  # (kind "python" | "apt", names) -> all present?


@dataclass(frozen=True)
class Plugin:
    pypi: str
    module: str
    arg: Literal["none", "required", "optional"]
    effect: str


_REPORT = "its report is not written"
# pytest flag -> the plugin that adds it. A flag is dropped when its plugin's module is missing.
PLUGINS: dict[str, Plugin] = {
    "--ctrf": Plugin("pytest-json-ctrf", "ctrf", "required", _REPORT),
    "--json-report": Plugin("pytest-json-report", "pytest_jsonreport", "none", _REPORT),
    "--json-report-file": Plugin("pytest-json-report", "pytest_jsonreport", "required", _REPORT),
    "--cov": Plugin("pytest-cov", "pytest_cov", "optional", "coverage is not measured"),
    "--cov-report": Plugin("pytest-cov", "pytest_cov", "required", _REPORT),
    "--html": Plugin("pytest-html", "pytest_html", "required", _REPORT),
    "--timeout": Plugin("pytest-timeout", "pytest_timeout", "required", "tests run untimed"),
}
# Distributions whose module is not their name with `-` as `_`: the probe asks for the module
MODULES = {p.pypi: p.module for p in PLUGINS.values() if p.module != p.pypi.replace("-", "_")}
MODULES |= {"pyyaml": "yaml", "pillow": "PIL"}
MODULES |= {"beautifulsoup4": "bs4", "scikit-learn": "sklearn", "python-dateutil": "dateutil"}


@dataclass(frozen=True)
class Tok:
    """A word (quotes kept in `raw`), an operator, or a trailing comment, at [start, end)."""

    raw: str
    start: int
    end: int
    op: bool = False
    comment: bool = False

    @property
    def value(self) -> str:
        try:
            words = shlex.split(self.raw)
        except ValueError:
            return self.raw
        return words[0] if len(words) == 1 else self.raw if words else ""


_OPS = ("&&", "||", ";;", "|&", ";", "&", "|", "(", ")", "\n")


def lex(text: str) -> list[Tok] | None:
    """The tokens of a command line; None when a quote or bracket is left open."""
    toks: list[Tok] = []
    i = 0
    while i < len(text):
        if text[i] in " \t":
            i += 1
        elif text.startswith("\\\n", i):
            i += 2
        elif text[i] == "#":
            toks.append(Tok(text[i:], i, len(text), comment=True))
            break
        elif not text.startswith("&>", i) and (op := next(filter(text[i:].startswith, _OPS), "")):
            toks.append(Tok(op, i, i + len(op), op=True))
            i += len(op)
        else:
            end = _word_end(text, i)
            if end is None:
                return None
            toks.append(Tok(text[i:end], i, end))
            i = end
    return toks


def _word_end(text: str, i: int) -> int | None:
    stack: list[str] = []  # open '"', '`', '(' and '{'
    while i < len(text):
        c, top = text[i], stack[-1] if stack else ""
        if c == "\\":
            i += 2
            continue
        if top in ('"', "`"):
            if c == top:
                stack.pop()
            elif top == '"' and text[i : i + 2] in ("$(", "${"):
                stack.append(text[i + 1])
                i += 1
            elif top == '"' and c == "`":
                stack.append(c)
        elif c == "'":
            i = text.find("'", i + 1)
            if i < 0:
                return None
        elif c in '"`':
            stack.append(c)
        elif text[i : i + 2] in ("$(", "${"):
            stack.append(text[i + 1])
            i += 1
        elif c == "(" and (stack or text[i - 1 : i] in ("=", "<", ">", "@")):
            stack.append(c)
        elif (c, top) in ((")", "("), ("}", "{")):
            stack.pop()
        elif not stack and (c in " \t\n;|()" or (c == "&" and not _redirect(text, i))):
            break
        i += 1
    return None if stack else min(i, len(text))


def _redirect(text: str, i: int) -> bool:  # the `&` of `>&2`, `2>&1`, `&>FILE`
    return text[i - 1 : i] in ("<", ">") or text[i + 1 : i + 2] == ">"


_ASSIGN = re.compile(r"^[A-Za-z_]\w*=")
_REDIRECT = re.compile(r"^\d*(>>?|<<?-?|<>|&>>?|>&|<&)")
_PREFIXES = {"sudo", "env", "exec", "nohup"}


def argv(toks: list[Tok]) -> list[tuple[int, str]]:
    """(token index, value) of the first command of a pipeline: no assignments before it, no
    `sudo`/`env` prefix, no redirections."""
    out: list[tuple[int, str]] = []
    skip = prefixed = False
    for k, tok in enumerate(toks):
        if tok.comment or tok.raw in ("|", "|&"):
            break
        if skip or tok.op:
            skip = False
            continue
        if m := _REDIRECT.match(tok.raw):
            skip = m.end() == len(tok.raw)  # `> FILE`: the target is the next word
            continue
        if not out and (_ASSIGN.match(tok.raw) or tok.value in _PREFIXES):
            prefixed = prefixed or tok.value in _PREFIXES
            continue
        if not out and prefixed and tok.value.startswith("-"):
            continue
        out.append((k, tok.value))
    return out


@dataclass
class Scope:
    """What the rules know of the script being rewritten; `env` and `cwd` follow its lines."""

    path: str
    probe: Probe  # answers from a cache: ask as often as needed
    read: Callable[[str], str | None]
    env: dict[str, str]
    zero_dir: str  # what `$(dirname "$0")` means here (the parent's for a sourced script)
    line: int = 0
    cwd: str | None = None
    skipped_venv: bool = False


@dataclass(frozen=True)
class Step:
    before: str
    after: str | None  # None: the command is dropped
    why: str
    note: str = ""  # for a dropped command: the comment left in its place


@dataclass
class Outcome:
    text: str | None
    steps: list[Step] = field(default_factory=list)


_SRC = r"(?:\$0|\$\{0\}|\$BASH_SOURCE|\$\{BASH_SOURCE(?:\[0\])?\})"
_SRC = rf'(?:{_SRC}|\$\((?:realpath|readlink\s+-f)\s+(?:"{_SRC}"|{_SRC})\s*\))'
_DIRNAME = rf'\$\(\s*dirname\s+(?:--\s+)?(?:"{_SRC}"|{_SRC})\s*\)'
_CD_PWD = rf'\$\(\s*cd\s+(?:--\s+)?(?:"{_DIRNAME}"|{_DIRNAME})[^&;)]*(?:&&|;)\s*pwd(?:\s+-P)?\s*\)'
_SELF_DIR = re.compile(
    rf'{_CD_PWD}|{_DIRNAME}|`\s*dirname\s+(?:"{_SRC}"|{_SRC})\s*`'
    r"|\$\{(?:0|BASH_SOURCE(?:\[0\])?)%/\*\}"
)
_VAR = re.compile(r"\$\{(\w+)(?::?-([^}$`]*))?\}|\$(\w+)")


def expand(raw: str, scope: Scope) -> str | None:
    """A word's value with `$VAR` and the script's-own-directory forms filled in; None when
    something is left that only the shell knows."""

    def own(m: re.Match[str]) -> str:
        return posixpath.dirname(scope.path) if "BASH_SOURCE" in m.group(0) else scope.zero_dir

    def var(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        default = m.group(2)
        return scope.env.get(name, default if default is not None else m.group(0))

    text = _VAR.sub(var, _SELF_DIR.sub(own, raw))
    if any(c in text for c in "$`*?"):
        return None
    value = Tok(text, 0, len(text)).value
    if value.startswith("~/") and "HOME" in scope.env:
        value = scope.env["HOME"] + value[1:]
    return value


def resolve(raw: str, scope: Scope) -> str | None:
    """A path word as an absolute path; relative ones against the script's directory."""
    value = expand(raw, scope)
    if not value or value.startswith("~"):
        return None
    return posixpath.normpath(posixpath.join(posixpath.dirname(scope.path) or "/", value))


def process(text: str, scope: Scope) -> Outcome:
    """What to do with one simple command (a pipeline): drop it, rewrite it, or keep it."""
    toks = lex(text) or []
    args = argv(toks)
    words = [v for _, v in args]
    out = Outcome(text)
    if not words:
        return out
    for rule in _DROPS:
        if found := rule(words, text, scope):
            out.text = None
            out.steps.append(Step(text, None, found[1], found[0]))
            return out
    if found := _uv_run(args, toks, text, scope):
        out.text = found[0]
        out.steps.append(Step(text, *found))
    _drop_plugin_flags(out, scope)
    return out


_INSTALLER = re.compile(
    r"^(curl|wget)\b.*\|\s*(sudo\s+)?(env\s+(\w+=\S*\s+)*)?(ba)?sh\b"
    r"|^(ba)?sh\s+-c\s+[\"']?\$\((curl|wget)\b",
    re.DOTALL,  # a download continued over lines
)
_INSTALLED = "packages already installed"
Found = tuple[str, str] | None  # (the comment left in its place, or the new command; why)


def _installer(words: list[str], text: str, scope: Scope) -> Found:
    """An installer download, and sourcing what it (or a skipped `uv venv`) would make."""
    if _INSTALLER.match(text):
        return "installer download skipped", "downloads an installer"
    if words[0] in ("source", ".") and len(words) == 2:
        if words[1].endswith(".local/bin/env"):
            return "installer environment not needed", "belongs to a skipped installer"
        if words[1].endswith("/bin/activate") and scope.skipped_venv:
            return "environment not needed", "belongs to a skipped `uv venv`"
    return None


def _apt(words: list[str], text: str, scope: Scope) -> Found:
    if words[0] not in ("apt", "apt-get"):
        return None
    rest = positional(words[1:], {"-o", "-t", "-c"})
    if rest == ["update"]:
        return "package lists not refreshed", "needs the network"
    names = [bare_name(n) for n in rest[1:]]
    if rest[:1] == ["install"] and names and _plain(names) and scope.probe("apt", names):
        return "already installed: " + " ".join(names), _INSTALLED
    return None


def _pip(words: list[str], text: str, scope: Scope) -> Found:
    args = pip_args(words)
    if args is None:
        return None
    specs, reqs = pip_split(args)
    names = [bare_name(s) for s in specs]
    if not _plain(specs) or not (specs or reqs):
        return None
    for req in reqs:
        path = resolve(req, scope)
        listed = requirement_names(scope.read(path) or "") if path else None
        if not listed:
            return None
        names += listed
    if scope.probe("python", [MODULES.get(n.lower(), n) for n in names]):
        return "already installed: " + " ".join(names), _INSTALLED
    return None


def _uv_project(words: list[str], text: str, scope: Scope) -> Found:
    if words[0] == "uv" and words[1:2] in (["init"], ["venv"], ["sync"]):
        scope.skipped_venv = scope.skipped_venv or words[1] == "venv"
        return "project environment not needed", "uv project set-up needs the network"
    return None


_DROPS = (_installer, _apt, _pip, _uv_project)
_PIP_VALUE_OPTIONS = {"-c", "--constraint", "-i", "--index-url", "--extra-index-url", "-f"}
_PIP_VALUE_OPTIONS |= {"--find-links", "-t", "--target", "--prefix", "--root", "--python", "-p"}
_PIP_VALUE_OPTIONS |= {"--trusted-host", "--cache-dir", "--index", "--group", "--optional"}


def pip_args(words: list[str]) -> list[str] | None:
    """The arguments of `pip install`, `python -m pip install`, `uv pip install`, `uv add`."""
    head = [posixpath.basename(w) for w in words[:4]]
    if re.fullmatch(r"pip[\d.]*", head[0]) and head[1:2] == ["install"]:
        return words[2:]
    if re.fullmatch(r"python[\d.]*", head[0]) and head[1:4] == ["-m", "pip", "install"]:
        return words[4:]
    if head[:3] == ["uv", "pip", "install"]:
        return words[3:]
    return words[2:] if head[:2] == ["uv", "add"] else None


def pip_split(args: list[str]) -> tuple[list[str], list[str]]:
    """(package specs as written, requirements files); `-e X` counts as the spec X."""
    specs, reqs, take = [], [], ""
    for arg in args:
        if take:
            (reqs if take == "-r" else specs if take == "-e" else []).append(arg)
            take = ""
        elif re.fullmatch(r"-r|--requirements?|-e|--editable", arg):
            take = "-e" if "e" in arg else "-r"
        elif m := re.fullmatch(r"(-r|--requirements?=)(.+)", arg):
            reqs.append(m.group(2))
        elif arg in _PIP_VALUE_OPTIONS:
            take = "skip"
        elif not arg.startswith("-"):
            specs.append(arg)
    return specs, reqs


def requirement_names(text: str) -> list[str] | None:
    """Package names of a requirements file; None when a line names something else (a URL, a
    path, `-e`, another file) whose presence cannot be asked."""
    names = []
    for line in text.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*", "", line).strip()
        if line.startswith(("-r", "--requirement", "-e", "--editable")):
            return None
        if not line or line.startswith("-"):
            continue
        spec = line.split(";", 1)[0].strip()
        if not _plain([spec]):
            return None
        names.append(bare_name(spec))
    return names


def bare_name(spec: str) -> str:
    """A package name without its version pin or extras."""
    return re.split(r"[=<>~!\[;@ ]", spec, maxsplit=1)[0]


def _plain(specs: list[str]) -> bool:
    """Registry package specs only: no URL, path, archive or unexpanded variable."""
    local = re.compile(r"://|^git\+|^[./~]|/|\$|\.(whl|zip|tar\.gz|tgz)$")
    return all(s and not local.search(s) for s in specs)


def positional(words: list[str], value_options: set[str]) -> list[str]:
    out, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in value_options
        else:
            out.append(word)
    return out


_UV_VALUE_OPTIONS = {"--with", "--with-editable", "--with-requirements", "--from", "--python"}
_UV_VALUE_OPTIONS |= {"-p", "--index-url", "-i", "--index", "--default-index", "--constraint"}
_UV_VALUE_OPTIONS |= {"--extra-index-url", "-c", "--directory", "--project", "--extra", "--group"}


@dataclass(frozen=True)
class UvTool:
    """What `uv run [OPTIONS] TOOL` or `uvx [OPTIONS] TOOL` (`uv tool run`) asks for."""

    start: int  # token index of `uv`/`uvx`
    tool: int  # token index of the tool
    name: str  # the tool's command (`pytest` for `pytest@8.4.1`)
    spec: str  # the tool as written
    uvx: bool
    packages: list[str]  # `--with` values, as written
    source: str | None  # `--from`
    requirements: str | None


def uv_tool(args: list[tuple[int, str]]) -> UvTool | None:
    words = [v for _, v in args]
    if words[:2] == ["uv", "run"]:
        first, uvx = 2, False
    elif words[:1] == ["uvx"] or words[:3] == ["uv", "tool", "run"]:
        first, uvx = (1 if words[0] == "uvx" else 3), True
    else:
        return None
    packages, source, requirements, take = [], None, None, ""
    for k, word in args[first:]:
        option, _, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if take or (option in _UV_VALUE_OPTIONS and value):
            option, value = (take, word) if take else (option, value)
            packages += [p for p in value.split(",") if p] if option == "--with" else []
            source = value if option == "--from" else source
            requirements = value if option == "--with-requirements" else requirements
            take = ""
        elif word in _UV_VALUE_OPTIONS:
            take = word
        elif not word.startswith("-"):
            name = re.split(r"[@=<>~!]", word, maxsplit=1)[0] if uvx else word
            return UvTool(args[0][0], k, name, word, uvx, packages, source, requirements)
    return None


_TOOL_PACKAGES = {"python": "", "python3": "", "py.test": "pytest"}  # tool -> its package


def tool_packages(tool: UvTool) -> list[str]:
    """The packages `uvx` installs for a tool: `--with`, and `--from` or the tool itself."""
    source = tool.source or _TOOL_PACKAGES.get(tool.name, tool.spec)
    names = {bare_name(p).lower() for p in tool.packages}
    return tool.packages + ([source] if source and bare_name(source).lower() not in names else [])


def _uv_run(args: list[tuple[int, str]], toks: list[Tok], text: str, scope: Scope) -> Found:
    """`uv run X` / `uvx X`: X run from the image, as (the new command, why)."""
    tool = uv_tool(args) if args else None
    if tool is None:
        return None
    head, tail = text[: toks[tool.start].start], text[toks[tool.tool].end :]
    if tool.name in ("pytest", "py.test"):
        command = "python3 -m pytest" + tail
    elif tool.name in ("python", "python3"):
        command = "python3" + tail
    elif tool.name.endswith(".py") and not tool.uvx:  # `uv run script.py` runs it with Python
        command = "python3 " + toks[tool.tool].raw + tail
    else:
        command = (tool.name if tool.uvx else toks[tool.tool].raw) + tail
    if not tool.uvx:
        return head + command, "runs with the image's Python instead of uv's"
    names = [bare_name(p) for p in tool_packages(tool)]
    found = scope.probe("python", [MODULES.get(n.lower(), n) for n in names]) if names else True
    state = "found" if found else "not all found"
    why = f"uvx needs the network: runs the image's {tool.name} ({state}: {' '.join(names)})"
    return head + command, why


def _pytest_start(args: list[tuple[int, str]]) -> int | None:
    """Where a pytest command line's own arguments begin, in `args`; None if not pytest."""
    words = [posixpath.basename(v) for _, v in args]
    if words and words[0] in ("pytest", "py.test"):
        return 1
    if words and re.fullmatch(r"python[\d.]*", words[0]) and "-m" in words:
        at = words.index("-m")
        return at + 2 if words[at + 1 : at + 2] == ["pytest"] else None
    return None


def _drop_plugin_flags(out: Outcome, scope: Scope) -> None:
    """Drops, one at a time, the flags of pytest plugins the image lacks."""
    while out.text is not None and (found := _missing_plugin_flag(out.text, scope)):
        (start, end), plugin, dropped = found
        new = out.text[:start] + out.text[end:]
        why = f"{plugin.pypi} is not installed: {dropped} dropped, {plugin.effect}"
        out.steps.append(Step(out.text, new, why))
        out.text = new


def _missing_plugin_flag(text: str, scope: Scope) -> tuple[tuple[int, int], Plugin, str] | None:
    """([start, end) to cut, the plugin, the flag as written) of the first flag to drop."""
    toks = lex(text) or []
    args = argv(toks)
    first = _pytest_start(args)
    for n, (k, word) in enumerate(args[first:] if first else [], first or 0):
        if word == "--":
            break
        flag, eq, _ = word.partition("=")
        plugin = PLUGINS.get(flag)
        if plugin is None or scope.probe("python", [plugin.module]):
            continue
        takes = plugin.arg == "required" or (
            plugin.arg == "optional" and not all(w.startswith("-") for _, w in args[n + 1 : n + 2])
        )
        last = args[n + 1][0] if takes and not eq and n + 1 < len(args) else k
        return (toks[k - 1].end, toks[last].end), plugin, text[toks[k].start : toks[last].end]
    return None
