"""The batcher: concurrent submits share one call; each caller gets its own result or error."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rockroll.agent.batching import Batcher


def test_concurrent_items_share_a_batch_and_keep_their_order() -> None:
    gate = threading.Event()

    def run(items: list[int]) -> list[int]:
        gate.wait(5)
        return [i * 10 for i in items]

    batcher = Batcher(run, max_batch=4, linger=0.05)
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(batcher.submit, i) for i in range(6)]
        gate.set()
        assert [f.result(10) for f in futures] == [i * 10 for i in range(6)]
    assert sum(batcher.batches) == 6 and max(batcher.batches) > 1
    assert max(batcher.batches) <= 4


def test_an_error_reaches_every_caller_of_its_batch_and_the_batcher_goes_on() -> None:
    def run(items: list[str]) -> list[str]:
        if "bad" in items:
            raise RuntimeError("boom")
        return items

    batcher = Batcher(run, max_batch=1)
    with pytest.raises(RuntimeError, match="boom"):
        batcher.submit("bad")
    assert batcher.submit("good") == "good"


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(lambda items: items, max_batch=0)


def _joined_round(batcher: Batcher[int, int], delays: list[float], stuck: int = 0) -> list[float]:
    """Every caller joins, then submits after its delay; `stuck` more join but never submit.
    Returns how long each submit waited for its result."""
    ready = threading.Barrier(len(delays) + stuck)
    release = threading.Event()

    def caller(i: int) -> float:
        with batcher.joined():
            ready.wait(5)
            time.sleep(delays[i])
            started = time.monotonic()
            assert batcher.submit(i) == i
            return time.monotonic() - started

    def idle() -> None:
        with batcher.joined():
            ready.wait(5)
            release.wait(10)

    with ThreadPoolExecutor(len(delays) + stuck) as pool:
        idlers = [pool.submit(idle) for _ in range(stuck)]
        waits = [f.result(10) for f in [pool.submit(caller, i) for i in range(len(delays))]]
        release.set()
        for f in idlers:
            f.result(10)
    return waits


def test_joined_callers_arriving_apart_share_one_batch() -> None:
    batcher: Batcher[int, int] = Batcher(lambda items: items, max_batch=8)
    _joined_round(batcher, [0.0, 0.06, 0.01, 0.045, 0.03, 0.02, 0.055, 0.005])
    assert batcher.batches == [8]
    # Without joining, the linger rule splits calls that far apart.
    with ThreadPoolExecutor(2) as pool:
        late = pool.submit(lambda: (time.sleep(0.06), batcher.submit(1)))
        batcher.submit(0)
        late.result(10)
    assert batcher.batches == [8, 1, 1]


def test_a_joined_caller_that_never_submits_delays_the_others_by_at_most_max_wait() -> None:
    batcher: Batcher[int, int] = Batcher(lambda items: items, max_batch=8, max_wait=0.2)
    waits = _joined_round(batcher, [0.0, 0.0, 0.0], stuck=1)
    assert batcher.batches == [3]
    assert 0.15 < max(waits) < 0.2 + 0.15


def test_a_joined_caller_leaving_releases_the_batch_at_once() -> None:
    batcher: Batcher[int, int] = Batcher(lambda items: items, max_batch=8, max_wait=5.0)
    inside = threading.Event()

    def leave_soon() -> None:
        with batcher.joined():
            inside.set()
            time.sleep(0.05)

    with ThreadPoolExecutor(1) as pool:
        leaving = pool.submit(leave_soon)
        inside.wait(5)
        started = time.monotonic()
        with batcher.joined():
            assert batcher.submit(7) == 7
        leaving.result(10)
    assert time.monotonic() - started < 1.0
    assert batcher.batches == [1]


def test_a_driving_thread_runs_every_batch_itself_until_told_to_stop() -> None:
    ran_on: list[str] = []

    def run(items: list[int]) -> list[int]:
        ran_on.append(threading.current_thread().name)
        return [i + 1 for i in items]

    batcher = Batcher(run, max_batch=4)

    def twice(i: int) -> list[int]:
        return [batcher.submit(i), batcher.submit(i)]

    with ThreadPoolExecutor(6) as pool:
        futures: list = []

        def start() -> None:
            futures.extend(pool.submit(twice, i) for i in range(6))

        batcher.drive(lambda: all(f.done() for f in futures), start)
        assert [f.result(1) for f in futures] == [[i + 1, i + 1] for i in range(6)]
    me = threading.current_thread().name
    assert ran_on and set(ran_on) == {me}, "no batch may run on the worker thread while driving"
    assert sum(batcher.batches) == 12
    # Once the driver has left, submits go to the worker thread again.
    assert batcher.submit(41) == 42 and ran_on[-1] == "rockroll-batcher"
