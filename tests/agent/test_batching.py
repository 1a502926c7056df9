"""The batcher: concurrent submits share one call; each caller gets its own result or error."""

from __future__ import annotations

import threading
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
