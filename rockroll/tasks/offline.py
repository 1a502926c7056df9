"""Make test scripts that fetch their tooling at verification time run with the network off.

Many published test scripts start by downloading what they need (`curl …/uv/install.sh | sh`,
`uv add pytest`, `pip install pytest`, `apt-get update`, `uvx --with pytest pytest`). Offline
those steps fail and the task scores 0 whatever the agent did. The rules (`offline_rules`) each
recognise one such step in one simple command (lines continued with `\\` are one line; `&&`,
`||`, `;` separate commands, and the rest of the line is kept): an install is dropped (`:`)
only when what it would install is already in the image, `uv run X`/`uvx X` become plain `X`,
and pytest flags of plugins the image lacks (`--ctrf FILE`) are dropped. A line of nothing but
dropped steps becomes `: # offline: ...`. Here-document bodies are left as written, and the
rewritten script keeps the original's line count, so line numbers in errors still match.

`make_offline_tree` also rewrites the scripts a script runs or sources (`source X`, `bash X`,
`./X.sh`) when it can resolve their path (heuristically, see `offline_rules`), pointing the
parent at the child's `.offline` copy, and lists what the scripts install (`Install`, for a
step that pre-installs it with the network) and the fetches no rule removes (`NetworkStep`).
Every change is reported, so a result says that verification ran rewritten.
"""

from __future__ import annotations

import itertools
import posixpath
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from rockroll.tasks.offline_rules import (
    Outcome,
    Probe,
    Scope,
    Step,
    Tok,
    argv,
    expand,
    lex,
    pip_args,
    pip_split,
    positional,
    process,
    resolve,
    tool_packages,
    uv_tool,
)

__all__ = ["Install", "NetworkStep", "OfflinePlan", "Probe", "Rewrite"]
__all__ += ["make_offline", "make_offline_tree"]

MAX_DEPTH = 5  # how deep `make_offline_tree` follows scripts that run or source scripts
_NO_ENV: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Rewrite:
    """One change: `line` is the first line of the command, in the script at `path`."""

    line: int
    original: str
    replacement: str
    why: str
    path: str = ""
    child: bool = False  # `path` is a script that the entry script runs or sources

    def __str__(self) -> str:
        where = f"{self.path} " if self.child else ""
        return f"{where}line {self.line}: {self.original!r} -> {self.replacement!r} ({self.why})"


InstallKind = Literal["apt", "python", "npm"]


@dataclass(frozen=True)
class Install:
    """A package install a script asks for, whether or not the image already has it.

    `packages` are as written (pins kept). For `kind` "npm" they are the specs given (none for
    `npm ci` or a bare `npm install`) and `directory` is where it runs: `--prefix DIR`, else the
    last `cd DIR` seen earlier in the script (as written when relative), else None.
    `requirements` is the file of `pip install -r FILE` (`uvx --with-requirements FILE`),
    resolved where possible. `command` is the command as written, at `line` of `path`."""

    kind: InstallKind
    packages: list[str]
    requirements: str | None
    command: str
    path: str
    line: int
    directory: str | None = None


@dataclass(frozen=True)
class NetworkStep:
    """A command left in place that fetches from the network; `url` is its first URL, if any.
    Package installs the image lacks are in `OfflinePlan.installs` instead (npm's in both)."""

    command: str
    url: str | None
    path: str
    line: int


@dataclass(frozen=True)
class OfflinePlan:
    """`scripts`: original path -> rewritten text, for the scripts that changed; the caller
    writes each to `path + ".offline"` and runs `entry` (the entry's `.offline` copy when
    anything changed)."""

    scripts: dict[str, str]
    rewrites: list[Rewrite]
    entry: str
    installs: list[Install]
    network: list[NetworkStep]


def make_offline(script: str, probe: Probe) -> tuple[str, list[Rewrite]]:
    """The script with bootstrap steps removed or replaced, and what was changed."""
    walk = _Walk(lambda _: None, _cached(probe), set())
    return walk.script("", script, "", dict(_NO_ENV), 0), walk.rewrites


def make_offline_tree(
    entry: str, read: Callable[[str], str | None], probe: Probe, env: Mapping[str, str] = _NO_ENV
) -> OfflinePlan:
    """The entry script and the scripts it runs or sources (read with `read`), rewritten.

    A script that changes gets an `.offline` copy, and so does every script that runs it, with
    its reference pointing at the copy. Scripts that reach each other are rewritten again until
    which of them change is settled."""
    texts: dict[str, str | None] = {}

    def cached(path: str) -> str | None:  # the walks read again: one file, one read
        if path not in texts:
            texts[path] = read(path)
        return texts[path]

    text = cached(entry)
    if text is None:
        return OfflinePlan({}, [], entry, [], [])
    ask = _cached(probe)  # and ask again: one question, one call
    assumed: set[str] = set()
    for _ in range(100):  # more assumed, more changed: this settles, within len(scripts) + 1
        walk = _Walk(cached, ask, assumed)
        walk.script(entry, text, posixpath.dirname(entry), dict(env), 0)
        if not walk.revisited or set(walk.scripts) == assumed:
            break
        assumed = set(walk.scripts)
    changed = entry in walk.scripts
    return OfflinePlan(
        walk.scripts,
        walk.rewrites,
        entry + ".offline" if changed else entry,
        walk.installs,
        walk.network,
    )


