"""Procedural multi-turn terminal tasks: look first, then act on what was seen.

Single-step file tasks teach a trainer nothing about multi-turn credit, so every family here
hides what to do in the sandbox (a note, a command's output, an error message): the agent must
look, then act on what it saw. The instruction names the command to look with (a 135M model
rarely finds it otherwise) but never its result. A task is regenerated from (family, seed,
index) when scored, so it carries only those numbers; the expected state stays on the host.
`task.metadata.expert_commands` holds the expert's shell commands, one per turn, looking first,
for SFT warm-up and expert-prefix resampling (a trajectory built from them adds the action
format's own submit at the end).
"""

from __future__ import annotations

import random
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from rockroll.errors import TaskError
from rockroll.tasks.schema import Environment, Metadata, Solution, Task, Verifier

if TYPE_CHECKING:
    from rockroll.sandbox.sdk import Sandbox

WORKDIR = "/app"
CHECK_FUNCTION = "rockroll.tasks.terminal:check"
WORDS = (
    "apple", "river", "falcon", "pencil", "tiger", "candle", "garden", "rocket", "silver",
    "orange", "planet", "window", "forest", "button", "coffee", "dragon", "island", "lemon",
    "marble", "needle", "pepper", "rabbit", "saddle", "tomato", "violet", "walnut", "yellow",
    "anchor", "bridge", "castle", "desert", "engine", "feather", "guitar", "hammer", "jacket",
)  # fmt: skip
RUN_SCRIPT = "run.sh"
SLOW_MEDIAN = 0.5  # seconds run.sh of the median fix-slow instance takes
SLOW_CAP = 12.0


# -- what the verifier checks -----------------------------------------------------------------
@dataclass(frozen=True)
class IsDir:
    path: str

    def problem(self, sb: Sandbox) -> str | None:
        ok = sb.exec(["test", "-d", _abs(self.path)]).exit_code == 0
        return None if ok else f"{self.path} is not a directory"


@dataclass(frozen=True)
class HasText:
    """The file holds `text`, give or take surrounding whitespace."""

    path: str
    text: str

    def problem(self, sb: Sandbox) -> str | None:
        try:
            found = sb.read_bytes(_abs(self.path)).decode(errors="replace")
        except (FileNotFoundError, IsADirectoryError):
            return f"{self.path} does not exist or is not a file"
        if found.strip() != self.text.strip():
            return f"{self.path} holds {_short(found)!r}, not the expected text"
        return None


@dataclass(frozen=True)
class Gone:
    path: str

    def problem(self, sb: Sandbox) -> str | None:
        return f"{self.path} still exists" if sb.exists(_abs(self.path)) else None


@dataclass(frozen=True)
class Prints:
    """`command` exits 0 and prints exactly `text` (the fixed script works). Check the script is
    unchanged first: this runs what the agent left behind."""

    command: str
    text: str

    def problem(self, sb: Sandbox) -> str | None:
        res = sb.exec(["bash", "-c", self.command], cwd=WORKDIR, timeout=30)
        if res.exit_code != 0 or res.output.strip() != self.text:
            return f"`{self.command}` exited {res.exit_code} with {_short(res.output)!r}"
        return None


Check = IsDir | HasText | Gone | Prints


@dataclass(frozen=True)
class Instance:
    """One generated task. Paths are relative to WORKDIR; `commands` is the expert, one per
    turn; `secret` is what the agent must find out by looking (never in the instruction)."""

    instruction: str
    files: dict[str, str]
    commands: list[str]
    checks: list[Check]
    secret: str


@dataclass(frozen=True)
class Family:
    """A generator of instances; `split` suggests which families to hold out per kind."""

    name: str
    kind: str
    split: Literal["train", "heldout"]
    make: Callable[[random.Random], Instance]

    def instance(self, seed: int, index: int) -> Instance:
        return self.make(random.Random(f"term/{self.name}/{seed}/{index}"))


def _look_then(command: str, then: str) -> str:
    """The instruction: the look command on a line of its own (tiny models copy it from there)."""
    return f"Run this command:\n{command}\n{then}"


# -- kind "read-then-act": note.txt says what to do; the task text only says to read it ------
NOTE_INSTRUCTION = _look_then("cat note.txt", "Then do what note.txt says.")


def _note(
    name: str, note: str, action: str, checks: list[Check], files: dict[str, str] | None = None
) -> Instance:
    files = {"note.txt": f"{note}\n", **(files or {})}
    return Instance(NOTE_INSTRUCTION, files, ["cat note.txt", action], checks, name)


def _note_mkdir(rng: random.Random) -> Instance:
    name = rng.choice(WORDS)
    return _note(name, f"Create a directory: mkdir {name}", f"mkdir {name}", [IsDir(name)])


def _note_touch(rng: random.Random) -> Instance:
    name = f"{rng.choice(WORDS)}.txt"
    note = f"Create an empty file: touch {name}"
    return _note(name, note, f"touch {name}", [HasText(name, "")])


