"""Multi-container tasks: Compose's extra services as sandboxes of their own on a private
network that only the task's sandboxes share."""

from __future__ import annotations

from pathlib import Path

import pytest

from rockroll.errors import TaskError
from rockroll.sandbox import Sandbox
from rockroll.tasks.harbor import load_harbor
from rockroll.tasks.workspace import task_image, task_sandbox
from tests.taskdirs import controls, harbor, terminal_bench, write

SERVER = """\
import http.server
import os


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ["SECRET"].encode() if self.path == "/secret" else b"?"
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)


http.server.HTTPServer(("0.0.0.0", 5000), Handler).serve_forever()
"""
COMPOSE = """\
services:
  main:
    depends_on:
      api:
        condition: service_healthy
  api:
    build:
      context: ./api
    environment:
      SECRET: tulip-{marker}
    healthcheck:
      test:
        - CMD
        - python3
        - -c
        - import socket; socket.create_connection(('localhost', 5000), 2)
      interval: 1s
      retries: 30
"""
FETCH = (
    'python3 -c "import urllib.request as u; '
    "print(u.urlopen('http://{host}:5000/secret', timeout=5).read().decode())\""
)


def _task(root: Path, marker: str) -> Path:
    return harbor(
        root,
        "with-api",
        instruction="Ask the api service for its secret and write it to /app/answer.\n",
        solve=FETCH.format(host="api") + " > /app/answer\n",
        test=(
            f"expected=$({FETCH.format(host='api')})\n"
            'if [ -n "$expected" ] && [ "$(cat /app/answer 2>/dev/null)" = "$expected" ]; '
            "then echo 1 > /logs/verifier/reward.txt; else echo 0 > /logs/verifier/reward.txt; fi\n"
        ),
        dockerfile="FROM python:3.11-slim\nWORKDIR /app\n",
        extra_environment={
            "docker-compose.yaml": COMPOSE.replace("{marker}", marker),
            "api/Dockerfile": (
                "FROM python:3.11-slim\nCOPY server.py /srv/server.py\n"
                'CMD ["python3", "/srv/server.py"]\n'
            ),
            "api/server.py": SERVER,
        },
    )


def test_the_app_reaches_its_service_by_name_and_the_oracle_passes(
    base_image: str, tmp_path: Path
) -> None:
    task = load_harbor(_task(tmp_path, "1"))
    assert [s.name for s in task.environment.services] == ["api"]
    controls(task)


def test_the_service_is_unreachable_from_sandboxes_outside_the_task(
    base_image: str, tmp_path: Path
) -> None:
    task = load_harbor(_task(tmp_path, "2"))
    with task_sandbox(task, task_image(task)) as sb:
        inside = sb.exec(FETCH.format(host="api"), timeout=30)
        assert inside.exit_code == 0 and inside.stdout.strip() == "tulip-2", inside
        address = sb.exec(["getent", "hosts", "api"]).stdout.split()[0]
        with Sandbox.create() as outsider:
            outside = outsider.exec(FETCH.format(host=address), timeout=30)
            assert outside.exit_code != 0 and "unreachable" in outside.output, outside.output
    # and the network went with the task
    with Sandbox.create() as later:
        assert later.exec(FETCH.format(host=address), timeout=30).exit_code != 0


def test_a_depends_on_cycle_is_the_tasks_fault(tmp_path: Path) -> None:
    root = _task(tmp_path, "3")
    (root / "environment" / "docker-compose.yaml").write_text(
        "services:\n  a:\n    image: base\n    depends_on: [b]\n"
        "  b:\n    image: base\n    depends_on: [a]\n"
    )
    with pytest.raises(TaskError, match="depends_on cycle"):
        load_harbor(root)


def test_paths_that_do_not_start_services_refuse_such_a_task(
    base_image: str, tmp_path: Path
) -> None:
    from rockroll.sandbox.images import get_image
    from rockroll.tasks.workspace import open_sandbox

    task = load_harbor(_task(tmp_path, "4"))
    with pytest.raises(TaskError, match="only `rockroll bench run` starts so far"):
        open_sandbox(task, get_image(base_image))


# Terminal-Bench 1.0: the agent's container is the `client` service, built from the task folder;
# the extra service here names its own build context, as such tasks do.
TB_COMPOSE = """\
services:
  client:
    build:
      context: .
    image: ${T_BENCH_TASK_DOCKER_CLIENT_IMAGE_NAME}
    command: ["sh", "-c", "sleep infinity"]
    depends_on: [api]
  api:
    build: ./api
    environment:
      - SECRET=tb-secret
"""
TB_TEST = """\
import urllib.request
from pathlib import Path


def test_answer_is_the_services_secret():
    secret = urllib.request.urlopen("http://api:5000/secret", timeout=5).read().decode()
    assert Path("/app/answer").read_text().strip() == secret
"""


