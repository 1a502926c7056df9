"""`rockroll model serve`: a real HTTP server on loopback in front of a local model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from rockroll.agent.loop import AgentConfig, AgentLoop
from rockroll.agent.tools import default_tools
from rockroll.models import OpenAIModel
from rockroll.models.generation import Generated
from rockroll.models.local import LocalModel, load_local
from rockroll.models.messages import Message
from rockroll.models.serve import create_app, serve_in_thread

CHAT = [Message(role="system", content="be brief"), Message(role="user", content="list files")]
TOOLS = [t.schema() for t in default_tools()]


def _client(url: str, name: str = "tiny") -> OpenAIModel:
    return OpenAIModel(url, name, max_retries=0, timeout=60)


@pytest.mark.parametrize("tools", [None, TOOLS])
def test_server_returns_what_the_local_backend_returns(
    tiny: LocalModel, url: str, tools: list[dict] | None
) -> None:
    with _client(url) as remote:
        for seed in (1, 2, 3):
            local = tiny.complete(CHAT, tools, max_tokens=12, temperature=1.0, seed=seed)
            served = remote.complete(CHAT, tools, max_tokens=12, temperature=1.0, seed=seed)
            assert served.token_ids == local.token_ids
            assert served.prompt_token_ids == local.prompt_token_ids
            assert served.logprobs == pytest.approx(local.logprobs, abs=1e-6)
            assert served.message.content == local.message.content
            assert served.finish_reason == local.finish_reason
            assert served.completion_tokens == 12


def test_tool_call_blocks_come_back_as_tool_calls(
    tiny: LocalModel, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = '<tool_call>\n{"name": "bash", "arguments": {"command": "ls -la"}}\n</tool_call>'
    ids = [*tiny.tokenizer.encode(text), tiny.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    monkeypatch.setattr(tiny, "_generate", lambda *a: Generated(ids, [-0.5] * len(ids), True))
    body = httpx.post(
        f"{url}/chat/completions",
        json={"model": "tiny", "messages": [m.to_openai() for m in CHAT], "tools": TOOLS},
    ).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "bash"
    assert json.loads(call["function"]["arguments"]) == {"command": "ls -la"}
    assert choice["message"]["content"] == text  # whole, so it re-renders to the same tokens
    assert choice["token_ids"] == ids
    assert [t["logprob"] for t in choice["logprobs"]["content"]] == [-0.5] * len(ids)
    # Sent back, the assistant turn renders to the prompt the model would see after its reply.
    with _client(url) as remote:
        reply = remote.complete(CHAT, TOOLS).message
        assert reply.tool_calls[0].arguments == {"command": "ls -la"}
    follow = [*CHAT, reply, Message(role="tool", content="a.txt", tool_call_id="call_1")]
    prompt = tiny.render(follow, TOOLS)
    assert text + "<|im_end|>" in prompt


def test_without_tools_the_text_is_not_parsed(
    tiny: LocalModel, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = '<tool_call>{"name": "bash", "arguments": {}}</tool_call>'
    ids = tiny.tokenizer.encode(text)
    monkeypatch.setattr(tiny, "_generate", lambda *a: Generated(ids, [-1.0] * len(ids), False))
    with _client(url) as remote:
        c = remote.complete(CHAT, None)
    assert c.message.tool_calls == [] and c.message.content == text
    assert c.finish_reason == "length"


def test_streaming_clients_get_server_sent_events(url: str) -> None:
    chat = [m.to_openai() for m in CHAT]
    payload = {"model": "tiny", "messages": chat, "max_tokens": 4, "temperature": 0}
    with httpx.stream("POST", f"{url}/chat/completions", json=payload | {"stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in r.iter_lines() if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 4
    whole = httpx.post(f"{url}/chat/completions", json=payload).json()["choices"][0]
    deltas = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(d or "" for d in deltas) == whole["message"]["content"]
    assert chunks[-1]["choices"][0]["token_ids"] == whole["token_ids"]  # rockroll's extras


def test_a_stream_sends_tokens_as_they_come_and_a_client_leaving_cancels(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    chat = [m.to_openai() for m in CHAT]
    payload = {"model": "tiny", "messages": chat, "max_tokens": 400, "temperature": 1.0}
    started = time.monotonic()
    with httpx.stream("POST", f"{url}/chat/completions", json=payload | {"stream": True}) as r:
        lines = (line for line in r.iter_lines() if line.startswith("data: {"))
        contents = []
        for line in lines:
            delta = json.loads(line.removeprefix("data: "))["choices"][0]["delta"]
            if delta.get("content"):
                contents.append(time.monotonic() - started)
        done = time.monotonic() - started
    assert len(contents) > 10  # token by token, not one chunk at the end
    assert contents[0] < done / 2, (contents[0], done)
    caplog.set_level("INFO", logger="rockroll.serve")
    with httpx.stream("POST", f"{url}/chat/completions", json=payload | {"stream": True}) as r:
        next(line for line in r.iter_lines() if '"content": "' in line and '""' not in line)
    # the client left after its first text; the server stops decoding for it
    deadline = time.monotonic() + 30
    while "generation cancelled" not in caplog.text:
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.05)
    with pytest.raises(httpx.ReadTimeout):  # a plain request whose client gives up
        httpx.post(f"{url}/chat/completions", json=payload | {"n": 8}, timeout=0.5)
    deadline = time.monotonic() + 30
    while caplog.text.count("generation cancelled") < 2:
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}, 404, "'tiny'"),
        ({"model": "tiny", "messages": []}, 400, "messages"),
        ({"model": "tiny"}, 400, "messages"),
        ({"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0]"),
        ({"model": "tiny", "messages": [{"role": "user"}], "n": 17}, 400, "n"),
        ({"model": "tiny", "messages": [{"role": "user"}], "top_p": 0.5}, 400, "top_p"),
        ({"model": "tiny", "messages": [{"role": "user"}], "best_of": 2}, 400, "best_of"),
        (
            {"model": "tiny", "messages": [{"role": "user"}], "tool_choice": "required"},
            400,
            "needs tools",
        ),
        ({"model": "tiny", "messages": [{"role": "user"}], "max_tokens": 0}, 400, "max_tokens"),
        ({"model": "tiny", "messages": [{"role": "user"}], "temperature": 9}, 400, "temperature"),
        (
            {
                "model": "tiny",
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"function": {"name": "bash", "arguments": "{oops"}}],
                    }
                ],
            },
            400,
            "arguments",
        ),
        (
            {"model": "tiny", "messages": [{"role": "user", "content": "x" * 40000}]},
            400,
            "context window",
        ),
    ],
)
def test_bad_requests_get_openai_errors(url: str, body: dict, status: int, words: str) -> None:
    r = httpx.post(f"{url}/chat/completions", json=body, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert words in error["message"]
    assert error["code"] == status


def test_malformed_json_is_a_400(url: str) -> None:
    r = httpx.post(
        f"{url}/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert "JSON" in r.json()["error"]["message"]


def test_models_and_health(url: str) -> None:
    assert httpx.get(f"{url}/models").json()["data"][0]["id"] == "tiny"
    assert httpx.get(url.removesuffix("/v1") + "/health").json()["status"] == "ok"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serves_a_model_folder(tiny: LocalModel, tmp_path: Path) -> None:
    folder = tmp_path / "tiny-llama"
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rockroll.cli", "model", "serve", str(folder), "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        with _client(f"{base}/v1", "tiny-llama") as remote:
            served = remote.complete(CHAT, None, max_tokens=5, temperature=1.0, seed=4)
        local = tiny.complete(CHAT, None, max_tokens=5, temperature=1.0, seed=4)
        assert served.token_ids == local.token_ids
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert f"openai:tiny-llama@http://127.0.0.1:{port}/v1" in (proc.stderr.read() or "")


def test_cli_logs_each_request_and_sigterm_ends_it_within_the_grace(
    tiny: LocalModel, tmp_path: Path
) -> None:
    folder = tmp_path / "tiny-llama"
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    port = _free_port()
    log = tmp_path / "serve.log"
    argv = [sys.executable, "-m", "rockroll.cli", "model", "serve", str(folder)]
    with log.open("w") as sink:
        proc = subprocess.Popen([*argv, "--port", str(port), "--grace", "1"], stderr=sink)
    try:
        deadline = time.monotonic() + 120
        while "serving tiny-llama" not in log.read_text():  # printed once the port is bound
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.1)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health").status_code == 200  # up as soon as it says so
        taken = subprocess.run(
            [*argv, "--port", str(port)], capture_output=True, text=True, timeout=120
        )
        assert taken.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in taken.stderr
        payload = {"model": "tiny-llama", "messages": [m.to_openai() for m in CHAT]}
        long = subprocess.Popen(  # a request far longer than the grace period
            [sys.executable, "-c", "import httpx, json, sys; httpx.post(sys.argv[1], "
             "json=json.loads(sys.argv[2]), timeout=600)", f"{base}/v1/chat/completions",
             json.dumps(payload | {"max_tokens": 100000, "temperature": 1.0, "n": 16})],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        httpx.post(f"{base}/v1/chat/completions", json=payload | {"max_tokens": 2}, timeout=120)
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        proc.wait(timeout=30)
        assert time.monotonic() - started < 5  # the grace (1 s), not the long request
        long.wait(timeout=10)  # its client is not left hanging (answered short, or cut off)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "POST /v1/chat/completions 200" in text and "GET /health 200" in text, text
    assert "stopping: new requests are refused" in text, text


def test_cli_names_a_model_it_cannot_load(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rockroll.cli", "model", "serve", "no-such-model"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "no-such-model" in proc.stderr and "smollm2" in proc.stderr


def _tool_calls(loop: AgentLoop, sandbox) -> list[tuple]:  # type: ignore[no-untyped-def]
    # Pin directory times: `ls -la` output must not depend on the minute the sandbox was made.
    assert sandbox.exec("touch -d '2020-01-01 00:00' / /root").exit_code == 0
    result = loop.run("Create a file hello.txt containing hi, then submit.", sandbox)
    steps = [s for s in result.trajectory.steps if s.source == "agent"]
    return [
        (
            [(c.function_name, c.arguments) for c in s.tool_calls or []],
            s.metrics.completion_token_ids if s.metrics else None,
            [r.content for r in s.observation.results] if s.observation else None,
        )
        for s in steps
    ]


@pytest.mark.slow
def test_smollm2_behind_the_server_acts_as_the_local_backend(base_image: str) -> None:
    """Same seed, same tool calls, tokens and observations, in both action formats."""
    from rockroll import Sandbox

    model = load_local("smollm2")
    with serve_in_thread(create_app(model, "smollm2")) as base:
        calls = 0
        for fmt, seed in (("native", 0), ("bash", 4), ("bash", 2)):
            config = AgentConfig(
                max_turns=2, max_tokens_per_turn=48, temperature=0.8, seed=seed, action_format=fmt
            )
            runs = []
            for backend in (model, _client(base, "smollm2")):
                with Sandbox.create(base_image, workdir="/root") as sb:
                    runs.append(_tool_calls(AgentLoop(backend, config=config), sb))
            assert runs[0] == runs[1], f"{fmt} format, seed {seed}"
            calls += sum(len(step[0]) for step in runs[0])
        print(f"SmolLM2 over HTTP and in-process: identical runs, {calls} tool calls")
        assert calls > 0