def _note_rename(rng: random.Random) -> Instance:
    word, body = rng.sample(WORDS, 2)
    name = f"{word}.txt"
    checks: list[Check] = [HasText(name, body), Gone("data.txt")]
    action = f"mv data.txt {name}"
    note = f"Rename data.txt to {name}: {action}"
    return _note(name, note, action, checks, {"data.txt": f"{body}\n"})


# -- kind "search-then-act": which of a few files holds a given word ----------------------------
def _haystack(rng: random.Random) -> tuple[dict[str, str], str, str]:
    """Files docs/<name>.txt, one word each: (files, the file holding `key`, key)."""
    names = rng.sample(WORDS, 3)
    words = rng.sample([w for w in WORDS if w not in names], 3)
    files = {f"docs/{n}.txt": f"{w}\n" for n, w in zip(names, words, strict=True)}
    pick = rng.randrange(3)
    return files, f"docs/{names[pick]}.txt", words[pick]


def _find_copy(rng: random.Random) -> Instance:
    files, target, key = _haystack(rng)
    return Instance(
        _look_then(f"grep -l {key} docs/*", "Then copy the file it prints to found.txt."),
        files,
        [f"grep -l {key} docs/*", f"cp {target} found.txt"],
        [HasText("found.txt", files[target])],
        target,
    )


def _find_delete(rng: random.Random) -> Instance:
    files, target, key = _haystack(rng)
    keep = [HasText(p, text) for p, text in files.items() if p != target]
    return Instance(
        _look_then(f"grep -l {key} docs/*", "Then delete the file it prints."),
        files,
        [f"grep -l {key} docs/*", f"rm {target}"],
        [Gone(target), *keep],
        target,
    )


def _find_move(rng: random.Random) -> Instance:
    files, target, key = _haystack(rng)
    keep = [HasText(p, text) for p, text in files.items() if p != target]
    return Instance(
        _look_then(f"grep -l {key} docs/*", "Then rename the file it prints to found.txt."),
        files,
        [f"grep -l {key} docs/*", f"mv {target} found.txt"],
        [HasText("found.txt", files[target]), Gone(target), *keep],
        target,
    )


# -- kind "count-then-write": measure something, write the number -------------------------------
def _lines(rng: random.Random, n: int) -> str:
    return "".join(f"{rng.choice(WORDS)}\n" for _ in range(n))


def _count_lines(rng: random.Random) -> Instance:
    n = rng.randint(4, 19)
    return Instance(
        _look_then("wc -l data.txt", "Then write only the number it prints into count.txt."),
        {"data.txt": _lines(rng, n)},
        ["wc -l data.txt", f"echo {n} > count.txt"],
        [HasText("count.txt", str(n))],
        str(n),
    )


def _count_files(rng: random.Random) -> Instance:
    names = rng.sample(WORDS, rng.randint(4, 12))
    return Instance(
        _look_then("ls box | wc -l", "Then write only the number it prints into count.txt."),
        {f"box/{name}.txt": f"{name}\n" for name in names},
        ["ls box | wc -l", f"echo {len(names)} > count.txt"],
        [HasText("count.txt", str(len(names)))],
        str(len(names)),
    )


def _count_words(rng: random.Random) -> Instance:
    n = rng.randint(4, 19)
    text = " ".join(rng.choice(WORDS) for _ in range(n))
    return Instance(
        _look_then("wc -w data.txt", "Then write only the number it prints into count.txt."),
        {"data.txt": f"{text}\n"},
        ["wc -w data.txt", f"echo {n} > count.txt"],
        [HasText("count.txt", str(n))],
        str(n),
    )


# -- kind "fix-after-error": a script fails, and its error names the fix ---------------------
FIX_INSTRUCTION = _look_then(f"sh {RUN_SCRIPT}", "It prints an error. Fix that error.")


def _fixing(test: str, error: str, fix: str, extra: list[Check], seconds: float = 0.0) -> Instance:
    """run.sh prints `error` and the command that fixes it unless `test` holds, else OK; it
    first works for `seconds`."""
    message = f"error: {error}. Fix it with: {fix}"
    work = f"sleep {seconds}\n" if seconds else ""
    script = (
        f"#!/bin/bash\n{work}if ! {test}; then\n  echo {shlex.quote(message)}\n  exit 1\nfi\n"
        "echo OK\n"
    )
    return Instance(
        FIX_INSTRUCTION,
        {RUN_SCRIPT: script},
        [f"sh {RUN_SCRIPT}", fix, f"sh {RUN_SCRIPT}"],
        [*extra, HasText(RUN_SCRIPT, script), Prints(f"sh {RUN_SCRIPT}", "OK")],
        fix,
    )


def _fix_dir(rng: random.Random) -> Instance:
    name = rng.choice(WORDS)
    return _fixing(f"[ -d {name} ]", f"the directory {name} is missing", f"mkdir {name}", [])


def _fix_file(rng: random.Random) -> Instance:
    name = f"{rng.choice(WORDS)}.txt"
    return _fixing(f"[ -f {name} ]", f"the file {name} is missing", f"touch {name}", [])


