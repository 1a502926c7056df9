"""The sandbox server over loopback HTTP against the same calls made in-process.

    .venv/bin/python benchmarks/service_bench.py [--roundtrips 1000] [--clients 200]
        [--commands 50] [--sandboxes 500] [--create-concurrency 16] [--json out.json]

Starts a real `rockroll serve` (a subprocess, its own state database in a temporary folder,
the default `ROCKROLL_HOME` for images), makes a token, then measures, each first over HTTP
through the SDK (`Sandbox.create(server=..., token=...)`) and then with the same calls on the
local runtime in this process:

1. exec round trip: `sb.exec(["true"])` one after another on one sandbox (after 20 warm-up
   calls); p50 and p99 of the wall time of each call. Target: p50 <= 8 ms over HTTP.
2. sandbox creation: `--sandboxes` sandboxes (memory 256m each), `--create-concurrency`
   creates in flight; the wall time until all are up and the share that succeeded. Target:
   500 in <= 30 s, 100% success.
3. concurrent clients: `--clients` clients, each with its own sandbox from step 2, each running
   `--commands` commands (`true`) one after another, all clients at once (HTTP: asyncio tasks,
   each with its own httpx client and connection; in-process: one thread per client); commands
   per second, errors (a non-2xx answer, a transport error or a non-zero exit; target: zero),
   and the CPU time per command of the server process and of the client side, since both share
   this machine's cores.

Every figure prints with its in-process counterpart and the ratio (HTTP / in-process time, or
in-process / HTTP throughput). Both sides share this machine's cores with the server.
Exits 0: it reports, it does not test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from common import console, cpu_seconds, figures_table, headline, machine, pct

from rockroll import Sandbox
from rockroll.service.store import Store

MEMORY = "256m"


def start_server(db: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(db.with_suffix(".log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "rockroll", "serve", "--port", str(port), "--db", str(db)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the server did not start: {db.with_suffix('.log').read_text()[-2000:]}")


def roundtrips(sb: Sandbox, n: int) -> list[float]:
    for _ in range(20):
        sb.exec(["true"])
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        res = sb.exec(["true"])
        times.append(time.perf_counter() - t0)
        assert res.exit_code == 0, res
    return times


def create_many(n: int, concurrency: int, **where: str) -> tuple[list[Sandbox], int, float]:
    """(sandboxes, failures, seconds) for `n` creates with `concurrency` in flight."""
    made: list[Sandbox] = []
    failures = 0
    lock = threading.Lock()

    def one(_: int) -> None:
        nonlocal failures
        try:
            sb = Sandbox.create(memory=MEMORY, **where)
        except Exception as exc:
            with lock:
                failures += 1
            console.print(f"[red]create failed[/red]: {exc}")
            return
        with lock:
            made.append(sb)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))
    return made, failures, time.perf_counter() - t0


def close_all(sandboxes: list[Sandbox]) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda sb: sb.close(), sandboxes))
    return time.perf_counter() - t0


async def http_clients(url: str, token: str, ids: list[str], commands: int) -> tuple[int, float]:
    """Each client its own httpx.AsyncClient with one connection, as separate processes would
    have (one pool shared by 200 connections costs httpx several ms of CPU per request)."""
    errors = 0
    headers = {"Authorization": f"Bearer {token}"}

    async def one(sandbox_id: str) -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
            for _ in range(commands):
                try:
                    r = await client.post(
                        f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": ["true"]}
                    )
                    if r.status_code != 200 or r.json()["exit_code"] != 0:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in ids))
    return errors, time.perf_counter() - t0


def local_clients(sandboxes: list[Sandbox], commands: int) -> tuple[int, float]:
    errors = 0
    lock = threading.Lock()

    def one(sb: Sandbox) -> None:
        nonlocal errors
        for _ in range(commands):
            try:
                ok = sb.exec(["true"]).exit_code == 0
            except Exception:
                ok = False
            if not ok:
                with lock:
                    errors += 1

    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(sandboxes)) as pool:
        list(pool.map(one, sandboxes))
    return errors, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roundtrips", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--commands", type=int, default=50)
    parser.add_argument("--sandboxes", type=int, default=500)
    parser.add_argument("--create-concurrency", type=int, default=16)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    if args.clients > args.sandboxes:
        parser.error("--clients must not exceed --sandboxes (each client uses one of them)")
    info = machine()
    console.print(headline("rockroll sandbox service", info))
    figures: dict[str, Any] = {"machine": info, "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="rockroll-service-bench-") as tmp:
        db = Path(tmp) / "service.db"
        proc, url = start_server(db)
        token = Store(db).create_token("bench", unlimited=True)[1]  # 500 sandboxes, 200 clients
        remote = {"server": url, "token": token}
        try:
            figures |= measure(args, remote, proc.pid)
        finally:
            proc.terminate()
            proc.wait(60)
    report(figures, args)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


def measure(args: argparse.Namespace, remote: dict[str, str], server_pid: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for side, where in (("http", remote), ("local", {})):
        console.print(f"[bold]{side}[/bold]: round trips")
        with Sandbox.create(memory=MEMORY, **where) as sb:
            times = roundtrips(sb, args.roundtrips)
        out[f"{side}_p50_ms"] = pct(times, 50) * 1000
        out[f"{side}_p99_ms"] = pct(times, 99) * 1000
        console.print(f"  p50 {out[f'{side}_p50_ms']:.2f} ms, p99 {out[f'{side}_p99_ms']:.2f} ms")
        console.print(f"[bold]{side}[/bold]: creating {args.sandboxes} sandboxes")
        made, failures, seconds = create_many(args.sandboxes, args.create_concurrency, **where)
        out[f"{side}_create_s"], out[f"{side}_create_failures"] = seconds, failures
        out[f"{side}_created"] = len(made)
        console.print(f"  {len(made)} up in {seconds:.1f} s, {failures} failed")
        clients = made[: args.clients]
        console.print(f"[bold]{side}[/bold]: {len(clients)} clients x {args.commands} commands")
        cpu0, server0 = cpu_seconds(), cpu_seconds(server_pid)
        if side == "http":
            ids = [sb.id for sb in clients]
            errors, seconds = asyncio.run(
                http_clients(remote["server"], remote["token"], ids, args.commands)
            )
        else:
            errors, seconds = local_clients(clients, args.commands)
        total = len(clients) * args.commands
        out[f"{side}_client_cpu_ms"] = (cpu_seconds() - cpu0) / total * 1000
        if side == "http":
            out["server_cpu_ms"] = (cpu_seconds(server_pid) - server0) / total * 1000
        out[f"{side}_clients_errors"] = errors
        out[f"{side}_clients_cmds_per_s"] = total / seconds
        console.print(
            f"  {total} commands in {seconds:.1f} s ({total / seconds:.0f}/s), {errors} errors"
        )
        out[f"{side}_delete_s"] = close_all(made)
        console.print(f"  deleted in {out[f'{side}_delete_s']:.1f} s")
    return out


def report(f: dict[str, Any], args: argparse.Namespace) -> None:
    rows = [
        (
            "exec round trip p50 (HTTP)",
            f"{f['http_p50_ms']:.2f} ms",
            "<= 8 ms",
            f["http_p50_ms"] <= 8,
            f"in-process {f['local_p50_ms']:.2f} ms; "
            f"ratio {f['http_p50_ms'] / f['local_p50_ms']:.2f}x",
        ),
        (
            "exec round trip p99 (HTTP)",
            f"{f['http_p99_ms']:.2f} ms",
            "",
            None,
            f"in-process {f['local_p99_ms']:.2f} ms; "
            f"ratio {f['http_p99_ms'] / f['local_p99_ms']:.2f}x",
        ),
        (
            f"{args.sandboxes} sandboxes created (HTTP)",
            f"{f['http_create_s']:.1f} s, {f['http_created']}/{args.sandboxes}",
            "<= 30 s, 100%",
            f["http_create_s"] <= 30 and f["http_created"] == args.sandboxes,
            f"in-process {f['local_create_s']:.1f} s ({f['local_created']}/{args.sandboxes}); "
            f"ratio {f['http_create_s'] / f['local_create_s']:.2f}x; "
            f"{args.create_concurrency} in flight",
        ),
        (
            f"{args.clients} clients x {args.commands} commands (HTTP)",
            f"{f['http_clients_cmds_per_s']:.0f} cmd/s, {f['http_clients_errors']} errors",
            "0 errors",
            f["http_clients_errors"] == 0,
            f"in-process {f['local_clients_cmds_per_s']:.0f} cmd/s "
            f"({f['local_clients_errors']} errors); in-process / HTTP "
            f"{f['local_clients_cmds_per_s'] / f['http_clients_cmds_per_s']:.2f}x",
        ),
        (
            "CPU per command under that load",
            f"server {f['server_cpu_ms']:.2f} ms",
            "",
            None,
            f"HTTP clients {f['http_client_cpu_ms']:.2f} ms (on the same 2 cores); "
            f"in-process {f['local_client_cpu_ms']:.2f} ms",
        ),
        (
            "delete all (HTTP)",
            f"{f['http_delete_s']:.1f} s",
            "",
            None,
            f"in-process {f['local_delete_s']:.1f} s",
        ),
    ]
    console.print(figures_table(rows))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
