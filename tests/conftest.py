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


@pytest.fixture(scope="session")
def sandbox_server(base_image: str, tmp_path_factory: pytest.TempPathFactory):
    """A real `rockroll serve` shared by the tests that use sandboxes over HTTP."""
    from tests.serverproc import ServerProc

    server = ServerProc(tmp_path_factory.mktemp("service") / "service.db").start()
    yield server
    server.stop()
