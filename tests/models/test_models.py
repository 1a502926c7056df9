"""Model backends: scripted replay, and the OpenAI client against a real local HTTP server."""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rockroll.errors import ModelError
from rockroll.models import Model, OpenAIModel, ScriptedModel, make_model, register_model
from rockroll.models.messages import Message, ToolCall
from rockroll.models.openai_compat import parse_retry_after

USER = [Message(role="system", content="be brief"), Message(role="user", content="hi")]


def test_scripted_replays_in_order_and_records_what_it_saw():
    call = ToolCall(id="c1", name="bash", arguments={"command": "ls"})
    model = ScriptedModel(["hello", Message(role="assistant", content="", tool_calls=[call])])
    assert isinstance(model, Model)
    assert model.native_tools
    first = model.complete(USER, None)
    assert first.message.role == "assistant"
    assert first.message.content == "hello"
    assert first.finish_reason == "stop"
    second = model.complete([*USER, first.message], [{"type": "function"}])
    assert second.message.tool_calls == [call]
    assert second.finish_reason == "tool_calls"
    assert [len(s) for s in model.seen] == [2, 3]
    assert model.seen_tools == [None, [{"type": "function"}]]
    with pytest.raises(ModelError, match="no more replies after 2"):
        model.complete(USER, None)


def test_scripted_without_tool_calls_is_not_native():
    assert not ScriptedModel(["a", "b"]).native_tools
    assert ScriptedModel(["a"]).count_tokens(USER) > 0


def test_scripted_from_file_numbers_tool_calls(tmp_path):
    path = tmp_path / "replies.json"
    path.write_text(
        json.dumps(
            [
                "plain",
                {
                    "content": "look",
                    "tool_calls": [{"name": "bash", "arguments": {"command": "ls"}}],
                },
                {"tool_calls": [{"name": "read", "arguments": {"path": "a"}}, {"name": "noop"}]},
            ]
        )
    )
    model = make_model(f"scripted:{path}")
    assert isinstance(model, ScriptedModel)
    assert model.name == f"scripted:{path}"
    assert model.native_tools
    replies = [model.complete(USER, None).message for _ in range(3)]
    assert replies[0].content == "plain"
    assert replies[1].content == "look"
    assert [(c.id, c.name, c.arguments) for c in replies[1].tool_calls + replies[2].tool_calls] == [
        ("call_1", "bash", {"command": "ls"}),
        ("call_2", "read", {"path": "a"}),
        ("call_3", "noop", {}),
    ]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"a": 1}', "must be a JSON list"),
        ("[3]", "reply 1 .* must be a string or an object"),
        ('[{"tool_calls": [{"arguments": {}}]}]', "needs a string 'name'"),
        ('[{"tool_calls": [{"name": "x", "arguments": [1]}]}]', "must be an object"),
    ],
)
def test_scripted_from_file_errors(tmp_path, text, match):
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(ModelError, match=match):
        ScriptedModel.from_file(path)


def test_scripted_from_missing_file(tmp_path):
    with pytest.raises(ModelError, match="cannot read scripted replies"):
        make_model(f"scripted:{tmp_path / 'nope.json'}")


# --- a real HTTP server serving canned chat completions -------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: dict | str = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class FakeServer:
    url: str
    replies: list[Reply] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)  # {"path", "headers", "json", "time"}


def chat(message: dict, **choice) -> dict:
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop", **choice}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


@pytest.fixture
def server() -> Iterator[FakeServer]:
    state = FakeServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length))
            state.requests.append(
                {
                    "path": self.path,
                    "headers": dict(self.headers),
                    "json": body,
                    "time": time.time(),
                }
            )
            reply = state.replies.pop(0) if state.replies else Reply(500, "no canned reply left")
            time.sleep(reply.delay)
            data = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data.encode())))
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data.encode())

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def client(server: FakeServer, **kw) -> OpenAIModel:
    kw.setdefault("retry_base_delay", 0.01)
    return OpenAIModel(server.url, "test-model", **kw)


