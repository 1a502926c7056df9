"""A backend for any OpenAI-compatible chat-completions server (OpenAI, vLLM, SGLang,
llama.cpp, `rockroll model serve`), with retries on the failures that usually pass."""

from __future__ import annotations

import email.utils
import os
import random
import time
from typing import Any

import httpx

from rockroll.errors import ModelError
from rockroll.models.base import Model, approx_tokens, parse_arguments
from rockroll.models.messages import Completion, Message, ToolCall

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"

# Statuses worth retrying: rate limits, overload and server errors, which usually pass.
_RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
# Network failures that usually pass; UnsupportedProtocol and friends never do.
_RETRY_EXCEPTIONS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
_MAX_BODY = 2000


class OpenAIModel:
    """An OpenAI-compatible /chat/completions endpoint with native function calling.

    Transient failures (429, 5xx, connection errors, timeouts) are retried with exponential
    backoff and jitter, honouring Retry-After, because long agent runs must survive blips.
    `extra_body` is merged into every request (e.g. {"logprobs": True} or vLLM's
    {"return_token_ids": True}) so the trainer can get token ids without a new backend.
    """

    native_tools = True

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 5,
        context_window: int = 32768,
        *,
        retry_base_delay: float = 1.0,
        retry_max_delay: float = 60.0,
        extra_body: dict | None = None,
    ) -> None:
        self.name = model
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.context_window = context_window
        self.max_retries = max_retries
        self.retry_base_delay = retry_base_delay
        self.retry_max_delay = retry_max_delay
        self.extra_body = dict(extra_body or {})
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAIModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count_tokens(self, messages: list[Message]) -> int:
        return approx_tokens(messages)

    def complete(
        self,
        messages: list[Message],
        tools: list[dict] | None,
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> Completion:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [m.to_openai() for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            **self.extra_body,
        }
        if seed is not None:
            payload["seed"] = seed
        if tools:
            payload["tools"] = tools
        return _parse_completion(self._post(payload), self.url)

    def _post(self, payload: dict) -> dict:
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                resp = self._client.post(self.url, json=payload)
            except _RETRY_EXCEPTIONS as e:
                if last:
                    raise ModelError(
                        f"cannot reach {self.url} after {attempts} attempts "
                        f"({type(e).__name__}: {e}); check that the server is running and that "
                        "the base URL is right (OpenAI-compatible servers usually end in /v1)"
                    ) from e
                self._sleep(attempt, None)
                continue
            except httpx.HTTPError as e:
                raise ModelError(f"request to {self.url} failed: {type(e).__name__}: {e}") from e
            if resp.status_code == 200:
                try:
                    return resp.json()
                except ValueError as e:
                    raise ModelError(
                        f"{self.url} returned a body that is not JSON: {resp.text[:_MAX_BODY]!r}"
                    ) from e
            if resp.status_code in _RETRY_STATUSES and not last:
                self._sleep(attempt, resp.headers.get("retry-after"))
                continue
            raise ModelError(self._status_message(resp, attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = parse_retry_after(retry_after)
        if delay is None:
            delay = self.retry_base_delay * 2**attempt * random.uniform(0.5, 1.0)
        time.sleep(min(max(delay, 0.0), self.retry_max_delay))

    def _status_message(self, resp: httpx.Response, attempts: int) -> str:
        status = resp.status_code
        tried = f" after {attempts} attempts" if attempts > 1 else ""
        hint = {
            401: "check the API key (OPENAI_API_KEY)",
            403: "check the API key's permissions for this model",
            404: f"check the base URL and that the server serves model {self.model!r}",
            429: "the endpoint is rate limiting; lower concurrency or raise max_retries",
        }.get(status)
        if hint is None:
            hint = (
                "the server failed; check its logs"
                if status >= 500
                else "check the request (model name, max_tokens, tools schema)"
            )
        return f"{self.url} returned HTTP {status}{tried}: {resp.text[:_MAX_BODY]}; {hint}"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), if usable."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def _parse_completion(data: dict, url: str) -> Completion:
    try:
        choice = data["choices"][0]
        msg = choice["message"]
    except (KeyError, IndexError, TypeError) as e:
        raise ModelError(f"{url} returned no choices[0].message: {str(data)[:_MAX_BODY]}") from e
    content = msg.get("content") or ""
    calls = []
    for i, tc in enumerate(msg.get("tool_calls") or []):
        fn = tc.get("function") or {}
        calls.append(
            ToolCall(
                id=tc.get("id") or f"call_{i + 1}",
                name=fn.get("name") or "",
                arguments=parse_arguments(fn.get("arguments")),
            )
        )
    usage = data.get("usage") or {}
    logprobs = None
    lp_content = (choice.get("logprobs") or {}).get("content")
    if lp_content:
        logprobs = [float(t["logprob"]) for t in lp_content]
    token_ids = choice.get("token_ids") or msg.get("token_ids")
    prompt_ids = data.get("prompt_token_ids") or choice.get("prompt_token_ids")
    return Completion(
        message=Message(role="assistant", content=content, tool_calls=calls),
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        prompt_token_ids=list(prompt_ids) if prompt_ids else None,
        token_ids=list(token_ids) if token_ids else None,
        logprobs=logprobs,
        raw=content,
    )


def from_spec(rest: str, **kwargs: Any) -> Model:
    model, _, base_url = rest.partition("@")
    if not model:
        raise ModelError(f"model spec 'openai:{rest}' names no model")
    base_url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_BASE_URL
    kwargs.setdefault("api_key", os.environ.get("OPENAI_API_KEY"))
    return OpenAIModel(base_url, model, **kwargs)
