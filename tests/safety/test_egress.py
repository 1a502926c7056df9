"""Egress policies against test hosts that live in a network namespace this test makes.

The namespace (`internet`) holds three addresses from 198.51.100.0/24 on its loopback: two web
servers and a DNS server, all threads of this test process. Sandboxes reach it only `via` that
namespace, so nothing here ever leaves the machine or touches the host's own network.
"""

from __future__ import annotations

import http.server
import ipaddress
import secrets
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator

import pytest

from rockroll import AccessDenied, Sandbox
from rockroll.errors import InvalidArgument
from rockroll.sandbox.resolver import enter_netns, question
from tests.serverproc import ServerProc

ALLOWED, OTHER, DNS = "198.51.100.10", "198.51.100.20", "198.51.100.53"
METADATA = "169.254.169.254"


class Internet:
    def __init__(self) -> None:
        self.name = f"rrtest-{secrets.token_hex(4)}"
        self.path = f"/run/netns/{self.name}"
        self.rebinds = 0
        self.queries: list[str] = []
        self.hits: list[str] = []
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        ip = ["ip", "-n", self.name]
        subprocess.run([*ip, "link", "set", "lo", "up"], check=True)
        for address in (ALLOWED, OTHER, DNS, METADATA):
            subprocess.run([*ip, "addr", "add", f"{address}/32", "dev", "lo"], check=True)
        self.servers = [self._web(ALLOWED), self._web(OTHER), self._web(METADATA)]
        self.dns = self._inside(lambda: _bound(socket.SOCK_DGRAM, (DNS, 53)))
        threading.Thread(target=self._serve_dns, daemon=True).start()

    def _inside(self, make):  # type: ignore[no-untyped-def]
        """Make a socket from a thread that has entered the namespace."""
        out = []

        def run() -> None:
            enter_netns(self.path)
            out.append(make())

        t = threading.Thread(target=run)
        t.start()
        t.join()
        return out[0]

    def _web(self, address: str) -> http.server.HTTPServer:
        hits = self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(address)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(f"host {address}".encode())

            def log_message(self, *args: object) -> None:
                pass

        server = self._inside(lambda: http.server.ThreadingHTTPServer((address, 8080), Handler))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def _serve_dns(self) -> None:
        names = {"allowed.test": ALLOWED, "other.test": OTHER}
        while True:
            try:
                query, client = self.dns.recvfrom(512)
            except OSError:
                return
            name, qtype = question(query)
            self.queries.append(name)
            if name == "rebind.test":  # first an outside address, then the metadata service
                self.rebinds += qtype == 1
                address = ALLOWED if self.rebinds <= 1 else METADATA
            else:
                address = names.get(name)
            answer = qtype == 1 and address is not None
            _, end = _question_end(query)
            head = query[:2] + struct.pack(">HHHHH", 0x8180, 1, int(answer), 0, 0)
            body = query[12:end]
            if answer:
                packed = ipaddress.IPv4Address(address).packed
                body += struct.pack(">HHHIH", 0xC00C, 1, 1, 60, 4) + packed
            self.dns.sendto(head + body, client)

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        self.dns.close()
        subprocess.run(["ip", "netns", "del", self.name], check=False)


def _bound(kind: int, address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(address)
    return sock


def _question_end(query: bytes) -> tuple[str, int]:
    at = 12
    while query[at]:
        at += 1 + query[at]
    return "", at + 5


@pytest.fixture(scope="module")
def internet() -> Iterator[Internet]:
    net = Internet()
    yield net
    net.close()


FETCH = """
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(b"GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        body = data.split(b"\\r\\n\\r\\n", 1)[-1].decode()
        print(target, "ok", body)
    except OSError as e:
        print(target, "error", e.errno if e.errno is not None else type(e).__name__)
"""


def fetch(sb: Sandbox, *targets: str) -> dict[str, str]:
    sb.write_text("/tmp/fetch.py", FETCH)
    out = sb.exec(["python3", "/tmp/fetch.py", *targets], timeout=60).stdout
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.splitlines()}


def policy(internet: Internet, *allow: str, deny: tuple[str, ...] = ()) -> dict:
    return {"allow": list(allow), "deny": list(deny), "via": internet.path, "resolvers": [DNS]}


def test_an_allowed_name_is_reached_and_everything_else_is_refused_and_recorded(
    base_image: str, internet: Internet
) -> None:
    network = policy(internet, "allowed.test:8080", "rebind.test")
    with Sandbox.create(base_image, memory="256m", network=network) as sb:
        got = fetch(
            sb, "allowed.test:8080", f"{OTHER}:8080", "other.test:8080", "allowed.test:8081"
        )
        assert got["allowed.test:8080"] == f"ok host {ALLOWED}"
        assert got[f"{OTHER}:8080"] == "error 13"  # EACCES: never resolved through a name
        assert got["other.test:8080"].startswith("error")  # the resolver refused the name
        assert got["allowed.test:8081"] == "error 13"  # a port the entry does not allow
        assert "other.test" not in internet.queries  # never forwarded
        tries = [e for e in sb.events() if e["kind"] == "connect"]
        seen = {(e["address"], e["port"], e["verdict"]) for e in tries}
        assert (ALLOWED, 8080, "allowed") in seen
        assert (OTHER, 8080, "refused") in seen and (ALLOWED, 8081, "refused") in seen
        dns = {(e["name"], e["verdict"]) for e in sb.events() if e["kind"] == "dns"}
        assert ("other.test", "refused") in dns and ("allowed.test", "allowed") in dns
        assert all(e["argv"][:2] == ["python3", "/tmp/fetch.py"] for e in tries)