class _Walk:
    """One pass over an entry script and the scripts it reaches. `assumed` are the scripts
    taken to change when reached again before their own rewriting is done (a cycle)."""

    def __init__(self, read: Callable[[str], str | None], probe: Probe, assumed: set[str]) -> None:
        self.read, self.probe, self.assumed = read, probe, assumed
        self.entry: str | None = None
        self.changed: dict[str, bool] = {}  # path -> changes (False while being rewritten)
        self.scripts: dict[str, str] = {}
        self.rewrites: list[Rewrite] = []
        self.installs: list[Install] = []
        self.network: list[NetworkStep] = []
        self.revisited = False  # a script was reached again: a second pass may differ

    def script(self, path: str, text: str, zero_dir: str, env: dict[str, str], depth: int) -> str:
        """The script rewritten; noted in `scripts` when it changed."""
        self.entry = path if self.entry is None else self.entry
        self.changed[path] = False
        scope = Scope(path, self.probe, self.read, env, zero_dir)
        lines = text.splitlines()
        out = list(lines)
        for start, end, toks in _logical(lines):
            scope.line = start + 1
            new = self._line("\n".join(lines[start:end]), toks, scope, depth)
            if new is not None:
                out[start:end] = new
        rewritten = "\n".join(out) + "\n"
        if out != lines:
            self.changed[path] = True
            self.scripts[path] = rewritten
        return rewritten

    def _line(self, text: str, toks: list[Tok], scope: Scope, depth: int) -> list[str] | None:
        """The new lines of one logical line, None when it stays."""
        ranges = _commands(toks)
        outs = []
        for a, b in ranges:
            command = text[toks[a].start : toks[b - 1].end]
            out, own = process(command, scope), lex(command) or []
            if not out.steps:
                self._follow(command, own, out, scope, depth)
            self._note(command, own, out.text is None, scope)
            _track(own, scope)
            outs.append(out)
        new, steps = _assemble(text, toks, ranges, outs)
        lines = new.split("\n")
        if not steps or len(lines) > text.count("\n") + 1:
            return None
        child = scope.path != self.entry
        for step in steps:
            after = _flat(step.after or ":")
            self.rewrites.append(
                Rewrite(scope.line, _flat(step.before), after, step.why, scope.path, child)
            )
        return lines + [""] * (text.count("\n") + 1 - len(lines))

    def _follow(
        self, command: str, toks: list[Tok], out: Outcome, scope: Scope, depth: int
    ) -> None:
        """Rewrites the script a command runs or sources, and points the command at its copy."""
        ref = _script_ref(argv(toks), toks, scope) if depth < MAX_DEPTH else None
        if ref is None:
            return
        path, start, end, sourced, direct = ref
        self.revisited |= path in self.changed  # what it becomes may rest on `assumed`
        child = self.read(path) if path not in self.changed else None
        if child is not None:
            zero_dir = scope.zero_dir if sourced else posixpath.dirname(path)
            self.script(path, child, zero_dir, dict(scope.env), depth + 1)
        if not (self.changed.get(path) or path in self.assumed):
            return
        shell = _interpreter(self.read(path) or "") if direct else ""
        raw = command[start:end]
        quoted = len(raw) > 1 and raw[-1] in "'\""
        new = raw[:-1] + ".offline" + raw[-1] if quoted else raw + ".offline"
        new = f"{shell} {new}" if direct else new  # the copy is not executable
        out.text = command[:start] + new + command[end:]
        why = f"{posixpath.basename(path)} is rewritten too: runs its offline copy"
        out.steps.append(Step(command, out.text, why + (f" with {shell}" if direct else "")))

    def _note(self, command: str, toks: list[Tok], dropped: bool, scope: Scope) -> None:
        """Notes the installs and (unless dropped) the network fetches of a command."""
        args = argv(toks)
        if not args:
            return
        flat = _flat(command)
        if found := _install(args, scope):
            kind, packages, requirements, directory = found
            where = (flat, scope.path, scope.line, directory)
            self.installs.append(Install(kind, packages, requirements, *where))
        url = next((m.group(0) for m in _URL.finditer(command)), None)
        if not dropped and _fetches([v for _, v in args], url):
            self.network.append(NetworkStep(flat, url, scope.path, scope.line))


