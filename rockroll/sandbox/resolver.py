"""The sandbox's DNS resolver: answers allowed names only, and tells the policy what it answered.

The supervisor binds it at 127.0.0.53:53 inside the sandbox's network namespace (the sandbox's
/etc/resolv.conf names it); queries for names the egress policy allows are forwarded to the
upstream servers from the network the sandbox's connections leave from, and the addresses in
the answers are learned by the policy (`Policy.learn`), which is what lets a connection to them
through. Every other query is answered REFUSED. Each query is an event.

Only what a stub needs of DNS is parsed here (the question, and A/AAAA records of the answer).
Standard library only, like the supervisor that runs it.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

if __package__:
    from rockroll.sandbox.egress import Policy
else:  # loaded by the supervisor, run by path
    from egress import Policy  # type: ignore[no-redef]

ADDRESS = ("127.0.0.53", 53)
CLONE_NEWNET = 0x40000000
TYPES = {1: "A", 28: "AAAA", 5: "CNAME", 15: "MX", 16: "TXT", 33: "SRV", 65: "HTTPS", 12: "PTR"}
TIMEOUT = 3.0
_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(path: str) -> None:
    """Move the calling thread into the network namespace at `path` (a /proc/PID/ns/net)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter_netns_fd(fd, path)
    finally:
        os.close(fd)


def enter_netns_fd(fd: int, name: str = "") -> None:
    """Move the calling thread into the network namespace open as `fd`."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns({name or fd}): {os.strerror(err)}")


def _name(packet: bytes, at: int) -> tuple[str, int]:
    """The (possibly compressed) name at `at`, and where the field after it starts."""
    labels: list[str] = []
    end = None
    for _ in range(128):
        length = packet[at]
        if length & 0xC0 == 0xC0:
            if end is None:
                end = at + 2
            at = ((length & 0x3F) << 8) | packet[at + 1]
            continue
        if length == 0:
            return ".".join(labels), (end if end is not None else at + 1)
        labels.append(packet[at + 1 : at + 1 + length].decode("ascii", "replace"))
        at += 1 + length
    raise ValueError("a DNS name loops")


def question(packet: bytes) -> tuple[str, int]:
    """The first question's name and type."""
    if len(packet) < 12 or struct.unpack_from(">H", packet, 4)[0] < 1:
        raise ValueError("no question")
    name, at = _name(packet, 12)
    (qtype,) = struct.unpack_from(">H", packet, at)
    return name.lower(), qtype


def answers(packet: bytes) -> list[tuple[str, float]]:
    """The A and AAAA addresses of a response, with their TTLs."""
    qdcount, ancount = struct.unpack_from(">HH", packet, 4)
    at = 12
    for _ in range(qdcount):
        _, at = _name(packet, at)
        at += 4
    found = []
    for _ in range(ancount):
        _, at = _name(packet, at)
        rtype, _rclass, ttl, size = struct.unpack_from(">HHIH", packet, at)
        at += 10
        data = packet[at : at + size]
        at += size
        if rtype == 1 and size == 4:
            found.append((str(ipaddress.IPv4Address(data)), float(ttl)))
        elif rtype == 28 and size == 16:
            found.append((str(ipaddress.IPv6Address(data)), float(ttl)))
    return found


def refused(query: bytes) -> bytes:
    """A REFUSED answer to `query`: its id and question, no records."""
    flags = (struct.unpack_from(">H", query, 2)[0] & 0x0100) | 0x8080 | 5  # QR, RD kept, RA, 5
    _, end = _name(query, 12)
    body = query[12 : end + 4]
    return query[:2] + struct.pack(">HHHHH", flags, 1, 0, 0, 0) + body


def host_resolvers() -> list[str]:
    """The host's name servers, from /etc/resolv.conf."""
    found = []
    try:
        with open("/etc/resolv.conf") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    found.append(parts[1])
    except OSError:
        pass
    return found or ["127.0.0.1"]


class Resolver:
    """Serves DNS for one sandbox from a thread of the supervisor."""

    def __init__(
        self,
        policy: Callable[[], Policy],
        sandbox_netns: str,
        emit: Callable[[dict[str, Any]], None],
    ) -> None:
        self.policy = policy
        self.emit = emit
        self.sock = self._bind(sandbox_netns)

    def _bind(self, netns: str) -> socket.socket:
        made: list[socket.socket | BaseException] = []

        def bind() -> None:  # a thread of its own, so the supervisor's stays where it is
            try:
                enter_netns(netns)
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind(ADDRESS)
                made.append(sock)
            except OSError as e:
                made.append(e)

        thread = threading.Thread(target=bind)
        thread.start()
        thread.join()
        if isinstance(made[0], BaseException):
            raise made[0]
        return made[0]

    def start(self) -> None:
        threading.Thread(target=self._serve, name="resolver", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                query, client = self.sock.recvfrom(4096)
            except OSError:
                return
            threading.Thread(target=self._answer, args=(query, client), daemon=True).start()

    def _answer(self, query: bytes, client: Any) -> None:
        try:
            name, qtype = question(query)
        except (ValueError, struct.error, IndexError):
            return
        policy = self.policy()
        event: dict[str, Any] = {"kind": "dns", "name": name, "type": TYPES.get(qtype, qtype)}
        reply = None
        if policy.name_allowed(name):
            reply = self._forward(query, policy)
        if reply is None:
            event["verdict"] = "refused" if not policy.name_allowed(name) else "failed"
            self.emit(event)
            self.sock.sendto(refused(query), client)
            return
        try:
            event["answers"] = policy.learn(name, answers(reply))
        except (ValueError, struct.error, IndexError):
            event["answers"] = []
        event["verdict"] = "allowed"
        self.emit(event)
        self.sock.sendto(reply, client)

    def _forward(self, query: bytes, policy: Policy) -> bytes | None:
        if policy.via:
            enter_netns(policy.via)  # this thread asks from where connections leave
        for server in policy.resolvers or host_resolvers():
            family = socket.AF_INET6 if ":" in server else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as up:
                up.settimeout(TIMEOUT)
                try:
                    up.sendto(query, (server, 53))
                    reply, _ = up.recvfrom(65535)
                except OSError:
                    continue
                if reply[:2] == query[:2]:
                    return reply
        return None
