"""`rockroll data`: synthesize tasks from real code, and report on a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from rockroll.cli.common import Verbs, add, err, out, positive, verbs
from rockroll.errors import UsageError


def register(nouns: Verbs) -> None:
    parser = nouns.add_parser("data", help="synthesize tasks from real repositories")
    commands = verbs(parser)
    synth = add(commands, "synth", run_synth, "make verified tasks from sources into a dataset")
    synth.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="a git repository (PATH or PATH@REV), pypi:NAME[==VERSION], or a seeds folder",
    )
    synth.add_argument("--out", required=True, help="the dataset folder")
    synth.add_argument(
        "--strategy",
        default="bug-injection,feature-removal",
        help="comma-separated strategies (default bug-injection,feature-removal)",
    )
    synth.add_argument(
        "--limit", type=positive, help="stop drafting a source after N of its tasks are accepted"
    )
    synth.add_argument("-j", "--jobs", type=positive, default=2, help="candidates at once")
    synth.add_argument(
        "--reruns", type=positive, default=3, help="k: runs of each control (default 3)"
    )
    synth.add_argument("--resume", action="store_true", help="continue the dataset in --out")
    report = add(commands, "report", run_report, "the funnel of a dataset; --html writes a page")
    report.add_argument("dataset")
    report.add_argument("--html", help="write the funnel as a self-contained HTML page here")


def run_synth(args: argparse.Namespace) -> int:
    from rockroll.data.manifest import funnel_html, funnel_text
    from rockroll.data.pipeline import Synth, SynthOptions
    from rockroll.progress import RunProgress

    dataset = Path(args.out)
    options = SynthOptions(
        strategies=tuple(s.strip() for s in args.strategy.split(",") if s.strip()),
        limit=args.limit,
        jobs=args.jobs,
        reruns=args.reruns,
        resume=args.resume,
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
    out.print(funnel_text(summary), markup=False, highlight=False)
    (dataset / "report.html").write_text(funnel_html(summary, f"rockroll dataset: {dataset}"))
    out.print(f"tasks: {dataset / 'tasks'}  manifest: {dataset / 'manifest.jsonl'}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from rockroll.data.manifest import Manifest, funnel, funnel_html, funnel_text

    dataset = Path(args.dataset)
    if not (dataset / "manifest.jsonl").is_file():
        raise UsageError(f"{dataset}: no manifest.jsonl; make one with `rockroll data synth`")
    summary = funnel(Manifest(dataset).lines())
    out.print(funnel_text(summary), markup=False, highlight=False)
    if args.html:
        Path(args.html).write_text(funnel_html(summary, f"rockroll dataset: {dataset}"))
        out.print(f"HTML report: {args.html}")
    return 0
