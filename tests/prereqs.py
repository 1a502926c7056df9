"""Prerequisites of tests that are programs or modules of the host (bwrap, podman, ray...).

`make test` installs all of them (the Makefile's APT_PACKAGES and the venv's extras), so on a CI
machine none may be missing: under CI (the `CI` environment variable set) a missing one fails
while collecting, with the reason; elsewhere the tests that need it skip, saying what to install.
"""

from __future__ import annotations

import importlib
import shutil
from types import ModuleType

import pytest

from tests.paths import in_ci


def require(ok: bool, reason: str) -> pytest.MarkDecorator:
    """The mark for a test that needs `ok`: nothing when it holds; otherwise a skip saying
    `reason`, or under CI a failure."""
    if ok:
        return pytest.mark.skipif(False, reason="present")
    if in_ci():
        pytest.fail(f"CI needs what `make test` installs: {reason}", pytrace=False)
    return pytest.mark.skipif(True, reason=reason)


def require_programs(*names: str, install: str) -> pytest.MarkDecorator:
    """`require` for programs on PATH; `install` says how to get them."""
    missing = [n for n in names if shutil.which(n) is None]
    return require(not missing, f"{' and '.join(missing)} not installed ({install})")


def require_module(name: str, install: str) -> ModuleType:
    """Import `name`; where it is missing, skip the module (fail under CI)."""
    if in_ci():
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            pytest.fail(f"CI needs the module {name} ({install}): {exc}", pytrace=False)
    return pytest.importorskip(name, reason=f"{name} is not installed ({install})")
