"""A timeout ends the whole command: children that left its process group or session too."""

from __future__ import annotations

import time

from rockroll import Sandbox

BUSY = "while :; do :; done"


def spinners(sb: Sandbox) -> int:
    """Processes of the sandbox burning CPU in a shell loop (sh -c 'while :...')."""
    out = sb.exec(["ps", "-e", "-o", "stat=,args="]).stdout
    return sum(1 for line in out.splitlines() if "while :" in line)


def settle(sb: Sandbox) -> int:
    deadline = time.monotonic() + 3
    while spinners(sb) and time.monotonic() < deadline:
        time.sleep(0.05)
    return spinners(sb)


def test_a_setsid_busy_loop_is_dead_after_the_timeout(sb: Sandbox) -> None:
    res = sb.exec(f"setsid sh -c '{BUSY}' & sleep 100", timeout=1)
    assert res.timed_out
    assert settle(sb) == 0


def test_a_double_forked_daemon_is_dead_after_the_timeout(sb: Sandbox) -> None:
    res = sb.exec(
        f"(setsid sh -c '{BUSY}' &) ; (nohup sh -c '{BUSY}' >/dev/null &); sleep 100", timeout=1
    )
    assert res.timed_out
    assert settle(sb) == 0


def test_background_work_of_a_command_that_finished_lives_on(sb: Sandbox) -> None:
    assert sb.exec(f"setsid sh -c '{BUSY}' >/dev/null 2>&1 &", timeout=5).exit_code == 0
    time.sleep(0.3)
    assert spinners(sb) == 1  # the command ended normally: its daemon is not killed
    assert sb.kill_all() == 0
    assert spinners(sb) == 0


def test_a_session_timeout_kills_the_commands_escapees_but_not_earlier_jobs(sb: Sandbox) -> None:
    with sb.session() as sh:
        assert sh.run("sleep 300 &").exit_code == 0
        sh.run(f"setsid sh -c '{BUSY}' >/dev/null 2>&1 &")  # an earlier command's daemon
        time.sleep(0.05)
        res = sh.run(f"(setsid sh -c '{BUSY}' &); sleep 100", timeout=1)
        assert res.timed_out
        time.sleep(0.3)
        assert spinners(sb) == 1, sb.exec("ps -ef").stdout  # the earlier daemon only
        assert "sleep 300" in sb.exec(["ps", "-e", "-o", "args="]).stdout
        assert sh.run("echo alive").stdout == "alive\n"
