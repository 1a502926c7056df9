"""What a synthesis run takes: `rockroll data synth`'s flags, as one object."""

from __future__ import annotations

from dataclasses import dataclass

from rockroll.data.explore import DEFAULT


@dataclass
class SynthOptions:
    """What `rockroll data synth` takes; each field is also a flag."""

    strategies: tuple[str, ...] = DEFAULT
    limit: int | None = None  # stop drafting a source once this many of its tasks are accepted
    jobs: int = 2  # candidates screened, built and reviewed at once
    reruns: int = 3  # k: runs of each control; any disagreement rejects the task as flaky
    baseline_runs: int = 3  # runs of the whole suite to find flaky tests
    max_tests: int = 200  # tests a task is verified by, at most
    test_seconds: float = 2.0  # tests slower than this in the baseline are not used
    select_seconds: float = 10.0  # baseline seconds of the tests one task is verified by
    budget: float = 60.0  # seconds the oracle's verification may take
    resume: bool = False
    model: str | None = None  # writes the instructions (any harness backend); else templates
    distributed: str = "local"  # or "ray": candidates decided by workers on a Ray cluster
    ray_address: str | None = None  # the cluster (None: $RAY_ADDRESS, else a local one)
    ray_workers: int = 2  # workers, spread over the nodes, each deciding `jobs` at once
