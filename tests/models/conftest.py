"""Fixtures of the model tests: a tiny random model, and a real server in front of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rockroll.models.local import LocalModel, tiny_random_model
from rockroll.models.serve import create_app, serve_in_thread


@pytest.fixture(scope="module")
def tiny() -> LocalModel:
    return tiny_random_model(seed=0)


@pytest.fixture(scope="module")
def url(tiny: LocalModel) -> Iterator[str]:
    """The base URL (…/v1) of a server on loopback in front of `tiny`, served as "tiny"; from
    here on `tiny` batches continuously, as behind `rockroll model serve`."""
    tiny.batch_continuously()
    with serve_in_thread(create_app(tiny, "tiny")) as base:
        yield base
