"""Test-time installs and downloads, as real Harbor / Terminal-Bench test scripts do them: the
verifier-preparation layer installs them with the build network, the tests then run offline;
what no layer can serve ends `needs-network`, naming the URL."""

from __future__ import annotations

import json
from pathlib import Path

from rockroll.bench.agents import NoopAgent, OracleAgent
from rockroll.bench.runner import TaskResult, run_task
from rockroll.sandbox import Sandbox
from rockroll.tasks.harbor import load_harbor
from rockroll.tasks.workspace import task_image
from tests.taskdirs import harbor

PYTEST_FILE = """\
from pathlib import Path


def test_done():
    assert Path("/app/done").read_text().strip() == "yes"
"""
# The shape of many public Harbor test scripts: refresh apt, install curl, fetch uv with it,
# then run pytest with a pinned version and a report plugin through uvx, over several lines.
UVX_TEST = """\
#!/bin/bash
apt-get update
apt-get install -y curl
curl -LsSf https://astral.sh/uv/0.9.7/install.sh | sh
source $HOME/.local/bin/env
ok=0
uvx \\
  --with pytest==8.3.4 \\
  --with pytest-json-ctrf==0.3.5 \\
  pytest --ctrf /logs/verifier/ctrf.json /tests/test_outputs.py -rA \\
  && ok=1
echo $ok > /logs/verifier/reward.txt
"""


def both(task: Path) -> tuple[TaskResult, TaskResult]:
    loaded = load_harbor(task)
    return run_task(loaded, OracleAgent()), run_task(loaded, NoopAgent())


def test_uvx_with_pinned_pytest_and_a_report_plugin_runs_offline(
    base_image: str, tmp_path: Path
) -> None:
    task = harbor(
        tmp_path,
        "uvx-ctrf",
        test=UVX_TEST,
        extra_tests={"test_outputs.py": PYTEST_FILE},
        dockerfile="FROM python:3.11-slim\nWORKDIR /app\n",
    )
    oracle, noop = both(task)
    assert oracle.passed, (oracle.reason, oracle.verifier_tail, oracle.offline)
    assert not noop.passed and noop.reason == "tests-failed", noop
    rewritten = "\n".join(oracle.offline)
    assert "python3 -m pytest --ctrf /logs/verifier/ctrf.json" in rewritten, rewritten
    assert "apt-get update" in rewritten and "install.sh" in rewritten
    # the layer was built once; a second look builds nothing
    log: list[str] = []
    again = task_image(load_harbor(task), log.append)
    assert not [line for line in log if line.startswith("built ")], log
    assert again.name == task_image(load_harbor(task)).name


def test_requirements_of_the_tests_are_installed_but_the_tests_are_not_in_the_layer(
    base_image: str, tmp_path: Path
) -> None:
    test = (
        "set -e\n"
        'pip install -r "$(dirname "$0")/requirements.txt"\n'
        "python3 -c 'import iniconfig' && grep -q yes /app/done 2>/dev/null "
        "&& echo 1 > /logs/verifier/reward.txt || echo 0 > /logs/verifier/reward.txt\n"
    )
    task = harbor(
        tmp_path,
        "requirements",
        test=test,
        extra_tests={"requirements.txt": "# what the tests need\niniconfig==2.0.0\n"},
        dockerfile="FROM python:3.11-slim\n",
    )
    oracle, noop = both(task)
    assert oracle.passed, (oracle.reason, oracle.verifier_tail, oracle.offline)
    assert not noop.passed and noop.reason == "tests-failed"
    with Sandbox.create(task_image(load_harbor(task)).name) as sb:
        assert not sb.exists("/tests"), "the layer must not hold the tests"
        assert sb.exec(["python3", "-c", "import iniconfig"]).exit_code == 0


