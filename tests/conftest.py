"""Shared fixtures: real sandboxes on the real base image (built once by `make test`)."""

from __future__ import annotations

import pytest

from rockroll.sandbox.errors import ImageNotFound
from rockroll.sandbox.images import build_image, get_image


@pytest.fixture(scope="session")
def base_image() -> str:
    try:
        get_image("base")
    except ImageNotFound:
        build_image("base")
    return "base"


@pytest.fixture
def sandbox(base_image: str):
    from rockroll import Sandbox

    with Sandbox.create(base_image, memory="512m", pids=256) as sb:
        yield sb
