"""The extra services of a task's `docker-compose.yaml`, and running them beside the agent.

Terminal-Bench and Harbor tasks add services next to the agent's container (a database, an API
server, a DNS sidecar). rockroll runs each as a sandbox of its own, all on one private network
(`rockroll.sandbox.networks`) that only the task's sandboxes share: each reaches the others by
service name (their /etc/hosts says so), nothing reaches the outside, and no sandbox outside the
task reaches them. Services start in `depends_on` order; one with a `healthcheck` is waited for
until it is healthy before what depends on it starts; then the agent's sandbox joins (the
Compose service `main` in Harbor, `client` or the one built from the task folder in
Terminal-Bench 1.0; its settings come from the task as before). Read from Compose: `build`
(context, dockerfile) or `image`, `command`, `entrypoint`, `environment`, `working_dir`,
`healthcheck` (`test`, `interval`, `timeout`, `retries`, `start_period`), `depends_on`, a
network's `ipam` subnet, `networks.*.ipv4_address`, `dns` and `volumes`
(`rockroll.tasks.compose_volumes`). Ports need no mapping: every service is reached at its own
address. A service that never gets healthy raises `ServiceUnhealthy`.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

from rockroll.errors import SandboxError, TaskError
from rockroll.sandbox.dockerfile import unreachable_lines
from rockroll.sandbox.images import Image
from rockroll.sandbox.local import LocalSandbox
from rockroll.sandbox.networks import PrivateNetwork
from rockroll.sandbox.sdk import Sandbox
from rockroll.tasks.compose_volumes import check_shared, read_mounts
from rockroll.tasks.schema import Health, Service

MAIN_NAMES = ("main", "client", "agent")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class ServiceUnhealthy(SandboxError):
    """A service's health check never passed; `unreached`: lines of its check or log saying
    that a host could not be reached (the service needs the internet, as under Docker)."""

    def __init__(self, message: str, unreached: list[str]) -> None:
        super().__init__(message)
        self.unreached = unreached


def compose_files(folder: Path) -> list[Path]:
    """The Compose files of a folder, in the order Compose looks for them."""
    names = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
    return [folder / n for n in names if (folder / n).is_file()]


def compose_settings(folder: Path, task_id: str, main_context: Path) -> dict:
    """`Environment` fields from the folder's Compose file: services, main, subnet ({} when
    there is no file, or when it adds no service)."""
    files = compose_files(folder)
    if not files:
        return {}
    services, main, subnet = load_services(files[0], task_id, main_context)
    return {"services": services, "main": main, "subnet": subnet} if services else {}


def load_services(
    compose: Path, task_id: str, main_context: Path
) -> tuple[list[Service], Service | None, str | None]:
    """The extra services of a compose file (in start order), the agent's own entry (for its
    address and dns), and the subnet of the network Compose names, if it names one."""
    try:
        data = yaml.safe_load(compose.read_text()) or {}
    except yaml.YAMLError as exc:
        raise TaskError(task_id, "invalid-task", f"{compose} is not valid YAML: {exc}") from None
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict):
        raise TaskError(task_id, "invalid-task", f"{compose}: no `services` mapping")
    main = _main_name(services, compose.parent, main_context)
    extra = [
        _service(name, spec or {}, compose, task_id)
        for name, spec in services.items()
        if name != main
    ]
    entry = services.get(main) if main else None
    agent = None
    uses = {s.name: s.volumes for s in extra}
    if isinstance(entry, dict):
        where = f"{compose}: services.{main}"
        mounts = read_mounts(entry, compose, where, task_id)
        uses[str(main)] = mounts.named
        agent = Service(
            name="main",
            image="main",
            address=_address(entry),
            dns=_dns(entry, where, task_id),
            files=mounts.files,
            skipped=mounts.skipped,
        )
    check_shared(uses, compose, task_id)
    return _ordered(extra, compose, task_id), agent, _subnet(data.get("networks"))


def _address(spec: dict) -> str | None:
    """The first `ipv4_address` among a service's networks."""
    networks = spec.get("networks")
    if isinstance(networks, dict):
        for value in networks.values():
            if isinstance(value, dict) and value.get("ipv4_address"):
                return str(value["ipv4_address"])
    return None


def _dns(spec: dict, where: str, task_id: str) -> list[str]:
    value = spec.get("dns")
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    raise TaskError(task_id, "invalid-task", f"{where}.dns must be an address or a list")


