"""Attacks on real sandboxes, as an agent under RL would try them; each must fail.

Every test here runs under `host_unchanged`: security-relevant host settings are read before
and after and must be the same, and no file an attack would plant on the host may appear.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rockroll import Sandbox

# Host sysctls an escape would use or change (core dumps to a program, module loading, ...).
SYSCTLS = (
    "kernel/core_pattern",
    "kernel/core_pipe_limit",
    "kernel/modprobe",
    "kernel/hostname",
    "kernel/domainname",
    "kernel/sysrq",
    "kernel/panic",
    "kernel/kptr_restrict",
    "kernel/dmesg_restrict",
    "kernel/yama/ptrace_scope",
    "kernel/unprivileged_bpf_disabled",
    "fs/suid_dumpable",
    "fs/protected_symlinks",
    "vm/overcommit_memory",
    "vm/drop_caches",
    "net/ipv4/ip_forward",
    "user/max_user_namespaces",
)
PLANTED = ("/tmp/PWNED", "/PWNED", "/root/PWNED")


def host_settings() -> dict[str, str]:
    found = {}
    for name in SYSCTLS:
        path = Path("/proc/sys") / name
        try:
            found[name] = path.read_text()
        except OSError:
            continue
    return found


@pytest.fixture(autouse=True)
def host_unchanged() -> Iterator[None]:
    before = host_settings()
    planted_before = {p for p in PLANTED if Path(p).exists()}
    yield
    assert host_settings() == before
    assert {p for p in PLANTED if Path(p).exists()} == planted_before


@pytest.fixture
def sb(base_image: str) -> Iterator[Sandbox]:
    with Sandbox.create(base_image, memory="512m", pids=256) as box:
        yield box
