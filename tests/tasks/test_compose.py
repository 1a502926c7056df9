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
API_HEALTH = """\
    healthcheck:
      test:
        - CMD
        - python3
        - -c
        - import socket; socket.create_connection(('localhost', 5000), 2)
      interval: 1s
      retries: 30
"""
COMPOSE = (
    """\
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
"""
    + API_HEALTH
)
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
    with pytest.raises(TaskError, match="`agent run` does not yet"):
        open_sandbox(task, get_image(base_image))


def test_an_environment_starts_the_services_and_stops_them_on_close(
    base_image: str, tmp_path: Path
) -> None:
    from rockroll.envs.task_env import TaskEnv

    env = TaskEnv(load_harbor(_task(tmp_path, "5")))
    env.reset()
    obs, *_ = env.step({"tool": "bash", "command": FETCH.format(host="api")})
    assert "tulip-5" in obs, obs
    assert env.sandbox is not None
    address = env.sandbox.exec(["getent", "hosts", "api"]).stdout.split()[0]
    env.close()
    with Sandbox.create() as later:  # the task's network went with it
        assert later.exec(FETCH.format(host=address), timeout=30).exit_code != 0


VOLUMES = (
    """\
services:
  main:
    volumes:
      - ${T_BENCH_TASK_LOGS_PATH}:${T_BENCH_CONTAINER_LOGS_PATH}
  api:
    build:
      context: ./api
    cap_add: [NET_ADMIN]
    volumes:
      - ./seed/secret.txt:/srv/seed/secret.txt:ro
      - type: volume
        source: cache
        target: /var/cache/api
      - /etc:/host-etc
    command: ["sh", "-c", "SECRET=$(cat /srv/seed/secret.txt) exec python3 /srv/server.py"]
"""
    + API_HEALTH
    + "volumes:\n  cache:\n"
)


def test_volumes_copy_the_tasks_own_files_and_name_what_is_not_mounted(
    base_image: str, tmp_path: Path
) -> None:
    root = _task(tmp_path, "6")
    env_dir = root / "environment"
    (env_dir / "docker-compose.yaml").write_text(VOLUMES)
    write(env_dir / "seed" / "secret.txt", "from-the-seed\n")
    task = load_harbor(root)
    (api,) = task.environment.services
    assert api.volumes == ["cache"] and list(api.files) == ["/srv/seed/secret.txt"]
    log: list[str] = []
    with task_sandbox(task, task_image(task), log.append) as sb:
        got = sb.exec(FETCH.format(host="api"), timeout=30)
        assert got.stdout.strip() == "from-the-seed", got.output
        assert sb.exec("test -e /host-etc").exit_code != 0
    said = "\n".join(log)
    assert "cap_add is not granted" in said and "/etc:/host-etc: not a path inside" in said
    assert "${T_BENCH_TASK_LOGS_PATH}:${T_BENCH_CONTAINER_LOGS_PATH} is the harness's own" in said


def test_a_named_volume_shared_by_two_services_is_refused(tmp_path: Path) -> None:
    root = _task(tmp_path, "7")
    (root / "environment" / "docker-compose.yaml").write_text(
        "services:\n  main:\n    volumes: [data:/data]\n"
        "  api:\n    image: base\n    volumes: ['data:/srv/data']\nvolumes:\n  data:\n"
    )
    with pytest.raises(TaskError, match="share the named volume data") as err:
        load_harbor(root)
    assert err.value.reason == "sandbox-error"


def test_a_service_that_never_gets_healthy_fails_as_compose_would(
    base_image: str, tmp_path: Path
) -> None:
    from rockroll.bench.agents import OracleAgent
    from rockroll.bench.report import fault
    from rockroll.bench.runner import run_task

    root = _task(tmp_path, "8")
    (root / "environment" / "docker-compose.yaml").write_text(
        "services:\n  api:\n    image: base\n    command: [sleep, infinity]\n"
        "    healthcheck:\n      test: [CMD, sh, -c, 'echo not ready; exit 1']\n"
        "      interval: 0.2s\n      retries: 2\n"
    )
    result = run_task(load_harbor(root), OracleAgent())
    assert result.reason == "service-unhealthy" and fault(result) == "task", result
    assert "not ready" in (result.error or "")


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
# at it: the shape of Harbor's sidecar-dns recipe, dnsmasq on Alpine, with our own names.
RESOLVER_DOCKERFILE = """\
FROM alpine:3.20
RUN apk add --no-cache dnsmasq bind-tools
COPY dnsmasq.conf /etc/dnsmasq.conf
EXPOSE 53/udp 53/tcp
CMD ["dnsmasq", "--no-daemon", "--log-queries"]
"""
DNSMASQ_CONF = "no-resolv\nlocal=/internal/\nhost-record=vault.internal,10.0.0.99\n"
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
      test: ["CMD", "nslookup", "vault.internal", "127.0.0.1"]
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
            "resolver/Dockerfile": RESOLVER_DOCKERFILE,
            "resolver/dnsmasq.conf": DNSMASQ_CONF,
        },
    )
    task = load_harbor(root)
    assert task.environment.subnet == "10.0.0.0/24"
    assert task.environment.services[0].address == "10.0.0.53"
    assert task.environment.main is not None and task.environment.main.dns == ["10.0.0.53"]
    controls(task)