def test_dns_rebinding_to_an_internal_address_is_refused(
    base_image: str, internet: Internet
) -> None:
    network = policy(internet, "rebind.test")
    with Sandbox.create(base_image, memory="256m", network=network) as sb:
        assert fetch(sb, "rebind.test:8080")["rebind.test:8080"] == f"ok host {ALLOWED}"
        hits = len(internet.hits)
        assert fetch(sb, "rebind.test:8080")["rebind.test:8080"] == "error 13"
        assert len(internet.hits) == hits  # the metadata server was never reached
        refused = [e for e in sb.events() if e.get("address") == METADATA]
        assert refused and refused[-1]["verdict"] == "refused"


def test_a_policy_change_holds_for_the_next_connection_of_a_running_sandbox(
    base_image: str, internet: Internet
) -> None:
    with Sandbox.create(base_image, memory="256m", network="none") as sb:
        assert fetch(sb, f"{ALLOWED}:8080")[f"{ALLOWED}:8080"] == "error 101"  # ENETUNREACH
        sb.set_network(policy(internet, f"{ALLOWED}/32"))
        assert fetch(sb, f"{ALLOWED}:8080")[f"{ALLOWED}:8080"] == f"ok host {ALLOWED}"
        assert sb.spec.network["allow"] == [f"{ALLOWED}/32"]
        sb.set_network(policy(internet, "198.51.100.0/24", deny=(f"{OTHER}",)))
        got = fetch(sb, f"{ALLOWED}:8080", f"{OTHER}:8080")
        assert got == {f"{ALLOWED}:8080": f"ok host {ALLOWED}", f"{OTHER}:8080": "error 13"}
        sb.set_network("none")
        assert fetch(sb, f"{ALLOWED}:8080")[f"{ALLOWED}:8080"] == "error 101"
        with pytest.raises(InvalidArgument, match="not a domain"):
            sb.set_network({"allow": ["http://pypi.org/"]})


def test_a_connected_socket_cannot_be_turned_to_another_address(
    base_image: str, internet: Internet
) -> None:
    """A UDP socket the monitor connected out stays on its peer: sendto elsewhere and a new
    connect() are refused, so the race between checking and connecting buys nothing."""
    script = (
        "import socket\n"
        f"u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect(('{ALLOWED}', 9))\n"
        f"calls = (lambda: u.sendto(b'x', ('{OTHER}', 9)), lambda: u.connect(('{OTHER}', 9)))\n"
        "for call in calls:\n"
        "    try:\n        call(); print('sent')\n"
        "    except OSError as e:\n        print(e.errno)\n"
    )
    with Sandbox.create(base_image, memory="256m", network=policy(internet, ALLOWED)) as sb:
        sb.write_text("/tmp/u.py", script)
        assert sb.exec("python3 /tmp/u.py").stdout.split() == ["106", "106"]  # EISCONN


def test_full_sandboxes_keep_the_host_network_and_bad_policies_are_named(base_image: str) -> None:
    with pytest.raises(InvalidArgument, match=r"network.*'ftp://x'.*not a domain"):
        Sandbox.create(base_image, network={"allow": ["ftp://x"]})
    with pytest.raises(InvalidArgument, match="unknown field 'alow'"):
        Sandbox.create(base_image, network={"alow": ["pypi.org"]})
    full = Sandbox.create(base_image, memory="256m", network="full")
    with full as sb, pytest.raises(InvalidArgument, match="created with network='full'"):
        sb.set_network("none")


def test_the_cli_creates_with_a_policy_and_changes_it(
    base_image: str, internet: Internet, capsys: pytest.CaptureFixture[str]
) -> None:
    from rockroll.cli import main

    args = ["sandbox", "create", "--image", base_image, "--memory", "256m"]
    assert main([*args, "--via", internet.path, "--allow", f"{ALLOWED}:8080"]) == 0
    sandbox_id = capsys.readouterr().out.strip()
    try:
        sb = Sandbox.connect(sandbox_id)
        assert fetch(sb, f"{ALLOWED}:8080")[f"{ALLOWED}:8080"] == f"ok host {ALLOWED}"
        assert main(["sandbox", "network", sandbox_id, "none"]) == 0
        assert fetch(sb, f"{ALLOWED}:8080")[f"{ALLOWED}:8080"] == "error 101"
        assert main(["sandbox", "network", sandbox_id, "--allow", "http://x/"]) == 1
        assert "not a domain" in capsys.readouterr().err
    finally:
        main(["sandbox", "rm", sandbox_id])


def test_the_server_changes_a_policy_for_tokens_allowed_the_network_only(
    sandbox_server: ServerProc, internet: Internet
) -> None:
    plain = sandbox_server.token("no-network")
    with Sandbox.create(memory="256m", server=sandbox_server.url, token=plain) as sb:
        with pytest.raises(AccessDenied, match="may not ask for network"):
            sb.set_network({"allow": [ALLOWED]})
        sb.exec("ls /")
        assert [e["argv"] for e in sb.events()] == [["/bin/bash", "-c", "ls /"], ["ls", "/"]]
    admin = sandbox_server.token("net-admin", admin=True, allow_network=True)
    with Sandbox.create(memory="256m", server=sandbox_server.url, token=admin) as sb:
        sb.set_network(policy(internet, f"{ALLOWED}:8080"))
        assert fetch(sb, f"{ALLOWED}:8080")[f"{ALLOWED}:8080"] == f"ok host {ALLOWED}"
        tries = [e for e in sb.events() if e["kind"] == "connect"]
        assert tries[-1]["verdict"] == "allowed" and tries[-1]["via"] == internet.path
