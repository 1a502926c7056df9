"""Egress policies as data: what each kind of entry lets through, deny over allow, ports, and
the resolver's answers (rebinding), without a sandbox."""

from __future__ import annotations

import pytest

from rockroll.sandbox.egress import REGISTRIES, Policy, PolicyError, internal, parse_entry
from rockroll.sandbox.resolver import answers, question, refused


def test_entries_of_every_kind_and_their_ports() -> None:
    assert parse_entry("PyPI.org").domain == "pypi.org"
    assert parse_entry("*.pythonhosted.org").domain == ".pythonhosted.org"
    assert parse_entry("10.0.0.0/8:443").ports == (443, 443)
    assert parse_entry("[2001:db8::1]:8000-8100").ports == (8000, 8100)
    assert parse_entry("*").everything
    for bad in ("http://pypi.org/", "pypi.org:0", "pypi.org:http", "-bad-.org", ""):
        with pytest.raises(PolicyError, match="egress entry"):
            parse_entry(bad)


def test_names_are_allowed_by_their_entries_and_denied_ones_win() -> None:
    policy = Policy.from_setting(
        {"allow": ["*.example.org", "pypi.org:443"], "deny": ["bad.example.org"]}
    )
    assert policy.name_allowed("a.example.org") and policy.name_allowed("PYPI.org.")
    assert not policy.name_allowed("example.org")  # a wildcard covers subdomains only
    assert not policy.name_allowed("bad.example.org")
    assert not policy.name_allowed("evil.test")
    assert policy.learn("pypi.org", [("198.51.100.9", 30)]) == ["198.51.100.9"]
    assert policy.decide("198.51.100.9", 443) == (True, "pypi.org allowed by pypi.org:443")
    assert policy.decide("198.51.100.9", 80)[0] is False
    assert policy.decide("198.51.100.10", 443) == (False, "not resolved through an allowed name")


def test_rebinding_answers_are_not_learned_unless_a_network_entry_names_them() -> None:
    policy = Policy.from_setting({"allow": ["app.test", "10.1.0.0/16"]})
    kept = policy.learn(
        "app.test", [("169.254.169.254", 60), ("127.0.0.1", 60), ("10.1.2.3", 60), ("::1", 60)]
    )
    assert kept == ["10.1.2.3"]
    assert policy.decide("169.254.169.254", 80)[0] is False
    assert policy.decide("10.1.2.3", 80)[0] is True
    assert internal(__import__("ipaddress").ip_address("::ffff:10.0.0.1"))


def test_modes_and_settings() -> None:
    assert Policy.from_setting("none").decide("198.51.100.1", 80) == (False, "network none")
    assert Policy.from_setting("full").decide("198.51.100.1", 80)[0] is True
    registries = Policy.from_setting("registries")
    assert registries.name_allowed("pypi.org") and not registries.name_allowed("github.com")
    assert len(registries.allow) == len(REGISTRIES)
    with pytest.raises(PolicyError, match="unknown field 'via_'"):
        Policy.from_setting({"via_": "x"})
    with pytest.raises(PolicyError, match=r"resolvers: 'dns\.google'"):
        Policy.from_setting({"allow": [], "resolvers": ["dns.google"]})


def test_the_resolver_reads_questions_and_answers_and_refuses() -> None:
    query = bytes.fromhex("abcd01000001000000000000") + b"\x04pypi\x03org\x00\x00\x01\x00\x01"
    assert question(query) == ("pypi.org", 1)
    answer = (
        query[:2] + bytes.fromhex("81800001000100000000") + query[12:]
        + bytes.fromhex("c00c000100010000003c0004c6336409")
    )  # fmt: skip
    assert answers(answer) == [("198.51.100.9", 60.0)]
    no = refused(query)
    assert no[:2] == query[:2] and no[3] & 0x0F == 5 and question(no) == ("pypi.org", 1)