def test_a_terminal_bench_task_with_a_service_runs_beside_its_client(
    base_image: str, tmp_path: Path
) -> None:
    from rockroll.tasks.terminal_bench import load_terminal_bench

    root = terminal_bench(
        tmp_path,
        "tb-with-api",
        run_tests="cd /app && python3 -m pytest $TEST_DIR/test_outputs.py -rA\n",
        tests={"test_outputs.py": TB_TEST},
        solution="for i in $(seq 50); do "
        + FETCH.format(host="api")
        + " > /app/answer && break; sleep 0.2; done\n",
    )
    write(root / "docker-compose.yaml", TB_COMPOSE)
    write(
        root / "api" / "Dockerfile",
        'FROM python:3.11-slim\nCOPY server.py /srv/server.py\nCMD ["python3", "/srv/server.py"]\n',
    )
    write(root / "api" / "server.py", SERVER)
    task = load_terminal_bench(root)
    assert [s.name for s in task.environment.services] == ["api"]
    controls(task)


# A DNS sidecar at a fixed address on a network Compose names, and the agent's `dns:` pointing
# at it (the shape of Harbor's sidecar-dns recipe; our own resolver, a few lines of Python).
RESOLVER = """\
import socket
import sys

if "--check" in sys.argv:  # the health check: ask for the name, expect the answer
    q = b"\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00"
    q += b"\\x05vault\\x08internal\\x00\\x00\\x01\\x00\\x01"
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(2)
    c.sendto(q, ("127.0.0.1", 53))
    sys.exit(0 if c.recv(512)[-4:] == bytes([10, 0, 0, 99]) else 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 53))
while True:
    query, peer = s.recvfrom(512)
    end = query.index(b"\\x00", 12) + 5  # the question: labels, 0, type, class
    name = query[12 : end - 4]
    known = name == b"\\x05vault\\x08internal\\x00" and query[end - 4 : end - 2] == b"\\x00\\x01"
    flags, answers = (b"\\x81\\x80", b"\\x00\\x01") if known else (b"\\x81\\x83", b"\\x00\\x00")
    reply = query[:2] + flags + b"\\x00\\x01" + answers + b"\\x00\\x00\\x00\\x00" + query[12:end]
    if known:
        reply += b"\\xc0\\x0c\\x00\\x01\\x00\\x01\\x00\\x00\\x00\\x3c\\x00\\x04"
        reply += bytes([10, 0, 0, 99])
    s.sendto(reply, peer)
"""
DNS_COMPOSE = """\
services:
  main:
    dns:
      - "10.0.0.53"
    depends_on:
      resolver:
        condition: service_healthy
    networks:
      tasknet:
  resolver:
    build:
      context: ./resolver
    networks:
      tasknet:
        ipv4_address: 10.0.0.53
    healthcheck:
      test: ["CMD", "python3", "/srv/dns.py", "--check"]
      interval: 1s
      retries: 30
networks:
  tasknet:
    driver: bridge
    ipam:
      config:
        - subnet: 10.0.0.0/24
"""


def test_a_dns_sidecar_at_a_fixed_address_answers_the_agent(
    base_image: str, tmp_path: Path
) -> None:
    root = harbor(
        tmp_path,
        "sidecar",
        instruction="Find the address of vault.internal and write it to /app/answer.\n",
        solve="getent hosts vault.internal | cut -d' ' -f1 > /app/answer\n",
        test=(
            'if [ "$(cat /app/answer 2>/dev/null)" = 10.0.0.99 ] && '
            '[ "$(getent hosts vault.internal | cut -d" " -f1)" = 10.0.0.99 ]; '
            "then echo 1 > /logs/verifier/reward.txt; else echo 0 > /logs/verifier/reward.txt; fi\n"
        ),
        dockerfile="FROM python:3.11-slim\nWORKDIR /app\n",
        extra_environment={
            "docker-compose.yaml": DNS_COMPOSE,
            "resolver/Dockerfile": (
                'FROM python:3.11-slim\nCOPY dns.py /srv/dns.py\nCMD ["python3", "/srv/dns.py"]\n'
            ),
            "resolver/dns.py": RESOLVER,
        },
    )
    task = load_harbor(root)
    assert task.environment.subnet == "10.0.0.0/24"
    assert task.environment.services[0].address == "10.0.0.53"
    assert task.environment.main is not None and task.environment.main.dns == ["10.0.0.53"]
    controls(task)
