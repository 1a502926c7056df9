"""A timeout ends the whole command: children that left its process group or session too."""

from __future__ import annotations

import time

from rockroll import Sandbox

BUSY = "while :; do :; done"
# A command's wait until n spinners run, so that its timeout strikes them running
UNTIL_SPINNING = "until [ $(ps -e -o args= | grep -c '^sh -c while') -ge {n} ]; do sleep 0.05; done"


def spinners(sb: Sandbox) -> int:
    """Processes of the sandbox burning CPU in a shell loop (sh -c 'while :...'); not the
    `setsid` that is about to fork one (it forks when it leads a process group)."""
    out = sb.exec(["ps", "-e", "-o", "args="]).stdout
    return sum(1 for line in out.splitlines() if line.startswith(f"sh -c {BUSY}"))


def settle(sb: Sandbox, left: int = 0) -> int:
    """The spinners once no more than `left` remain, or 30 s have passed (a loaded host)."""
    deadline = time.monotonic() + 30
    while spinners(sb) > left and time.monotonic() < deadline:
        time.sleep(0.05)
    return spinners(sb)


def started(sb: Sandbox, count: int) -> None:
    """Wait until `count` spinners run, so that a later count of them means something."""
    deadline = time.monotonic() + 30
    while spinners(sb) < count:
        assert time.monotonic() < deadline, sb.exec("ps -ef").stdout
        time.sleep(0.05)


def test_a_setsid_busy_loop_is_dead_after_the_timeout(sb: Sandbox) -> None:
    res = sb.exec(
        f"setsid sh -c '{BUSY}' & {UNTIL_SPINNING.format(n=1)}; echo running; sleep 100",
        timeout=10,
    )
    assert res.timed_out and res.stdout == "running\n", res  # it ran when the timeout struck
    assert settle(sb) == 0
    # the control: without a timeout, the same loop does run on
    assert sb.exec(f"setsid sh -c '{BUSY}' >/dev/null 2>&1 &").exit_code == 0
    started(sb, 1)
    assert sb.kill_all() == 0 and spinners(sb) == 0


def test_a_double_forked_daemon_is_dead_after_the_timeout(sb: Sandbox) -> None:
    # the daemons are running before the timeout strikes (the command waits for them; 10 s is
    # room for that on a loaded host, or in tests/vm's emulated guest)
    res = sb.exec(
        f"(setsid sh -c '{BUSY}' &) ; (nohup sh -c '{BUSY}' >/dev/null &); "
        f"{UNTIL_SPINNING.format(n=2)}; echo both running; sleep 100",
        timeout=10,
    )
    assert res.timed_out and res.stdout == "both running\n", res
    assert settle(sb) == 0


def test_background_work_of_a_command_that_finished_lives_on(sb: Sandbox) -> None:
    assert sb.exec(f"setsid sh -c '{BUSY}' >/dev/null 2>&1 &", timeout=5).exit_code == 0
    started(sb, 1)
    time.sleep(1)  # time for a kill, were there one
    assert spinners(sb) == 1  # the command ended normally: its daemon is not killed
    assert sb.kill_all() == 0
    assert spinners(sb) == 0


def test_a_session_timeout_kills_the_commands_escapees_but_not_earlier_jobs(sb: Sandbox) -> None:
    with sb.session() as sh:
        assert sh.run("sleep 300 &").exit_code == 0
        sh.run(f"setsid sh -c '{BUSY}' >/dev/null 2>&1 &")  # an earlier command's daemon
        started(sb, 1)
        res = sh.run(
            f"(setsid sh -c '{BUSY}' &); {UNTIL_SPINNING.format(n=2)}; sleep 100",
            timeout=10,
        )
        assert res.timed_out
        assert settle(sb, left=1) == 1, sb.exec("ps -ef").stdout  # the earlier daemon only
        time.sleep(1)  # and it stays: no late kill of it
        assert spinners(sb) == 1, sb.exec("ps -ef").stdout
        assert "sleep 300" in sb.exec(["ps", "-e", "-o", "args="]).stdout
        assert sh.run("echo alive").stdout == "alive\n"
