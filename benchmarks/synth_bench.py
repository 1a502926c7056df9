"""Data synthesis figures against their targets, with plain mutation testing as the peer.

    .venv/bin/python benchmarks/synth_bench.py [--package toolz] [--accept 40] [-j 2]
                                               [--peer 60] [--json out.json]

The source is a real package's sdist (the one `tests/data/sdists.py` fetched into
.cache/sdists), unpacked into a fresh git repository so no network is used. `rockroll data synth`'s
pipeline runs on it with the deterministic strategies until `--accept` tasks are accepted; then
the accepted set is run 5 more times with each control (the flake rate), and each task's image is
measured beyond the repository's shared one. The peer, in the same run: plain single-site AST
mutation testing of the same package on the host (the mutated file written, the tests of the
files that call the function run by pytest, the file restored), its killed mutants per hour.

Prints the figures and exits 0: it reports, it does not test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import console, figures_table, headline, machine

from rockroll.bench.agents import NoopAgent, OracleAgent
from rockroll.bench.runner import run_task
from rockroll.data.mutations import apply, find_mutations
from rockroll.data.pipeline import Synth, SynthOptions
from rockroll.data.trajectories import make_trajectories
from rockroll.tasks.harbor import load_harbor
from rockroll.tasks.workspace import task_image

SDISTS = Path(__file__).resolve().parents[1] / ".cache" / "sdists"
RERUNS = 5


def _repo(package: str, into: Path) -> Path:
    archive = next(SDISTS.glob(f"{package}-*.tar.gz"), None)
    if archive is None:
        sys.exit(f"no sdist of {package} in {SDISTS}: run `python tests/data/sdists.py`")
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    root = next(p for p in into.iterdir() if p.is_dir())
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", archive.name], cwd=root, check=True)
    return root


def _synth(repo: Path, out: Path, accept: int, jobs: int) -> tuple[list[dict], float]:
    options = SynthOptions(limit=accept, jobs=jobs)
    started = time.monotonic()
    done = [0]

    def seen(record: dict) -> None:
        done[0] += 1
        if done[0] % 10 == 0:
            console.print(f"{time.strftime('%H:%M:%S')} {done[0]} candidates decided")

    Synth(out, options, log=lambda s: None, on_candidate=seen).run([str(repo)])
    seconds = time.monotonic() - started
    records = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    return records, seconds


def _flakes(out: Path, accepted: list[dict]) -> tuple[int, float]:
    """Tasks whose 5 reruns of each control disagree with themselves or with the review."""
    flaky, started = 0, time.monotonic()
    for i, record in enumerate(accepted):
        task = load_harbor(out / record["task"])
        oracle = {run_task(task, OracleAgent()).passed for _ in range(RERUNS)}
        noop = {run_task(task, NoopAgent()).passed for _ in range(RERUNS)}
        flaky += oracle != {True} or noop != {False}
        if i % 10 == 9:
            console.print(f"{time.strftime('%H:%M:%S')} reran {i + 1}/{len(accepted)} tasks")
    return flaky, time.monotonic() - started


def _image_bytes(out: Path, accepted: list[dict]) -> list[int]:
    sizes = []
    for record in accepted:
        image = task_image(load_harbor(out / record["task"]))
        rootfs = image.path / "rootfs"
        sizes.append(sum(p.lstat().st_size for p in rootfs.rglob("*") if p.is_file()))
    return sizes


def _peer(repo: Path, records: list[dict], limit: int) -> tuple[int, int, float]:
    """Plain mutation testing on the host: the same bug-injection candidates, each file mutated
    in a copy of the repository and the tests of its selected files run by pytest."""
    work = Path(tempfile.mkdtemp(prefix="peer-"))
    shutil.copytree(repo, work / "repo", ignore=shutil.ignore_patterns(".git"))
    root = work / "repo"
    pythonpath = str(root / "src") if (root / "src").is_dir() else str(root)
    tried = killed = 0
    started = time.monotonic()
    for record in records:
        if record.get("strategy") != "bug-injection" or tried >= limit:
            continue
        tests = record.get("files_of", [])
        if not tests:
            continue
        path = root / record["path"]
        source = path.read_text()
        mutation = next(
            (m for m in find_mutations(source, record["path"], {record["function"]})
             if m.describe() == record["change"]), None,
        )  # fmt: skip
        if mutation is None:
            continue
        tried += 1
        path.write_text(apply(source, mutation))
        try:
            done = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                cwd=root, env=os.environ | {"PYTHONPATH": pythonpath},
                capture_output=True, timeout=300,
            )  # fmt: skip
            killed += done.returncode != 0
        finally:
            path.write_text(source)
    seconds = time.monotonic() - started
    shutil.rmtree(work, ignore_errors=True)
    return tried, killed, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default="toolz", help="an sdist in .cache/sdists")
    parser.add_argument("--accept", type=int, default=40, help="accepted tasks to make")
    parser.add_argument("-j", "--jobs", type=int, default=2)
    parser.add_argument("--peer", type=int, default=60, help="mutants the peer runs")
    parser.add_argument(
        "--label-model", default="local:smollm2", help="the model whose pass@8 labels difficulty"
    )
    parser.add_argument(
        "--label-tasks", type=int, default=0, help="accepted tasks to label (0: none; slow)"
    )
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    info = machine()
    console.print(headline("synth_bench", info, f"  |  package {args.package}"))
    tmp = Path(tempfile.mkdtemp(prefix="synth-bench-"))
    repo = _repo(args.package, tmp / "src")
    records, seconds = _synth(repo, tmp / "ds", args.accept, args.jobs)
    figures = _figures(tmp / "ds", records, seconds)
    tried, killed, peer_seconds = _peer(repo, records, args.peer)
    figures["peer_killed_per_hour"] = killed / peer_seconds * 3600 if peer_seconds else 0.0
    figures["peer_mutants"] = tried
    figures["labels"] = _labels(tmp / "ds", args.label_model, args.label_tasks)
    ratio = figures["peer_killed_per_hour"] / max(figures["accepted_per_hour"], 1e-9)
    figures["peer_ratio"] = ratio
    _print(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures | {"machine": info}, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)


def _figures(out: Path, records: list[dict], seconds: float) -> dict:
    candidates = [r for r in records if r["kind"] == "candidate"]
    accepted = [r for r in candidates if r["accepted"]]
    bug = [r for r in candidates if r["strategy"] == "bug-injection"]
    bug_drafts = [r for r in bug if r["stage"] != "candidates"]
    console.print(f"{time.strftime('%H:%M:%S')} {len(accepted)} accepted; rerunning each {RERUNS}x")
    flaky, _ = _flakes(out, accepted)
    sizes = _image_bytes(out, accepted)
    signatures = {tuple(sorted(r["fail_to_pass"])) for r in accepted}
    gates: Counter = Counter()
    for r in candidates:
        for name, verdict in r.get("gates", {}).items():
            gates[(name, verdict["ok"])] += 1
    return {
        "candidates": len(candidates),
        "drafts": sum(r["stage"] != "candidates" for r in candidates),
        "accepted": len(accepted),
        "seconds": seconds,
        "accepted_per_hour": len(accepted) / seconds * 3600,
        "bug_drafts_accepted": sum(r["accepted"] for r in bug_drafts) / max(len(bug_drafts), 1),
        "unique_signatures": len(signatures) / max(len(accepted), 1),
        "flaky_accepted": flaky,
        "image_bytes_mean": sum(sizes) / max(len(sizes), 1),
        "image_bytes_max": max(sizes, default=0),
        "rejected": dict(Counter(r["reason"] for r in candidates if r["reason"])),
        "leaks": [
            f"{r['change']}: {r['gates']['leak']['detail']}"
            for r in candidates
            if r["reason"] == "leak"
        ],
        "gates": {f"{name}:{'pass' if ok else 'fail'}": n for (name, ok), n in gates.items()},
    }


def _labels(out: Path, model: str, n: int) -> dict:
    """Difficulty from the model's pass@8 on the first `n` accepted tasks (the rest moved aside
    for the run and put back)."""
    if n <= 0:
        return {}
    tasks = sorted((out / "tasks").iterdir())
    aside = out / "aside"
    aside.mkdir()
    for task in tasks[n:]:
        task.rename(aside / task.name)
    try:
        labels = make_trajectories(out, model, attempts=8, jobs=2, max_turns=8)
    finally:
        for task in aside.iterdir():
            task.rename(out / "tasks" / task.name)
    return {
        "model": model,
        "tasks": len(labels),
        "counts": dict(Counter(v["difficulty"] for v in labels.values())),
    }


def _print(f: dict) -> None:
    rows = [
        (
            "candidates → drafts → accepted",
            f"{f['candidates']} → {f['drafts']} → {f['accepted']}",
            "",
            None,
            "",
        ),
        (
            "accepted tasks per hour",
            f"{f['accepted_per_hour']:.0f}",
            "≥ 300",
            f["accepted_per_hour"] >= 300,
            f"{f['seconds']:.0f} s",
        ),
        (
            "bug-injection drafts accepted",
            f"{f['bug_drafts_accepted']:.0%}",
            "≥ 60%",
            f["bug_drafts_accepted"] >= 0.6,
            "",
        ),
        (
            "unique failing-test signatures",
            f"{f['unique_signatures']:.0%}",
            "≥ 60%",
            f["unique_signatures"] >= 0.6,
            "of accepted tasks",
        ),
        (
            "flaky accepted tasks (5 reruns)",
            str(f["flaky_accepted"]),
            "0",
            f["flaky_accepted"] == 0,
            "",
        ),
        (
            "image bytes per task (mean / max)",
            f"{f['image_bytes_mean'] / 1e3:.1f} / {f['image_bytes_max'] / 1e3:.1f} kB",
            "≤ 5 MB",
            f["image_bytes_max"] <= 5e6,
            "beyond the shared image",
        ),
        (
            "peer: killed mutants per hour",
            f"{f['peer_killed_per_hour']:.0f}",
            "",
            None,
            f"plain mutation testing, {f['peer_mutants']} mutants",
        ),
        (
            "peer / rockroll",
            f"{f['peer_ratio']:.1f}x",
            "≤ 4x",
            f["peer_ratio"] <= 4,
            "the machinery's cost",
        ),
        (
            "difficulty from pass@8",
            _label_text(f["labels"]),
            "every task",
            bool(f["labels"]) and f["labels"]["tasks"] == f["accepted"],
            f"{f['labels']['model']}" if f["labels"] else "run with --label-tasks N (slow)",
        ),
    ]
    console.print(figures_table(rows))
    console.print(f"rejected: {f['rejected']}")
    for line in f["leaks"]:
        console.print(f"leak: {line}", markup=False)
    console.print(f"gates: {f['gates']}")


def _label_text(labels: dict) -> str:
    if not labels:
        return "not measured"
    return f"{labels['tasks']} tasks: " + ", ".join(f"{n} {d}" for d, n in labels["counts"].items())


if __name__ == "__main__":
    main()
