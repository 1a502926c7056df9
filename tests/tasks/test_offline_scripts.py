"""Offline rewriting of test scripts: multi-line commands, uvx, pytest plugin flags, the scripts a
test script runs or sources, and the installs and network fetches it asks for.

Plain unit tests: the sandbox is a dict of files and the probe a fake that remembers its calls.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable

import pytest

from rockroll.tasks.offline import (
    Install,
    NetworkStep,
    OfflinePlan,
    Rewrite,
    make_offline,
    make_offline_tree,
)


class Probe:
    """Says every package is present except `missing` (or none at all when `present` is False),
    and remembers what it was asked."""

    def __init__(self, present: bool = True, missing: Iterable[str] = ()) -> None:
        self.present, self.missing = present, set(missing)
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, kind: str, names: list[str]) -> bool:
        self.calls.append((kind, names))
        return self.present and not self.missing & set(names)


def _bash_ok(script: str) -> None:
    res = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def _offline(script: str, probe: Probe) -> tuple[str, list[Rewrite]]:
    """make_offline, with the checks every rewrite must pass: same line count, valid bash."""
    out, rewrites = make_offline(script, probe)
    assert len(out.splitlines()) == len(script.splitlines())
    _bash_ok(out)
    return out, rewrites


def _tree(files: dict[str, str], probe: Probe, env: dict[str, str] | None = None) -> OfflinePlan:
    plan = make_offline_tree("/tests/test.sh", files.get, probe, env or {})
    for path, text in plan.scripts.items():
        assert len(text.splitlines()) == len(files[path].splitlines()), path
        _bash_ok(text)
    return plan


HARBOR = """#!/bin/bash
apt-get update
apt-get install -y curl
curl -LsSf https://astral.sh/uv/0.9.7/install.sh | sh
source $HOME/.local/bin/env
uvx \\
  --with pytest==8.4.1 \\
  --with pytest-json-ctrf==0.3.5 \\
  pytest --ctrf /logs/verifier/ctrf.json /tests/test_a.py -rA \\
  && a=1
