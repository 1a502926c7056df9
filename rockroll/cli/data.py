"""`rockroll data`: synthesize tasks from real code, and report on a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from rockroll.cli.common import Verbs, add, err, out, positive, verbs
from rockroll.errors import UsageError


def register(nouns: Verbs) -> None:
    parser = nouns.add_parser("data", help="synthesize tasks from real repositories")
    commands = verbs(parser)
    synth = add(
        commands,
        "synth",
        run_synth,
        "make verified tasks from sources into a dataset",
        example="rockroll data synth ./my-repo --out datasets/mine --strategy bug-injection",
    )
    synth.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="a git repository (PATH or PATH@REV), pypi:NAME[==VERSION], or a seeds folder",
    )
    synth.add_argument("--out", required=True, help="the dataset folder")
    synth.add_argument(
        "--strategy",
        help="comma-separated strategies: bug-injection, feature-removal, commit-replay (the "
        "default: all three); with --model also model-bugs and terminal-workflows (seeds folders "
        "need it); and any a plug-in registered",
    )
    synth.add_argument(
        "--limit", type=positive, help="stop drafting a source after N of its tasks are accepted"
    )
    synth.add_argument("-j", "--jobs", type=positive, default=2, help="candidates at once")
    synth.add_argument(
        "--reruns", type=positive, default=3, help="k: runs of each control (default 3)"
    )
    synth.add_argument("--resume", action="store_true", help="continue the dataset in --out")
    synth.add_argument(
        "--model",
        help="a model that writes the instructions and the model-bugs (e.g. openai:NAME@URL); "
        "else templates",
    )
    synth.add_argument(
        "--distributed",
        choices=("local", "ray"),
        default="local",
        help="ray: candidates decided by workers on a Ray cluster (the dataset on a file system "
        "every node sees)",
    )
    synth.add_argument("--ray-address", help="the Ray cluster (default: $RAY_ADDRESS, else local)")
    synth.add_argument(
        "--ray-workers", type=positive, default=2, help="Ray workers, each deciding -j at once"
    )
    trajectories = add(
        commands,
        "trajectories",
        run_trajectories,
        "run a model on a dataset's tasks: verified trajectories and each task's difficulty",
        example="rockroll data trajectories datasets/mine --model oracle --attempts 8",
    )
    trajectories.add_argument("dataset")
    trajectories.add_argument(
        "--model", required=True, help="oracle (the reference change as tool calls) or a model SPEC"
    )
    trajectories.add_argument(
        "--attempts", type=positive, default=8, help="attempts per task (default 8: pass@8)"
    )
    trajectories.add_argument("--max-turns", type=positive, default=30, help="turns per attempt")
    trajectories.add_argument("-j", "--jobs", type=positive, default=2, help="attempts at once")
    report = add(
        commands,
        "report",
        run_report,
        "the funnel of a dataset; --html writes a page",
        example="rockroll data report datasets/mine --html funnel.html",
    )
    report.add_argument("dataset")
    report.add_argument("--html", help="write the funnel as a self-contained HTML page here")


def run_synth(args: argparse.Namespace) -> int:
    from rockroll.data.explore import DEFAULT, check_strategies
    from rockroll.data.manifest import funnel_html, funnel_text
    from rockroll.data.pipeline import Synth, SynthOptions
    from rockroll.progress import RunProgress

    dataset = Path(args.out)
    names = args.strategy.split(",") if args.strategy else DEFAULT
    check_strategies([n.strip() for n in names if n.strip()], bool(args.model))  # before any run
    options = SynthOptions(
        strategies=tuple(s.strip() for s in names if s.strip()),
        limit=args.limit,
        jobs=args.jobs,
        reruns=args.reruns,
        resume=args.resume,
        model=args.model,
        distributed=args.distributed,
        ray_address=args.ray_address,
        ray_workers=args.ray_workers,
    )
    with RunProgress("synth", 0, err, counted="accepted") as progress:

        def seen(record: dict) -> None:
            verdict = "accepted" if record["accepted"] else f"rejected ({record['reason']})"
            seconds = record["times"].get("total", 0.0)
            progress.done(f"{record['change']}: {verdict} in {seconds:.1f} s", record["accepted"])

        def source(spec: str, candidates: int) -> None:
            progress.log(f"{spec}: {candidates} candidates")
            progress.add_total(candidates)

        synth = Synth(dataset, options, log=progress.log, on_candidate=seen)
        summary = synth.run(list(args.sources), on_source=source)
    out.print(funnel_text(summary), markup=False, highlight=False, soft_wrap=True)
    (dataset / "report.html").write_text(funnel_html(summary, f"rockroll dataset: {dataset}"))
    out.print(f"tasks: {dataset / 'tasks'}  manifest: {dataset / 'manifest.jsonl'}")
    if not any(s["status"] == "ok" for s in summary["sources"]):
        err.print("error: no source could be read; the funnel above says why", markup=False)
        return 1
    return 0


def run_trajectories(args: argparse.Namespace) -> int:
    from collections import Counter

    from rockroll.bench.runner import TaskResult
    from rockroll.data.trajectories import ORACLE, make_trajectories
    from rockroll.progress import RunProgress

    dataset = Path(args.dataset)
    tasks = len([p for p in (dataset / "tasks").glob("*/task.toml")])
    total = tasks * (1 if args.model == ORACLE else args.attempts)
    with RunProgress(f"{args.model} on {dataset}", total, err) as progress:

        def seen(result: TaskResult) -> None:
            verdict = "passed" if result.passed else f"failed ({result.reason})"
            progress.done(f"{result.task}: {verdict}", result.passed)

        labels = make_trajectories(
            dataset,
            args.model,
            attempts=args.attempts,
            jobs=args.jobs,
            max_turns=args.max_turns,
            on_result=seen,
            log=progress.log,
        )
    counts = Counter(label["difficulty"] for label in labels.values())
    passes = sum(label["passes"] for label in labels.values())
    runs = sum(label["attempts"] for label in labels.values())
    out.print(
        f"{args.model}: {passes}/{runs} attempts passed; "
        + ", ".join(f"{counts[d]} {d}" for d in ("easy", "moderate", "hard")),
        markup=False,
    )
    out.print(f"verified trajectories: {dataset / 'trajectories'}", markup=False)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from rockroll.data.manifest import Manifest, funnel, funnel_html, funnel_text

    dataset = Path(args.dataset)
    if not (dataset / "manifest.jsonl").is_file():
        raise UsageError(f"{dataset}: no manifest.jsonl; make one with `rockroll data synth`")
    summary = funnel(Manifest(dataset).lines())
    out.print(funnel_text(summary), markup=False, highlight=False, soft_wrap=True)
    if args.html:
        Path(args.html).write_text(funnel_html(summary, f"rockroll dataset: {dataset}"))
        out.print(f"HTML report: {args.html}")
    return 0
