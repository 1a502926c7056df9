"""Continuous batching behind `rockroll model serve`, against plain sequential `generate`.

A real `rockroll model serve` runs in its own process. First a short request (a short prompt,
4 tokens) is timed alone, `--alone` times: its time to first token (TTFT, to the first streamed
content) and its whole time. Then `--clients` clients start at once, each sending its
`--requests` streamed chat requests one after another, of mixed prompt and completion lengths
(every fourth is the short request); TTFT is timed for each, and the short ones' p99 is
compared with their time alone. Then, in this process with its own copy of the weights, the
same prompts (the server's own prompt token ids) and limits are completed one by one with
`rockroll.models.generation.generate`: the throughput a server without batching would have.

Prints every figure next to its target and always exits 0: a report, not a test. Run it on a
quiet machine: the figures are latencies and throughput on every core there is.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from common import console, headline, loadavg, machine, mark, pct

SHORT = {"prompt": "Say hello.", "max_tokens": 4}
SENTENCES = [
    "The build fails on the second step because a header is missing.",
    "Write a shell command that counts the lines of every Python file in a folder.",
    "Explain what a KV cache stores and why decoding needs it.",
    "Summarise the log below and say which service restarted first.",
    "List three ways to make a slow test suite faster without dropping tests.",
    "A user reports that uploads over 2 GB stop at 99 percent.",
]


@dataclass
class Request:
    prompt: str
    max_tokens: int
    short: bool = False
    ttft: float = 0.0
    took: float = 0.0
    at: float = 0.0  # when it was sent, seconds into the loaded run
    tokens: int = 0
    prompt_ids: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)


def workload(clients: int, requests: int, seed: int = 0) -> list[list[Request]]:
    """Each client's requests: every fourth the short one, the others a prompt of 1 to 12
    sentences and a limit of 32 to 256 tokens."""
    draw = random.Random(seed)
    out = []
    for c in range(clients):
        mine = []
        for r in range(requests):
            if (c + r) % 4 == 0:
                mine.append(Request(SHORT["prompt"], int(SHORT["max_tokens"]), short=True))
                continue
            text = " ".join(draw.choice(SENTENCES) for _ in range(draw.randint(1, 12)))
            mine.append(Request(text, draw.choice([32, 64, 128, 256])))
        out.append(mine)
    return out


def ask(client: httpx.Client, url: str, request: Request) -> None:
    """One streamed chat completion; fills in the request's timings, tokens and ids."""
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": request.prompt}],
        "max_tokens": request.max_tokens,
        "temperature": 0,
        "stream": True,
    }
    started = time.perf_counter()
    with client.stream("POST", f"{url}/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line.removeprefix("data: "))
            choice = chunk["choices"][0]
            if choice["delta"].get("content") and not request.ttft:
                request.ttft = time.perf_counter() - started
            if "usage" in chunk:
                request.tokens = chunk["usage"]["completion_tokens"]
                request.prompt_ids = chunk["prompt_token_ids"]
                request.token_ids = choice["token_ids"]
    request.took = time.perf_counter() - started
    request.ttft = request.ttft or request.took  # nothing but a stop token came back


def start_server(port: int, max_batch: int, dtype: str, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rockroll", "model", "serve", "smollm2", "--port", str(port)]
    cmd += ["--max-batch", str(max_batch), "--dtype", dtype]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()[-2000:]}")
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the server did not answer in 300 s: {log.read_text()[-2000:]}")


def under_load(url: str, plan: list[list[Request]]) -> float:
    """Every client at once; returns the wall time. Prints progress every 10 s."""
    done = [0]
    began = time.perf_counter()

    def client(mine: list[Request]) -> None:
        with httpx.Client(timeout=600) as http:
            for request in mine:
                request.at = time.perf_counter() - began
                ask(http, url, request)
                done[0] += 1

    threads = [threading.Thread(target=client, args=(mine,)) for mine in plan]
    started = time.perf_counter()
    for t in threads:
        t.start()
    total, said = sum(len(m) for m in plan), started
    while any(t.is_alive() for t in threads):
        time.sleep(0.05)
        if time.perf_counter() - said >= 10:
            console.print(f"  … {done[0]}/{total} requests answered", highlight=False)
            said = time.perf_counter()
    return time.perf_counter() - started


def sequential(requests: list[Request], dtype: str) -> tuple[float, int, int]:
    """The same prompts (the server's ids) and limits, one `generate` at a time in this
    process: its wall time, tokens, and how many came out token for token as the server's."""
    from rockroll.models.generation import generate
    from rockroll.models.local import load_local

    model = load_local("smollm2", dtype=dtype)
    generate(model.model, [requests[0].prompt_ids], max_tokens=4)  # warm-up
    started, tokens, same = time.perf_counter(), 0, 0
    for i, request in enumerate(requests):
        [out] = generate(
            model.model, [request.prompt_ids], max_tokens=request.max_tokens,
            stop_ids=model.stop_ids,
        )  # fmt: skip
        tokens += len(out.token_ids)
        same += out.token_ids == request.token_ids
        if i % 8 == 7:
            console.print(f"  … {i + 1}/{len(requests)} sequential", highlight=False)
    return time.perf_counter() - started, tokens, same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--alone", type=int, default=10, help="times the short request alone")
    parser.add_argument("--sequential", type=int, default=16, help="requests done one by one")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--dtype", default="float32", help="of the server and of `generate`")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    console.print(headline("serve_bench", machine()))
    log = Path(os.environ.get("TMPDIR", "/tmp")) / "serve_bench.server.log"
    console.print(f"starting rockroll model serve (log: {log})")
    server = start_server(args.port, args.max_batch, args.dtype, log)
    url = f"http://127.0.0.1:{args.port}/v1"
    try:
        with httpx.Client(timeout=600) as http:
            for _ in range(3):  # warm-up
                ask(http, url, Request(SHORT["prompt"], 4))
            alone = [Request(SHORT["prompt"], 4, short=True) for _ in range(args.alone)]
            for request in alone:
                ask(http, url, request)
        plan = workload(args.clients, args.requests)
        console.print(f"{args.clients} clients x {args.requests} requests, load {loadavg()}")
        wall = under_load(url, plan)
    finally:
        server.terminate()
        server.wait(timeout=60)
    report(alone, [r for mine in plan for r in mine], wall, args)
    return 0


def report(
    alone: list[Request], loaded: list[Request], wall: float, args: argparse.Namespace
) -> None:
    shorts = [r for r in loaded if r.short]
    longs = [r for r in loaded if not r.short]
    picked = longs[:: max(1, len(longs) // args.sequential)][: args.sequential]
    console.print(f"sequential generate over {len(picked)} of the requests")
    seq_wall, seq_tokens, same = sequential(picked, args.dtype)
    tokens = sum(r.tokens for r in loaded)
    alone_ttft = pct([r.ttft for r in alone], 50)
    short_p99 = pct([r.ttft for r in shorts], 99)
    served_rate, seq_rate = tokens / wall, seq_tokens / seq_wall
    figures = {
        "alone_ttft_p50_ms": alone_ttft * 1000,
        "alone_ttft_p99_ms": pct([r.ttft for r in alone], 99) * 1000,
        "alone_total_p50_ms": pct([r.took for r in alone], 50) * 1000,
        "short_ttft_p50_ms": pct([r.ttft for r in shorts], 50) * 1000,
        "short_ttft_p99_ms": short_p99 * 1000,
        "all_ttft_p50_ms": pct([r.ttft for r in loaded], 50) * 1000,
        "all_ttft_p99_ms": pct([r.ttft for r in loaded], 99) * 1000,
        "requests_per_s": len(loaded) / wall,
        "served_tokens_per_s": served_rate,
        "sequential_tokens_per_s": seq_rate,
        "requests": len(loaded),
        "short_requests": len(shorts),
        "tokens": tokens,
        "wall_s": wall,
        "sequential_same_tokens": f"{same}/{len(picked)}",
    }
    slowest = sorted(loaded, key=lambda r: -r.ttft if r.short else 0)[:5]
    console.print(
        "slowest short TTFTs (ms, seconds into the run): "
        + ", ".join(f"{r.ttft * 1000:.0f} at {r.at:.1f}" for r in slowest if r.short),
        highlight=False,
    )
    for key, value in figures.items():
        shown = f"{value:.1f}" if isinstance(value, float) else str(value)
        console.print(f"  {key:28} {shown}", highlight=False)
    ratio = short_p99 / alone_ttft
    speed = served_rate / seq_rate
    console.print(f"short TTFT p99 / alone p50: {ratio:.2f}x (target ≤ 2x) {mark(ratio <= 2)}")
    console.print(f"tokens/s served / sequential: {speed:.2f}x (target ≥ 3x) {mark(speed >= 3)}")
    if args.json:
        args.json.write_text(json.dumps(figures | {"ttft_ratio": ratio, "speedup": speed}))


if __name__ == "__main__":
    sys.exit(main())
