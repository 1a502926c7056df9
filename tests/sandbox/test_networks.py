"""Private networks: sandboxes on one reach each other; none reaches anything else; what a
crashed process left is collected."""

from __future__ import annotations

import subprocess
from pathlib import Path

from rockroll import Sandbox
from rockroll.sandbox.networks import NETNS_DIR, PREFIX, PrivateNetwork, stale_networks

# connect, retrying while nothing listens yet (the listener starts in the background)
PING = (
    'python3 -c "import socket, time\n'
    "for _ in range(100):\n"
    "    try: socket.create_connection(('{host}', 7000), 3); print('ok'); break\n"
    '    except ConnectionRefusedError: time.sleep(0.1)"'
)
LISTEN = (
    'setsid python3 -c "import socket, time; s = socket.socket(); '
    "s.bind(('0.0.0.0', 7000)); s.listen(); time.sleep(60)\" >/dev/null 2>&1 &"
)


def test_two_sandboxes_on_a_network_reach_each_other_and_nothing_else(base_image: str) -> None:
    with PrivateNetwork() as net, Sandbox.create() as a, Sandbox.create() as b:
        first = net.attach(a.network_namespace())
        second = net.attach(b.network_namespace())
        assert (first, second) == ("10.89.0.2", "10.89.0.3")
        b.exec(LISTEN)
        reached = a.exec(PING.format(host=second), timeout=20)
        assert reached.stdout.strip() == "ok", reached.output
        routes = a.exec(["cat", "/proc/net/route"]).stdout
        destinations = [line.split()[1] for line in routes.splitlines()[1:] if line.strip()]
        assert destinations == ["0000590A"]  # 10.89.0.0/24 only: no default route, no way out
        with Sandbox.create() as outsider:
            assert outsider.exec(PING.format(host=second), timeout=20).exit_code != 0
    assert not (NETNS_DIR / net.name).exists()


def test_networks_of_a_dead_process_are_collected() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"{PREFIX}{dead.pid}-dead00"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in stale_networks()
        assert not Path(NETNS_DIR / name).exists()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
