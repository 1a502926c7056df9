"""`rockroll bench`: run an agent over a task set (resuming an interrupted run), and report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rockroll.cli.common import (
    Verbs,
    add,
    err,
    network_setting,
    out,
    policy_options,
    positive,
    verbs,
)
from rockroll.errors import TaskError, UsageError

if TYPE_CHECKING:
    from rockroll.bench.agents import Agent
    from rockroll.tasks.schema import Task


def register(nouns: Verbs) -> None:
    parser = nouns.add_parser("bench", help="run an agent over a task set, and report")
    commands = verbs(parser)
    run = add(
        commands,
        "run",
        run_bench,
        "run an agent over tasks; resumes an interrupted run",
        example="rockroll bench run ../shared/tasks/evoeval --agent oracle -j 2",
    )
    run.add_argument("suite", help="a task folder, a folder of tasks, humaneval, rg:NAME?seed=S")
    run.add_argument("--agent", default="oracle", help="oracle, noop, harness (default oracle)")
    run.add_argument("--model", help="model for --agent harness, e.g. scripted:PATH")
    run.add_argument("--max-turns", type=positive, default=50, help="harness: turns per task")
    run.add_argument("--max-tokens", type=positive, default=1024, help="harness: tokens per turn")
    run.add_argument("-j", "--jobs", type=positive, default=2, help="tasks at once (default 2)")
    run.add_argument("--out", help="results folder (default runs/<suite>-<agent>)")
    run.add_argument("--fresh", action="store_true", help="discard earlier results in --out")
    run.add_argument(
        "--safety",
        choices=["observe", "enforce", "off"],
        default="observe",
        help="the monitor's shipped rules: observe (flag only, the default), enforce (refuse "
        "and kill as the rules say), off",
    )
    run.add_argument(
        "--network",
        choices=["none", "registries", "full"],
        help="every task's network, in place of its own (or an egress policy: --allow ...)",
    )
    policy_options(run)
    report = add(
        commands,
        "report",
        report_bench,
        "summarise a results folder; --html writes a page",
        example="rockroll bench report runs/evoeval-oracle --html report.html",
    )
    report.add_argument("out")
    report.add_argument("--html", help="write a self-contained HTML report here")


def _agent(args: argparse.Namespace, folder: Path) -> Agent:
    from rockroll.bench.agents import make_agent

    options = {}
    if args.model:
        options = {
            "model": args.model,
            "trajectory_dir": folder / "trajectories",
            "max_turns": args.max_turns,
            "max_tokens_per_turn": args.max_tokens,
        }
    return make_agent(args.agent, **options)  # its refusals are UsageErrors naming the flag


def _suite(spec: str) -> list[Task | TaskError]:
    from rockroll.tasks.suites import load_suite

    return load_suite(spec)  # an unknown name is a UsageError naming what suites look like


def _rules(mode: str) -> list[dict] | None:
    from rockroll.safety import default_rules, observing

    if mode == "off":
        return None
    return default_rules() if mode == "enforce" else observing(default_rules())


def _network(args: argparse.Namespace) -> str | dict | None:
    if args.network is None and not (args.allow or args.deny or args.via):
        return None  # each task's own
    return network_setting(args.network, args.allow, args.deny, args.via)


def run_bench(args: argparse.Namespace) -> int:
    from rockroll.bench.report import render, summarize
    from rockroll.bench.runner import RESULTS, TaskResult, run_suite, write_summary
    from rockroll.progress import RunProgress

    name = Path(args.suite.rstrip("/")).name.replace("?", "_").replace(":", "_")
    folder = Path(args.out or f"runs/{name}-{args.agent}")
    agent = _agent(args, folder)
    items = _suite(args.suite)
    if args.fresh and (folder / RESULTS).exists():
        (folder / RESULTS).unlink()
    with RunProgress(f"{agent.name} on {args.suite}", len(items), err) as progress:

        def seen(result: TaskResult) -> None:
            verdict = "passed" if result.passed else f"failed ({result.reason})"
            seconds = result.times.get("total", 0.0)
            progress.done(f"{result.task}: {verdict} in {seconds:.1f} s", result.passed)

        results = run_suite(
            items,
            agent,
            folder,
            jobs=args.jobs,
            on_result=seen,
            log=progress.log,
            rules=_rules(args.safety),
            network=_network(args),
        )
    summary = summarize(results)
    write_summary(folder, summary)
    render(summary, out)
    out.print(f"results: {folder / RESULTS}")
    return 0


def report_bench(args: argparse.Namespace) -> int:
    from rockroll.bench.report import render, summarize, to_html
    from rockroll.bench.runner import RESULTS, read_results

    folder = Path(args.out)
    if not folder.is_dir():
        raise UsageError(
            f"bench report: no folder {folder}; give the --out folder of a `rockroll bench run`"
        )
    results = read_results(folder)
    if not results:
        raise UsageError(f"no results in {folder / RESULTS}; run `rockroll bench run` first")
    summary = summarize(results)
    render(summary, out)
    if args.html:
        Path(args.html).write_text(to_html(results, summary, f"rockroll results: {folder}"))
        out.print(f"HTML report: {args.html}")
    return 0