_ASSIGNMENT = re.compile(r"^([A-Za-z_]\w*)=")


def _track(toks: list[Tok], scope: Scope) -> None:
    """Follows the script's variables (`X=...`, `export X=...`) and directory (`cd DIR`)."""
    args = argv(toks)
    words = [v for _, v in args]
    if words[:1] == ["cd"]:
        where = expand(toks[args[1][0]].raw, scope) if len(args) == 2 else None
        if where and (where.startswith("/") or scope.cwd):
            where = posixpath.normpath(posixpath.join(scope.cwd or "/", where))
        scope.cwd = where
    if words and words[0] not in ("export", "declare", "local", "readonly"):
        return
    for tok in toks[args[0][0] + 1 :] if args else toks:
        if not tok.op and (m := _ASSIGNMENT.match(tok.raw)):
            value = expand(tok.raw[m.end() :], scope)
            if value is None:
                scope.env.pop(m.group(1), None)
            else:
                scope.env[m.group(1)] = value


def _cached(probe: Probe) -> Probe:
    cache: dict[tuple[str, tuple[str, ...]], bool] = {}

    def ask(kind: str, names: list[str]) -> bool:
        key = (kind, tuple(names))
        if key not in cache:
            cache[key] = probe(kind, list(names))
        return cache[key]

    return ask


def _flat(text: str) -> str:
    return re.sub(r"\s*\\\n\s*", " ", text).strip()


def _logical(lines: list[str]) -> Iterator[tuple[int, int, list[Tok]]]:
    """[start, end) line ranges of the commands of a script, with their tokens: `\\` joins
    lines, so does a quote left open; here-document bodies and what cannot be read are left
    out."""
    i = 0
    while i < len(lines):
        end, text = i + 1, lines[i]
        toks = lex(text)
        while end < len(lines) and end - i < 200 and (toks is None or _continued(text, toks)):
            text += "\n" + lines[end]
            end += 1
            toks = lex(text)
        if toks is None:
            i += 1
            continue
        yield i, end, toks
        i = end
        for word in _heredocs(toks):
            while i < len(lines) and lines[i].strip() != word:
                i += 1
            i += 1


def _continued(text: str, toks: list[Tok]) -> bool:
    trailing = len(text) - len(text.rstrip("\\"))
    return trailing % 2 == 1 and not (toks and toks[-1].comment)


def _heredocs(toks: list[Tok]) -> list[str]:
    """The delimiters of the here-documents a line opens, in order."""
    ends = []
    for k, tok in enumerate(toks):
        if not tok.op and (m := re.search(r"(?<!<)<<-?(?!<)(.*)$", tok.raw)):
            word = m.group(1) or (toks[k + 1].raw if k + 1 < len(toks) else "")
            ends.append(word.strip("'\""))
    return ends


_SEPARATORS = {"&&", "||", ";;", ";", "&", "(", ")", "\n"}
_KEYWORDS = {"if", "then", "elif", "else", "fi", "do", "done", "while", "until", "!", "{", "}"}
_KEYWORDS |= {"time", "esac"}


def _commands(toks: list[Tok]) -> list[tuple[int, int]]:
    """[first, end) token ranges of the simple commands of a line, leading keywords left out."""
    ranges, first = [], 0
    for k, tok in enumerate([*toks, Tok(";", 0, 0, op=True)]):
        if tok.comment or (tok.op and tok.raw in _SEPARATORS):
            while first < k and toks[first].raw in _KEYWORDS:
                first += 1
            if first < k:
                ranges.append((first, k))
            first = k + 1
    return ranges


def _assemble(
    text: str, toks: list[Tok], ranges: list[tuple[int, int]], outs: list[Outcome]
) -> tuple[str, list[Step]]:
    """The line with its commands replaced, and the steps to report. A line of nothing but
    dropped commands becomes one `: # offline: ...` line."""
    dropped = [o for o in outs if o.text is None]
    notes = "; ".join(dict.fromkeys(s.note for o in dropped for s in o.steps))
    covered = {k for a, b in ranges for k in range(a, b)}
    alone = all(k in covered or t.op or t.comment for k, t in enumerate(toks))
    if dropped and len(dropped) == len(outs) and alone:
        indent = text[: len(text) - len(text.lstrip())]
        whys = "; ".join(dict.fromkeys(s.why for o in outs for s in o.steps))
        new = indent + ": # offline: " + notes
        return new, [Step(text.strip(), new.strip(), whys)]
    new = text
    for (a, b), out in reversed(list(zip(ranges, outs, strict=True))):
        if out.steps:
            replacement = ":" if out.text is None else out.text
            new = new[: toks[a].start] + replacement + new[toks[b - 1].end :]
    if dropped:
        new += " # offline: " + notes
    return new, [s for o in outs for s in o.steps]