def test_a_download_no_layer_can_serve_is_needs_network_with_its_url(
    base_image: str, tmp_path: Path
) -> None:
    test = (
        "git clone https://example.invalid/upstream/fixtures.git /tmp/fixtures || exit 1\n"
        "echo 1 > /logs/verifier/reward.txt\n"
    )
    task = harbor(tmp_path, "needs-network", test=test)
    oracle, _ = both(task)
    assert oracle.reason == "needs-network", oracle
    assert oracle.network and "https://example.invalid/upstream/fixtures.git" in oracle.network[0]
    assert "needs the network: https://example.invalid/upstream/fixtures.git" in (
        oracle.verifier_tail
    )


def test_a_sourced_helper_under_set_e_is_rewritten_too(base_image: str, tmp_path: Path) -> None:
    test = (
        "#!/bin/bash\nset -euo pipefail\n"
        'source "$(dirname "$0")/setup.sh"\n'
        "grep -q yes /app/done && echo 1 > /logs/verifier/reward.txt "
        "|| echo 0 > /logs/verifier/reward.txt\n"
    )
    helper = "apt-get update\napt-get install -y --no-install-recommends jq\njq --version\n"
    task = harbor(tmp_path, "sourced-helper", test=test, extra_tests={"setup.sh": helper})
    oracle, noop = both(task)
    assert oracle.passed, (oracle.reason, oracle.verifier_tail, oracle.offline)
    assert not noop.passed and noop.reason == "tests-failed"
    assert any("setup.sh" in line and "apt-get update" in line for line in oracle.offline)


def test_results_carry_the_network_steps(base_image: str, tmp_path: Path) -> None:
    from rockroll.bench.runner import run_suite
    from rockroll.tasks.suites import load_suite

    test = "wget -q https://example.invalid/data.csv -O /tmp/d.csv || exit 1\n"
    harbor(tmp_path / "suite", "fetches", test=test)
    run_suite(load_suite(str(tmp_path / "suite")), OracleAgent(), tmp_path / "out")
    (row,) = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert row["reason"] == "needs-network" and "example.invalid/data.csv" in row["network"][0]


def test_a_build_that_cannot_reach_its_download_host_is_needs_network(
    base_image: str, tmp_path: Path
) -> None:
    """The build has the host's network; a host it cannot reach is a network the task needs.
    The step's resolver fails every name itself, so no query leaves the machine."""
    fetch = (
        'python3 -c "import socket, urllib.request as u; '
        "socket.getaddrinfo = lambda *a, **k: (_ for _ in ()).throw("
        "socket.gaierror(-2, 'Name or service not known')); "
        "u.urlopen('https://downloads.example.invalid/tool.zip')\""
    )
    task = harbor(tmp_path, "build-download", dockerfile=f"FROM {base_image}\nRUN {fetch}\n")
    result = run_task(load_harbor(task), OracleAgent())
    assert result.reason == "needs-network", result
    assert "Name or service not known" in (result.error or "")


def test_a_download_that_failed_quietly_makes_the_later_failure_needs_network(
    base_image: str, tmp_path: Path
) -> None:
    """`curl -sSf URL | sh` succeeds when curl cannot resolve the host (sh runs nothing); the
    step that needed what it would have installed fails later. The unreachable host is what the
    task lacks, also when the quiet step's layer comes from the cache on a second run."""
    fetch = (
        'python3 -c "import socket, urllib.request as u; '
        "socket.getaddrinfo = lambda *a, **k: (_ for _ in ()).throw("
        "socket.gaierror(-2, 'Name or service not known')); "
        "u.urlopen('https://tools.example.invalid/install.sh')\" | sh"
    )
    dockerfile = f"FROM {base_image}\nRUN {fetch}\nRUN mytool --version\n"
    task = harbor(tmp_path, "quiet-download", dockerfile=dockerfile)
    for _ in range(2):
        result = run_task(load_harbor(task), OracleAgent())
        assert result.reason == "needs-network", result
        assert "earlier step could not download" in (result.error or ""), result.error
        assert "Name or service not known" in (result.error or "")
    broken = harbor(tmp_path / "b", "broken", dockerfile=f"FROM {base_image}\nRUN mytool -V\n")
    assert run_task(load_harbor(broken), OracleAgent()).reason == "build-failed"