def _subnet(networks: object) -> str | None:
    """The subnet of the first network whose ipam config names one."""
    if not isinstance(networks, dict):
        return None
    for value in networks.values():
        configs = (
            ((value or {}).get("ipam") or {}).get("config") if isinstance(value, dict) else None
        )
        for config in configs or []:
            if isinstance(config, dict) and config.get("subnet"):
                return str(config["subnet"])
    return None


def _main_name(services: dict, folder: Path, main_context: Path) -> str | None:
    for name in MAIN_NAMES:
        if name in services:
            return name
    for name, spec in services.items():
        build = (spec or {}).get("build") if isinstance(spec, dict) else None
        context = build.get("context", ".") if isinstance(build, dict) else build
        if isinstance(context, str) and (folder / context).resolve() == main_context.resolve():
            return name
    return None


def _service(name: str, spec: dict, compose: Path, task_id: str) -> Service:
    where = f"{compose}: services.{name}"
    if not isinstance(spec, dict):
        raise TaskError(task_id, "invalid-task", f"{where} must be a mapping")
    build, dockerfile, context = spec.get("build"), None, None
    if build is not None:
        build = {"context": build} if isinstance(build, str) else build
        context = (compose.parent / str(build.get("context", "."))).resolve()
        dockerfile = context / str(build.get("dockerfile", "Dockerfile"))
    elif not spec.get("image"):
        raise TaskError(task_id, "invalid-task", f"{where} needs `build` or `image`")
    entry, command = _argv(spec.get("entrypoint")), _argv(spec.get("command"))
    depends = spec.get("depends_on") or []
    mounts = read_mounts(spec, compose, where, task_id)
    return Service(
        name=name,
        dockerfile=dockerfile,
        context=context,
        image=spec.get("image"),
        command=entry + command if entry else command,
        env=_environment(spec.get("environment"), where, task_id),
        workdir=spec.get("working_dir"),
        health=_health(spec.get("healthcheck"), where, task_id),
        depends_on=[str(d) for d in depends],  # a list, or a mapping of conditions
        address=_address(spec),
        dns=_dns(spec, where, task_id),
        files=mounts.files,
        volumes=mounts.named,
        skipped=mounts.skipped,
    )


def _argv(value: object) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]  # type: ignore[union-attr]


def _environment(value: object, where: str, task_id: str) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    if isinstance(value, list):
        return dict(str(item).partition("=")[::2] for item in value)  # type: ignore[misc]
    raise TaskError(task_id, "invalid-task", f"{where}.environment must be a mapping or a list")


def _health(value: object, where: str, task_id: str) -> Health | None:
    if not isinstance(value, dict) or value.get("disable"):
        return None
    test = value.get("test")
    if isinstance(test, str):
        argv = ["sh", "-c", test]
    elif isinstance(test, list) and test and test[0] == "CMD-SHELL":
        argv = ["sh", "-c", " ".join(map(str, test[1:]))]
    elif isinstance(test, list) and test and test[0] == "CMD":
        argv = [str(t) for t in test[1:]]
    elif isinstance(test, list) and test and test[0] == "NONE":
        return None
    else:
        raise TaskError(task_id, "invalid-task", f"{where}.healthcheck.test is not understood")
    return Health(
        test=argv,
        interval=_seconds(value.get("interval", "30s")),
        timeout=_seconds(value.get("timeout", "30s")),
        retries=int(value.get("retries", 3)),
        start_period=_seconds(value.get("start_period", "0s")),
    )


def _seconds(value: object) -> float:
    if isinstance(value, int | float):
        return float(value)
    parts = _DURATION.findall(str(value))
    return sum(float(n) * _UNITS[u] for n, u in parts) if parts else 30.0


def _ordered(services: list[Service], compose: Path, task_id: str) -> list[Service]:
    """Dependencies first; a cycle or an unknown name is the task's fault."""
    by_name = {s.name: s for s in services}
    done: list[Service] = []
    visiting: set[str] = set()

    def visit(s: Service) -> None:
        if s in done:
            return
        if s.name in visiting:
            raise TaskError(task_id, "invalid-task", f"{compose}: depends_on cycle at {s.name}")
        visiting.add(s.name)
        for dep in s.depends_on:
            if dep in by_name:
                visit(by_name[dep])
        visiting.discard(s.name)
        done.append(s)

    for s in services:
        visit(s)
    return done