echo "a=$a"
"""
HARBOR_UVX = (
    "uvx --with pytest==8.4.1 --with pytest-json-ctrf==0.3.5 "
    "pytest --ctrf /logs/verifier/ctrf.json /tests/test_a.py -rA"
)


def test_harbor_script_with_everything_installed() -> None:
    probe = Probe()
    plan = _tree({"/tests/test.sh": HARBOR}, probe)
    assert plan.entry == "/tests/test.sh.offline"
    assert plan.scripts == {
        "/tests/test.sh": "#!/bin/bash\n"
        ": # offline: package lists not refreshed\n"
        ": # offline: already installed: curl\n"
        ": # offline: installer download skipped\n"
        ": # offline: installer environment not needed\n"
        "python3 -m pytest --ctrf /logs/verifier/ctrf.json /tests/test_a.py -rA \\\n"
        "  && a=1\n"
        "\n\n\n"
        'echo "a=$a"\n'
    }
    # Pins are not names; pytest-json-ctrf is asked for as its module, `ctrf`.
    assert probe.calls == [("apt", ["curl"]), ("python", ["pytest", "ctrf"]), ("python", ["ctrf"])]
    assert [(r.line, r.original) for r in plan.rewrites] == [
        (2, "apt-get update"),
        (3, "apt-get install -y curl"),
        (4, "curl -LsSf https://astral.sh/uv/0.9.7/install.sh | sh"),
        (5, "source $HOME/.local/bin/env"),
        (6, HARBOR_UVX),
    ]
    assert "(found: pytest pytest-json-ctrf)" in plan.rewrites[-1].why
    assert str(plan.rewrites[0]).startswith("line 2: 'apt-get update' -> ")
    assert all(r.path == "/tests/test.sh" and not r.child for r in plan.rewrites)
    assert plan.installs == [
        Install("apt", ["curl"], None, "apt-get install -y curl", "/tests/test.sh", 3),
        Install(
            "python",
            ["pytest==8.4.1", "pytest-json-ctrf==0.3.5"],
            None,
            HARBOR_UVX,
            "/tests/test.sh",
            6,
        ),
    ]
    assert plan.network == []  # the installer is dropped, not left to fetch


def test_harbor_script_with_nothing_installed() -> None:
    plan = _tree({"/tests/test.sh": HARBOR}, Probe(present=False))
    lines = plan.scripts["/tests/test.sh"].splitlines()
    assert lines[2] == "apt-get install -y curl"  # kept: offline it fails for real
    assert lines[5:10] == ["python3 -m pytest /tests/test_a.py -rA \\", "  && a=1", "", "", ""]
    assert [(r.line, r.replacement) for r in plan.rewrites[-2:]] == [
        (6, "python3 -m pytest --ctrf /logs/verifier/ctrf.json /tests/test_a.py -rA"),
        (6, "python3 -m pytest /tests/test_a.py -rA"),
    ]
    assert "(not all found: pytest pytest-json-ctrf)" in plan.rewrites[-2].why
    assert plan.rewrites[-1].why == (
        "pytest-json-ctrf is not installed: --ctrf /logs/verifier/ctrf.json dropped, "
        "its report is not written"
    )
    assert len(plan.installs) == 2  # listed whether or not the image has them


def test_continued_commands_keep_the_rest_of_the_line() -> None:
    script = (
        "pip install \\\n"
        "    pytest \\\n"
        "    requests || true\n"
        "uv run \\\n"
        "  pytest -q ; echo done\n"
        "apt-get update && \\\n"
        "  apt-get install -y curl && \\\n"
        "  echo ok  # set up\n"
        "if apt-get update; then echo fresh; fi\n"
    )
    probe = Probe()
    out, rewrites = _offline(script, probe)
    assert out == (
        ": || true # offline: already installed: pytest requests\n"
        "\n\n"
        "python3 -m pytest -q ; echo done\n"
        "\n"
        ": && \\\n"
        "  : && \\\n"
        "  echo ok  # set up # offline: package lists not refreshed; already installed: curl\n"
        "if :; then echo fresh; fi # offline: package lists not refreshed\n"
    )
    assert [(r.line, r.original, r.replacement) for r in rewrites] == [
        (1, "pip install pytest requests", ":"),
        (4, "uv run pytest -q", "python3 -m pytest -q"),
        (6, "apt-get update", ":"),
        (6, "apt-get install -y curl", ":"),
        (9, "apt-get update", ":"),
    ]
    assert probe.calls == [("python", ["pytest", "requests"]), ("apt", ["curl"])]


def test_uvx_forms() -> None:
    script = (
        "uvx ruff@0.6.0 check .\n"
        "uv tool run --from httpie http GET example.org\n"
        "uvx --python 3.12 --with numpy python -c 'print(1)'\n"
        "uvx --with=pytest-timeout,pytest-cov py.test -x\n"
    )
    probe = Probe(missing={"numpy"})
    out, rewrites = _offline(script, probe)
    assert out == (
        "ruff check .\nhttp GET example.org\npython3 -c 'print(1)'\npython3 -m pytest -x\n"
    )
    assert probe.calls == [
        ("python", ["ruff"]),
        ("python", ["httpie"]),
        ("python", ["numpy"]),
        ("python", ["pytest-timeout", "pytest-cov", "pytest"]),
    ]
    assert [r.why.rpartition("(")[2] for r in rewrites] == [
        "found: ruff)",
        "found: httpie)",
        "not all found: numpy)",
        "found: pytest-timeout pytest-cov pytest)",
    ]
    plan = make_offline_tree("/t.sh", {"/t.sh": script}.get, Probe())
    assert [i.packages for i in plan.installs] == [
        ["ruff@0.6.0"],
        ["httpie"],
        ["numpy"],
        ["pytest-timeout", "pytest-cov", "pytest"],
    ]


PYTEST_FLAGS = (
    "pytest --ctrf r.json --json-report --json-report-file=/tmp/j.json --cov --cov-report term "
    "--html=report.html --timeout 30 tests/"
)


def test_plugin_flags_dropped_when_the_plugin_is_missing() -> None:
    probe = Probe(present=False)
    out, rewrites = _offline(PYTEST_FLAGS + "\n", probe)
    assert out == "pytest tests/\n"
    assert [r.why.split(" is not installed: ")[0] for r in rewrites] == [
        "pytest-json-ctrf",
        "pytest-json-report",
        "pytest-json-report",
        "pytest-cov",
        "pytest-cov",
        "pytest-html",
        "pytest-timeout",
    ]
    assert rewrites[0].replacement == PYTEST_FLAGS.replace("--ctrf r.json ", "")
    assert (
        rewrites[-1].why
        == "pytest-timeout is not installed: --timeout 30 dropped, tests run untimed"
    )
    modules = ["ctrf", "pytest_jsonreport", "pytest_cov", "pytest_html", "pytest_timeout"]
    assert probe.calls == [("python", [m]) for m in modules]


def test_plugin_flags_kept_when_the_plugin_is_present() -> None:
    script = PYTEST_FLAGS + "\npython3 -m pytest --cov src --timeout=5 -q\n"
    out, rewrites = _offline(script, Probe(missing={"pytest_timeout"}))
    assert out == PYTEST_FLAGS.replace(" --timeout 30", "") + "\npython3 -m pytest --cov src -q\n"
    assert [r.line for r in rewrites] == [1, 2]
    # Not pytest: the same flags are another program's.
    script = "mytool --timeout 30 --cov x\necho --ctrf f\n"
    probe = Probe(present=False)
    assert _offline(script, probe) == (script, [])
    assert probe.calls == []


def test_uv_run_pytest_loses_a_missing_plugin_flag() -> None:
    out, rewrites = _offline("uv run pytest --ctrf x.json t.py && ok=1\n", Probe(missing={"ctrf"}))
    assert out == "python3 -m pytest t.py && ok=1\n"
    assert [r.replacement for r in rewrites] == ["python3 -m pytest --ctrf x.json t.py", out[:-9]]


STRICT = """#!/bin/bash
set -euo pipefail
source "$(dirname "$0")/setup.sh"
bash "$TEST_DIR/helper.sh"
python3 -m pytest /tests -rA
"""


def test_a_sourced_script_that_changes_gets_an_offline_copy() -> None:
    files = {
        "/tests/test.sh": STRICT,
        "/tests/setup.sh": "apt-get update\nexport READY=1\n",
        "/tests/helper.sh": "echo helper\n",
    }
    plan = _tree(files, Probe(), {"TEST_DIR": "/tests"})
    assert plan.entry == "/tests/test.sh.offline"
    assert plan.scripts == {
        "/tests/setup.sh": ": # offline: package lists not refreshed\nexport READY=1\n",
        "/tests/test.sh": STRICT.replace("setup.sh", "setup.sh.offline"),
    }
    assert [(r.path, r.line, r.child) for r in plan.rewrites] == [
        ("/tests/setup.sh", 1, True),
        ("/tests/test.sh", 3, False),
    ]
    assert str(plan.rewrites[0]).startswith("/tests/setup.sh line 1: 'apt-get update' -> ")
    assert plan.rewrites[1].replacement == 'source "$(dirname "$0")/setup.sh.offline"'
    assert "setup.sh is rewritten too" in plan.rewrites[1].why


def test_scripts_that_need_no_change_are_left_alone() -> None:
    files = {"/tests/test.sh": STRICT, "/tests/setup.sh": "export A=1\n"}
    files["/tests/helper.sh"] = "echo helper\n"
    probe = Probe()
    plan = _tree(files, probe, {"TEST_DIR": "/tests"})
    assert plan == OfflinePlan({}, [], "/tests/test.sh", [], [])
    assert probe.calls == []
    assert make_offline_tree("/nowhere.sh", files.get, probe) == OfflinePlan(
        {}, [], "/nowhere.sh", [], []
    )


def test_paths_from_variables_assignments_and_direct_runs() -> None:
    files = {
        "/tests/test.sh": (
            'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"\n'
            'source "$HERE/lib.sh"\n'
            "bash -e ${TEST_DIR}/b.sh arg\n"
            "./c.sh\n"
            "sh -c 'bash /tests/b.sh'\n"
        ),
        "/tests/lib.sh": "pip install pytest\n",
        "/tests/b.sh": "uv run pytest\n",
        "/tests/c.sh": "#!/bin/sh\nuv sync\n",
    }
    plan = _tree(files, Probe(), {"TEST_DIR": "/tests"})
    assert plan.scripts["/tests/test.sh"] == (
        'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"\n'
        'source "$HERE/lib.sh.offline"\n'
        "bash -e ${TEST_DIR}/b.sh.offline arg\n"
        "sh ./c.sh.offline\n"  # the copy is not executable: run with the shell its #! names
        "sh -c 'bash /tests/b.sh'\n"  # a command string is not followed
    )
    assert sorted(plan.scripts) == ["/tests/b.sh", "/tests/c.sh", "/tests/lib.sh", "/tests/test.sh"]


def test_cycles_are_followed_once_and_settle() -> None:
    files = {
        "/tests/test.sh": "source /tests/a.sh\n",
        "/tests/a.sh": "source /tests/b.sh\necho a\n",
        "/tests/b.sh": "source /tests/a.sh\napt-get update\n",
    }
    plan = _tree(files, Probe())
    assert plan.scripts == {
        "/tests/b.sh": "source /tests/a.sh.offline\n: # offline: package lists not refreshed\n",
        "/tests/a.sh": "source /tests/b.sh.offline\necho a\n",
        "/tests/test.sh": "source /tests/a.sh.offline\n",
    }
    assert plan.entry == "/tests/test.sh.offline"
    assert [(r.path, r.line) for r in plan.rewrites] == [
        ("/tests/b.sh", 1),
        ("/tests/b.sh", 2),
        ("/tests/a.sh", 1),
        ("/tests/test.sh", 1),
    ]
    files["/tests/b.sh"] = "source /tests/a.sh\n"  # a cycle with nothing to change
    assert _tree(files, Probe()).scripts == {}


def test_depth_is_limited() -> None:
    files = {"/tests/test.sh": "bash /tests/s1.sh\n"}
    files |= {f"/tests/s{n}.sh": f"bash /tests/s{n + 1}.sh\n" for n in range(1, 8)}
    for n in range(1, 9):
        files[f"/tests/s{n}.sh"] = files.get(f"/tests/s{n}.sh", "") + "apt-get update\n"
    plan = _tree(files, Probe())
    assert sorted(plan.scripts) == [f"/tests/s{n}.sh" for n in range(1, 6)] + ["/tests/test.sh"]
    assert plan.scripts["/tests/s5.sh"].startswith("bash /tests/s6.sh\n")  # not followed


NETWORK = """#!/bin/bash
git clone https://github.com/example/repo.git /tmp/repo
git clone /app /tmp/copy
curl -fsSL -o /tmp/data.tgz https://example.com/data.tgz
curl -s http://localhost:8000/health
wget -q https://example.com/file.txt
wget -qO- https://example.com/get.sh | bash
pip install git+https://github.com/example/pkg.git@main
cd /app/web && npm ci
npm --prefix /srv/ui install left-pad
go mod download
cargo fetch
mvn -q dependency:go-offline
echo https://example.com
"""


def test_network_steps_are_listed_with_their_url() -> None:
    plan = _tree({"/tests/test.sh": NETWORK}, Probe())
    lines = NETWORK.splitlines()
    assert [(n.line, n.url) for n in plan.network] == [
        (2, "https://github.com/example/repo.git"),
        (4, "https://example.com/data.tgz"),
        (6, "https://example.com/file.txt"),
        (8, "git+https://github.com/example/pkg.git@main"),
        (9, None),
        (10, None),
        (11, None),
        (12, None),
        (13, None),
    ]
    assert [n.command for n in plan.network][:3] == [lines[1], lines[3], lines[5]]
    assert plan.network[4] == NetworkStep("npm ci", None, "/tests/test.sh", 9)
    # The installer piped to bash is dropped; the rest of the script is unchanged.
    assert [r.line for r in plan.rewrites] == [7]


def test_installs_are_listed_in_order_across_scripts() -> None:
    files = {
        "/tests/test.sh": (
            "apt-get install -y --no-install-recommends git=1:2.39 curl\n"
            "source /tests/setup.sh\n"
            "python3 -m pip install 'requests>=2' -r reqs.txt\n"
            "cd /app/web && npm ci\n"
            "npm install -g typescript\n"
        ),
        "/tests/setup.sh": "uv add pytest==8.4.1\nuv pip install -e .\n",
        "/tests/reqs.txt": "numpy\n",
    }
    plan = _tree(files, Probe(missing={"numpy"}))
    assert [(i.kind, i.packages, i.requirements, i.path, i.line) for i in plan.installs] == [
        ("apt", ["git=1:2.39", "curl"], None, "/tests/test.sh", 1),
        ("python", ["pytest==8.4.1"], None, "/tests/setup.sh", 1),
        ("python", ["."], None, "/tests/setup.sh", 2),
        ("python", ["requests>=2"], "/tests/reqs.txt", "/tests/test.sh", 3),
        ("npm", [], None, "/tests/test.sh", 4),
        ("npm", ["typescript"], None, "/tests/test.sh", 5),
    ]
    assert [i.directory for i in plan.installs] == [None] * 4 + ["/app/web", None]
    assert plan.installs[3].command == "python3 -m pip install 'requests>=2' -r reqs.txt"


REQUIREMENTS = """# test dependencies
pytest==8.4.1  # pinned
requests[socks]>=2.31 ; python_version >= "3.8"
--index-url https://pypi.org/simple
PyYAML
"""


@pytest.mark.parametrize(
    ("requirements", "missing", "dropped", "calls"),
    [
        (REQUIREMENTS, set(), True, [["pytest", "requests", "yaml"]]),
        (REQUIREMENTS, {"yaml"}, False, [["pytest", "requests", "yaml"]]),
        (None, set(), False, []),  # unreadable: nothing to ask
        ("-e ./local\npytest\n", set(), False, []),  # an editable path cannot be asked for
    ],
)
def test_requirements_files(
    requirements: str | None, missing: set[str], dropped: bool, calls: list[list[str]]
) -> None:
    files = {"/tests/test.sh": "pip install -q -r requirements.txt\npytest -rA\n"}
    if requirements is not None:
        files["/tests/requirements.txt"] = requirements
    probe = Probe(missing=missing)
    plan = _tree(files, probe)
    assert probe.calls == [("python", c) for c in calls]
    if dropped:
        assert plan.scripts["/tests/test.sh"] == (
            ": # offline: already installed: pytest requests PyYAML\npytest -rA\n"
        )
    else:
        assert plan.scripts == {}
    assert [i.requirements for i in plan.installs] == ["/tests/requirements.txt"]


def test_here_documents_and_quoted_text_are_not_rewritten() -> None:
    script = (
        "cat > /tmp/setup.sh <<'EOF'\n"
        "apt-get update\n"
        "uv run pytest\n"
        "EOF\n"
        'python3 -c "\n'
        "print('apt-get update')\n"
        '"\n'
        "cat>/tmp/b<<-END\n"
        "\tapt-get update\n"
        "\tEND\n"
        "apt-get update\n"
    )
    out, rewrites = _offline(script, Probe())
    kept = script.splitlines()[:10]
    assert out.splitlines() == [*kept, ": # offline: package lists not refreshed"]
    assert [r.line for r in rewrites] == [11]


def test_a_continued_installer_download_is_dropped() -> None:
    script = "set -e\ncurl -LsSf \\\n  https://astral.sh/uv/install.sh | sh\nuv --version\n"
    out, rewrites = _offline(script, Probe())
    assert out == "set -e\n: # offline: installer download skipped\n\nuv --version\n"
    assert [(r.line, r.original) for r in rewrites] == [
        (2, "curl -LsSf https://astral.sh/uv/install.sh | sh")
    ]