def _script_ref(
    args: list[tuple[int, str]], toks: list[Tok], scope: Scope
) -> tuple[str, int, int, bool, bool] | None:
    """(path, start, end, sourced, run directly) of the script this command sources (`source
    X`, `. X`) or runs (`bash X`, `sh X`, `./X.sh`), when its path resolves."""
    words = [v for _, v in args]
    at, sourced = None, bool(words) and words[0] in ("source", ".")
    if sourced and len(args) > 1:
        at = args[1][0]
    elif words and posixpath.basename(words[0]) in ("bash", "sh"):
        rest = iter(args[1:])
        for k, word in rest:
            if word == "-c":
                return None
            if word in ("-o", "+o"):
                next(rest, None)
            elif not word.startswith(("-", "+")):
                at = k
                break
    elif words and words[0].endswith(".sh") and "/" in words[0]:
        at = args[0][0]
    path = resolve(toks[at].raw, scope) if at is not None else None
    if path is None or at is None:
        return None
    return path, toks[at].start, toks[at].end, sourced, at == args[0][0]


def _interpreter(script: str) -> str:
    """The shell a script's `#!` line names (`bash` when it names none)."""
    first = script.split("\n", 1)[0]
    words = first[2:].split() if first.startswith("#!") else []
    if words and posixpath.basename(words[0]) == "env":
        words = words[1:]
    name = posixpath.basename(words[0]) if words else "bash"
    return name if name in ("sh", "bash", "dash", "ksh", "zsh") else "bash"


_APT_OPTIONS = {"-o", "-t", "-c"}
_NPM_OPTIONS = {"--prefix", "--registry", "-w", "--workspace"}


def _install(
    args: list[tuple[int, str]], scope: Scope
) -> tuple[InstallKind, list[str], str | None, str | None] | None:
    """(kind, packages, requirements file, directory) of an install command."""
    words = [v for _, v in args]
    rest = positional(words[1:], _APT_OPTIONS)
    if words[0] in ("apt", "apt-get") and rest[:1] == ["install"] and rest[1:]:
        return "apt", rest[1:], None, None
    specs, files = pip_split(pip) if (pip := pip_args(words)) is not None else ([], [])
    tool = uv_tool(args)
    if tool is not None:
        specs, files = tool_packages(tool) if tool.uvx else tool.packages, [tool.requirements]
    if specs or any(files):
        req = next((f for f in files if f), None)
        return "python", specs, (resolve(req, scope) or req) if req else None, None
    rest = positional(words[1:], _NPM_OPTIONS)
    if words[0] != "npm" or rest[:1] not in (["install"], ["i"], ["ci"], ["add"]):
        return None
    given = [w.partition("=")[2] for w in words if w.startswith("--prefix=")]
    given += [b for a, b in itertools.pairwise(words) if a == "--prefix"]
    directory = expand(given[0], scope) if given else scope.cwd
    return "npm", rest[1:], None, None if {"-g", "--global"} & set(words) else directory


_URL = re.compile(r"(?:git\+)?(?:https?|git|ssh)://[^\s'\"<>|;&)]+|git@[\w.-]+:[^\s'\"]+")
_LOCAL = re.compile(r"^\w+://(?:[^@/]*@)?(?:localhost|127\.|0\.0\.0\.0|\[::1\])")


def _fetches(words: list[str], url: str | None) -> bool:
    """Whether a command left in place fetches from the network (local URLs do not count)."""
    name, rest = posixpath.basename(words[0]), positional(words[1:], _NPM_OPTIONS)
    sub = rest[:1]
    if name in ("curl", "wget"):
        return url is not None and not _LOCAL.match(url)
    if name == "git":
        remote = url is not None or not rest[1:2] or not rest[1].startswith(("/", "."))
        return (sub == ["clone"] and remote) or sub in (["fetch"], ["pull"])
    if name == "go":
        return rest[:2] == ["mod", "download"] or sub == ["get"]
    if name == "cargo":
        return sub in (["fetch"], ["install"])
    if name in ("mvn", "mvnw"):
        offline = {"-o", "--offline"} & set(words)
        return not offline and any(w.startswith("dependency:") for w in rest)
    if name in ("gradle", "gradlew"):
        return "dependencies" in rest or "--refresh-dependencies" in words
    if name in ("npm", "yarn", "pnpm"):
        return sub in (["install"], ["i"], ["ci"], ["add"]) or (name != "npm" and not sub)
    pip = pip_args(words)
    return pip is not None and any("://" in s or s.startswith("git+") for s in pip_split(pip)[0])