@contextlib.contextmanager
def running_services(
    services: list[Service],
    images: dict[str, Image],
    open_main: Callable[[], Sandbox],
    log: Callable[[str], None] = lambda s: None,
    main: Service | None = None,
    subnet: str | None = None,
) -> Iterator[Sandbox]:
    """Start `services` (from `images`: name -> its built image) on a private network (`subnet`,
    or the default one), then the main sandbox; yield the main sandbox; on exit stop
    everything. Fixed addresses are kept; the others are handed out in order."""
    with contextlib.ExitStack() as stack:
        network = stack.enter_context(PrivateNetwork(subnet) if subnet else PrivateNetwork())
        agent = main or Service(name="main", image="main")
        everyone = [*services, agent]
        for s in everyone:
            if s.address:
                network.reserve(s.address)
        hosts = {s.name: s.address or network.reserve() for s in everyone}
        for service in services:
            image = images[service.name]
            sb = stack.enter_context(_service_sandbox(image, service))
            network.attach(sb.network_namespace(), hosts[service.name])
            _names(sb, hosts, service.dns)
            _copy_in(sb, service, log)
            _start(sb, service, image.config)
            if service.health is not None:
                _wait_healthy(sb, service, log)
        sandbox = stack.enter_context(open_main())
        if not isinstance(sandbox, LocalSandbox):
            raise SandboxError("multi-container tasks run on this host's sandboxes only")
        network.attach(sandbox.network_namespace(), hosts["main"])
        _names(sandbox, hosts, agent.dns)
        _copy_in(sandbox, agent, log)
        yield sandbox


def _service_sandbox(image: Image, service: Service) -> LocalSandbox:
    defaults = image.defaults()
    sb = Sandbox.create(
        image.name,
        env=defaults["env"] | service.env,
        workdir=service.workdir or defaults["workdir"],
        user=defaults["user"],
    )
    if not isinstance(sb, LocalSandbox):
        sb.close()
        raise SandboxError("multi-container tasks run on this host's sandboxes only")
    return sb


def _names(sb: LocalSandbox, hosts: dict[str, str], dns: list[str]) -> None:
    """Every service by name in /etc/hosts; the name servers Compose gave, if any."""
    lines = "".join(f"{address}\t{name}\n" for name, address in hosts.items())
    sb.write_text("/etc/hosts", "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost\n" + lines)
    if dns:
        sb.write_text("/etc/resolv.conf", "".join(f"nameserver {d}\n" for d in dns))


def _copy_in(sb: LocalSandbox, service: Service, log: Callable[[str], None]) -> None:
    """The task files its Compose volumes bind, copied to where they are mounted."""
    for line in service.skipped:
        log(f"service {service.name}: {line}")
    for target, source in service.files.items():
        sb.exec(["mkdir", "-p", str(Path(target).parent)], user="root")
        sb.upload(source, target)


def _start(sb: LocalSandbox, service: Service, config: dict) -> None:
    """The service's command (else the image's ENTRYPOINT and CMD from `config`), in the
    background: its output in /var/log/rockroll-service.log."""
    argv = service.command or [*config.get("entrypoint", []), *config.get("cmd", [])]
    if not argv:
        raise TaskError(service.name, "invalid-task", "the service has no command to run")
    command = " ".join(shlex.quote(a) for a in argv)
    res = sb.exec(f"setsid sh -c {shlex.quote(command)} > /var/log/rockroll-service.log 2>&1 &")
    if res.exit_code != 0:
        raise SandboxError(f"service {service.name} did not start: {res.output[-500:]}")


def _wait_healthy(sb: LocalSandbox, service: Service, log: Callable[[str], None]) -> None:
    health = service.health
    assert health is not None
    deadline = time.monotonic() + health.start_period + health.interval * (health.retries + 1)
    tries = 0
    while True:
        res = sb.exec(health.test, timeout=health.timeout)
        if res.exit_code == 0:
            log(f"service {service.name} is healthy")
            return
        tries += 1
        if time.monotonic() >= deadline:
            tail = sb.exec(["tail", "-c", "1000", "/var/log/rockroll-service.log"]).output
            raise ServiceUnhealthy(
                f"service {service.name} is not healthy after {tries} checks "
                f"(`{' '.join(health.test)}`: {res.output[-300:]}); its log: {tail}",
                unreachable_lines(res.output + "\n" + tail),
            )
        time.sleep(min(health.interval, 1.0))
