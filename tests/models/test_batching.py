"""The batcher: concurrent submits share one call; each caller gets its own result or error."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rockroll.models.batching import Batcher


def test_concurrent_items_share_a_batch_and_keep_their_order() -> None:
    """Five callers submit while a batch runs: they queue behind it and go as shared batches."""
    started, gate = threading.Event(), threading.Event()
    seen: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        seen.append(items)
        started.set()
        gate.wait(10)
        return [i * 10 for i in items]

    batcher = Batcher(run, max_batch=4, linger=0.5)
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(batcher.submit, 0)
        assert started.wait(10)  # batch [0] runs (after its linger) and holds the worker
        rest = [pool.submit(batcher.submit, i) for i in range(1, 6)]
        time.sleep(0.3)  # they queue meanwhile; a late one only joins a later batch
        gate.set()
        assert [f.result(10) for f in [first, *rest]] == [i * 10 for i in range(6)]
    assert seen[0] == [0] and sorted(i for items in seen for i in items) == list(range(6))
    assert max(batcher.batches[1:]) > 1 and max(batcher.batches) <= 4


def test_an_error_reaches_every_caller_of_its_batch_and_the_batcher_goes_on() -> None:
    def run(items: list[str]) -> list[str]:
        if "bad" in items:
            raise RuntimeError(f"boom in {sorted(items)}")
        return items

    # Both callers join before either submits, so the batch waits for both (max_wait is far).
    batcher: Batcher[str, str] = Batcher(run, max_batch=4, max_wait=30.0)
    ready = threading.Barrier(2)

    def caller(item: str) -> str:
        with batcher.joined():
            ready.wait(5)
            return batcher.submit(item)

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(caller, item) for item in ("bad", "innocent")]
        for f in futures:
            with pytest.raises(RuntimeError, match=r"boom in \['bad', 'innocent'\]"):
                f.result(10)
    assert batcher.batches == [2]
    assert batcher.submit("good") == "good"
    assert batcher.batches == [2, 1]


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
    # max_wait is far above the gaps, so only the last arrival releases the batch.
    batcher: Batcher[int, int] = Batcher(lambda items: items, max_batch=8, max_wait=30.0)
    _joined_round(batcher, [0.0, 0.06, 0.01, 0.045, 0.03, 0.02, 0.055, 0.005])
    assert batcher.batches == [8]
    # Without joining, the linger rule (2 ms) splits calls half a second apart.
    with ThreadPoolExecutor(2) as pool:
        late = pool.submit(lambda: (time.sleep(0.5), batcher.submit(1)))
        batcher.submit(0)
        late.result(10)
    assert batcher.batches == [8, 1, 1]


def test_a_joined_caller_that_never_submits_delays_the_others_by_at_most_max_wait() -> None:
    """The stuck caller leaves only after the others have their results (up to 10 s later), so
    without `max_wait` they would wait for it; with it, about `max_wait` after the last one came.
    """
    batcher: Batcher[int, int] = Batcher(lambda items: items, max_batch=8, max_wait=1.0)
    waits = _joined_round(batcher, [0.0, 0.0, 0.0], stuck=1)
    assert batcher.batches == [3]
    assert 1.0 <= max(waits) < 6.0  # max_wait after the last arrival; not the stuck caller


def test_a_joined_caller_leaving_releases_the_batch_at_once() -> None:
    left = threading.Event()
    ran_after_leaving: list[bool] = []

    def run(items: list[int]) -> list[int]:
        ran_after_leaving.append(left.is_set())
        return items

    batcher: Batcher[int, int] = Batcher(run, max_batch=8, max_wait=30.0)
    inside = threading.Event()

    def leave_soon() -> None:
        with batcher.joined():
            inside.set()
            time.sleep(0.05)
            left.set()  # just before it leaves: the batch must not run before this

    with ThreadPoolExecutor(1) as pool:
        leaving = pool.submit(leave_soon)
        assert inside.wait(5)
        started = time.monotonic()
        with batcher.joined():
            assert batcher.submit(7) == 7
        leaving.result(10)
    assert ran_after_leaving == [True]  # it waited for the joined caller, then ran
    assert time.monotonic() - started < 10.0  # on its leaving, not after max_wait (30 s)
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