def test_openai_plain_reply_and_request_shape(server):
    server.replies.append(Reply(body=chat({"role": "assistant", "content": "hello"})))
    with client(server, api_key="sk-test") as model:
        out = model.complete(USER, None, max_tokens=50, temperature=0.5, seed=7)
    assert out.message == Message(role="assistant", content="hello")
    assert out.raw == "hello"
    assert (out.finish_reason, out.prompt_tokens, out.completion_tokens) == ("stop", 12, 3)
    assert out.token_ids is None and out.logprobs is None
    [req] = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer sk-test"
    assert req["json"] == {
        "model": "test-model",
        "messages": [m.to_openai() for m in USER],
        "max_tokens": 50,
        "temperature": 0.5,
        "seed": 7,
    }


def test_openai_tool_calls_parse_arguments(server):
    tools = [{"type": "function", "function": {"name": "bash", "parameters": {}}}]
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "a",
                "type": "function",
                "function": {"name": "bash", "arguments": '{"c": "ls"}'},
            },
            {"id": "b", "type": "function", "function": {"name": "bash", "arguments": "{oops"}},
            {"id": "c", "type": "function", "function": {"name": "noop", "arguments": ""}},
            {"id": "d", "type": "function", "function": {"name": "bash", "arguments": "[1]"}},
        ],
    }
    server.replies.append(Reply(body=chat(message, finish_reason="tool_calls")))
    history = [
        *USER,
        Message(role="assistant", tool_calls=[ToolCall(id="z", name="bash", arguments={})]),
        Message(role="tool", content="out", tool_call_id="z", name="bash"),
    ]
    out = client(server).complete(history, tools)
    assert out.message.content == ""
    assert out.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in out.message.tool_calls] == [
        ("a", "bash", {"c": "ls"}),
        ("b", "bash", {"__raw__": "{oops"}),
        ("c", "noop", {}),
        ("d", "bash", {"__raw__": "[1]"}),
    ]
    sent = server.requests[0]["json"]
    assert sent["tools"] == tools
    assert sent["messages"][2]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert sent["messages"][3]["tool_call_id"] == "z"


def test_openai_logprobs_and_token_ids(server):
    logprobs = {"content": [{"token": "hi", "logprob": -0.5}, {"token": "!", "logprob": -1.25}]}
    body = chat({"role": "assistant", "content": "hi!"}, logprobs=logprobs, token_ids=[5, 6])
    body["prompt_token_ids"] = [1, 2, 3]
    server.replies.append(Reply(body=body))
    msg_ids = chat({"role": "assistant", "content": "x", "token_ids": [9]})
    server.replies.append(Reply(body=msg_ids))
    model = client(server, extra_body={"logprobs": True})
    out = model.complete(USER, None)
    assert out.logprobs == [-0.5, -1.25]
    assert out.token_ids == [5, 6]
    assert out.prompt_token_ids == [1, 2, 3]
    assert server.requests[0]["json"]["logprobs"] is True
    assert model.complete(USER, None).token_ids == [9]


def test_openai_retries_429_honouring_retry_after(server):
    server.replies += [
        Reply(429, {"error": "slow down"}, {"Retry-After": "0.3"}),
        Reply(body=chat({"role": "assistant", "content": "ok"})),
    ]
    out = client(server).complete(USER, None)
    assert out.message.content == "ok"
    first, second = server.requests
    assert second["time"] - first["time"] >= 0.3


def test_openai_retries_timeouts(server):
    # The first reply comes long after the client's timeout; the second at once (a loopback
    # round trip, far inside the 1 s even on a loaded machine).
    server.replies += [
        Reply(body=chat({"role": "assistant", "content": "late"}), delay=5.0),
        Reply(body=chat({"role": "assistant", "content": "ok"})),
    ]
    assert client(server, timeout=1.0).complete(USER, None).message.content == "ok"
    assert len(server.requests) == 2