def _fix_config(rng: random.Random) -> Instance:
    word = rng.choice(WORDS)
    test = f"grep -qw {word} config.txt 2>/dev/null"
    error = f"config.txt must contain the word {word}"
    return _fixing(test, error, f"echo {word} > config.txt", [])


def _fix_slow(rng: random.Random) -> Instance:
    """fix-dir behind a slow run.sh, whose time is long-tailed as test suites' are (Pareto with
    index 1: half the instances take under SLOW_MEDIAN seconds, one in ten over 5x that, one in
    twenty over 10x, capped at SLOW_CAP). The verifier runs it too, so an episode takes that
    time whatever the agent does: the family for measuring rollouts with long-tailed lengths."""
    seconds = min(round(SLOW_MEDIAN / 2 * rng.paretovariate(1.0), 2), SLOW_CAP)
    name = rng.choice(WORDS)
    error = f"the directory {name} is missing"
    return _fixing(f"[ -d {name} ]", error, f"mkdir {name}", [], seconds)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("note-mkdir", "read-then-act", "train", _note_mkdir),
        Family("note-rename", "read-then-act", "train", _note_rename),
        Family("note-touch", "read-then-act", "heldout", _note_touch),
        Family("fix-dir", "fix-after-error", "train", _fix_dir),
        Family("fix-file", "fix-after-error", "train", _fix_file),
        Family("fix-config", "fix-after-error", "heldout", _fix_config),
        Family("fix-slow", "fix-after-error", "train", _fix_slow),
        Family("find-copy", "search-then-act", "train", _find_copy),
        Family("find-delete", "search-then-act", "train", _find_delete),
        Family("find-move", "search-then-act", "heldout", _find_move),
        Family("count-lines", "count-then-write", "train", _count_lines),
        Family("count-files", "count-then-write", "train", _count_files),
        Family("count-words", "count-then-write", "heldout", _count_words),
    )
}


def select(spec: str) -> list[str]:
    """Family names from a comma list of families, kinds, `train`, `heldout` or `all`."""
    picked: list[str] = []
    for word in filter(None, (w.strip() for w in spec.split(","))):
        matches = [f.name for f in FAMILIES.values() if word in (f.name, f.kind, f.split, "all")]
        if not matches:
            kinds = sorted({f.kind for f in FAMILIES.values()})
            raise TaskError(
                f"term/{word}",
                "invalid",
                f"unknown family {word!r}; use one of {', '.join(FAMILIES)}, a kind "
                f"({', '.join(kinds)}), train, heldout or all",
            )
        picked += [m for m in matches if m not in picked]
    if not picked:
        raise TaskError("term", "invalid", "no family named; e.g. term:note-mkdir?seed=0&size=10")
    return picked


def load_terminal(family: str, *, seed: int, size: int) -> list[Task]:
    """`size` tasks of `family`; the same arguments give the same tasks."""
    fam = _family(family, seed)
    return [_task(fam, seed, i) for i in range(size)]


def expert_commands(task: Task) -> list[str]:
    """The expert's shell commands for a terminal task, one per turn, inspection first."""
    commands = getattr(task.metadata, "expert_commands", None)
    if not isinstance(commands, list):
        raise TaskError(task.id, "invalid", "the task has no expert commands")
    return list(commands)


def check(sandbox: Sandbox, args: dict[str, Any]) -> tuple[float, str]:
    """The python verifier: 1.0 when every check of the regenerated instance holds."""
    fam = _family(args["family"], args["seed"])
    checks = fam.instance(args["seed"], args["index"]).checks
    for c in checks:
        if (problem := c.problem(sandbox)) is not None:
            return 0.0, problem
    return 1.0, f"all {len(checks)} checks passed"


def _family(name: str, seed: int) -> Family:
    if name not in FAMILIES:
        known = ", ".join(FAMILIES)
        raise TaskError(
            f"term/{name}/{seed}", "invalid", f"unknown family {name!r}; use one of {known}"
        )
    return FAMILIES[name]


def _task(fam: Family, seed: int, index: int) -> Task:
    inst = fam.instance(seed, index)
    return Task(
        id=f"term/{fam.name}/{seed}/{index}",
        source="terminal-procedural",
        instruction=inst.instruction,
        environment=Environment(image="base", workdir=WORKDIR),
        files={_abs(p): text for p, text in inst.files.items()},
        agent_timeout=120.0,
        verifier=Verifier(
            kind="python",
            function=CHECK_FUNCTION,
            args={"family": fam.name, "seed": seed, "index": index},
        ),
        solution=Solution(script="\n".join([f"cd {WORKDIR}", *inst.commands]) + "\n"),
        metadata=Metadata(
            category=fam.name,
            tags=["terminal", fam.kind, fam.split],
            kind=fam.kind,
            split=fam.split,
            expert_commands=list(inst.commands),
        ),
    )


def _abs(path: str) -> str:
    return f"{WORKDIR}/{path}"


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