def test_openai_gives_up_after_max_retries_on_5xx(server):
    server.replies += [Reply(503, {"error": "overloaded"}) for _ in range(10)]
    with pytest.raises(ModelError) as err:
        client(server, max_retries=3, retry_base_delay=0.1).complete(USER, None)
    assert len(server.requests) == 4
    # Exponential backoff between attempts: base * 2^n, jittered down to half at most (sleeps
    # are never shorter; a loaded machine only makes the gaps longer).
    times = [r["time"] for r in server.requests]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.1 * 2**n * 0.5 for n, gap in enumerate(gaps)), gaps
    msg = str(err.value)
    assert "HTTP 503 after 4 attempts" in msg and "overloaded" in msg
    assert server.url + "/chat/completions" in msg


def test_openai_4xx_is_not_retried_and_shows_the_body(server):
    server.replies.append(Reply(400, {"error": {"message": "max_tokens is too large"}}))
    with pytest.raises(ModelError, match=r"HTTP 400: .*max_tokens is too large") as err:
        client(server).complete(USER, None)
    assert len(server.requests) == 1
    assert "check the request" in str(err.value)


def test_openai_401_says_to_check_the_key(server):
    server.replies.append(Reply(401, {"error": "bad key"}))
    with pytest.raises(ModelError, match="OPENAI_API_KEY"):
        client(server).complete(USER, None)


def test_openai_malformed_bodies(server):
    server.replies += [Reply(body="not json"), Reply(body={"choices": []})]
    model = client(server)
    with pytest.raises(ModelError, match="not JSON"):
        model.complete(USER, None)
    with pytest.raises(ModelError, match=r"no choices\[0\].message"):
        model.complete(USER, None)


def test_openai_unreachable_endpoint_names_the_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    model = OpenAIModel(url, "m", max_retries=2, retry_base_delay=0.01)
    with pytest.raises(ModelError) as err:
        model.complete(USER, None)
    msg = str(err.value)
    assert f"cannot reach {url}/chat/completions after 3 attempts" in msg
    assert "check that the server is running" in msg


def test_retry_after_formats():
    assert parse_retry_after(None) is None
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("soon") is None
    later = parse_retry_after(formatdate(time.time() + 30, usegmt=True))
    assert later is not None and 25 < later <= 31


# --- specs -------------------------------------------------------------------------------------


def test_make_model_openai_with_base_url(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    model = make_model("openai:gpt-4o-mini@http://localhost:8000/v1/", timeout=5.0)
    assert isinstance(model, OpenAIModel)
    assert (model.name, model.url) == ("gpt-4o-mini", "http://localhost:8000/v1/chat/completions")
    assert model._client.headers["Authorization"] == "Bearer sk-env"
    assert model._client.timeout.read == 5.0


def test_make_model_openai_from_env(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    model = make_model("openai:gpt-4o-mini")
    assert model.url == "https://api.openai.com/v1/chat/completions"
    assert "Authorization" not in model._client.headers
    monkeypatch.setenv("OPENAI_BASE_URL", "http://10.0.0.1:9000/v1")
    assert make_model("openai:m", api_key="k").url == "http://10.0.0.1:9000/v1/chat/completions"


@pytest.mark.parametrize("spec", ["foo:bar", "gpt-4o"])
def test_make_model_unknown_specs_list_the_known_ones(spec):
    with pytest.raises(ModelError, match="unknown model spec") as err:
        make_model(spec)
    message = str(err.value)
    assert "scripted:PATH" in message and "openai:MODEL[@BASE_URL]" in message
    assert "local:smollm2" in message


def test_unknown_local_model_names_the_known_ones():
    with pytest.raises(ModelError, match="smollm2"):
        make_model("local:qwen")


@pytest.mark.parametrize("spec", ["openai:", "openai:@http://x/v1", "scripted:"])
def test_make_model_incomplete_specs(spec):
    with pytest.raises(ModelError, match=r"missing|names no model"):
        make_model(spec)


def test_register_model_adds_a_backend(monkeypatch):
    import rockroll.models.registry as models

    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
    register_model("echo", lambda rest, **kw: ScriptedModel([rest], name="echo"), "echo:TEXT")
    assert make_model("echo:hi").complete(USER, None).message.content == "hi"
    with pytest.raises(ModelError, match="echo:TEXT"):
        make_model("nope:x")
