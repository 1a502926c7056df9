"""Constrained decoding: a grammar says which tokens a row may sample next.

`response_format` (`json_object`, `json_schema`) and `tool_choice` (`required`, a named
function) are promises about the reply's shape that sampling alone cannot keep, least of all
with a small model. A `Constraint` holds an llguidance matcher (the grammar engine vLLM, SGLang
and llama.cpp use) for one row: before each token the decoder masks every token the grammar
does not allow next, samples from what is left (the recorded logprob is under that masked
distribution: the one the token was drawn from), and hands the token back. Once the grammar is
complete only an end token is allowed, so the row stops there.

Grammars are llguidance's (JSON schemas compiled by it, or its Lark dialect with `%json`):
`json_grammar(schema)` and `tool_call_grammar(tools, name)`; the `<tool_call>` block of the
latter is the local models' tool-call text format (rockroll.models.textformat).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import torch

from rockroll.errors import ModelError

# JSON as models write it: one space after ':' and ',', no other whitespace (a grammar that
# allowed any would let a weak model fill the reply with blanks).
_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_TOKENIZERS: dict[tuple[int, int], Any] = {}
_LOCK = threading.Lock()


def json_grammar(schema: dict[str, Any] | None = None) -> str:
    """A grammar for one JSON value matching `schema` (any JSON object when None)."""
    import llguidance

    return llguidance.LLMatcher.grammar_from_json_schema(
        schema or {"type": "object"},
        overrides=_LAYOUT,  # type: ignore[arg-type]
    )


def tool_call_grammar(tools: list[dict[str, Any]], name: str | None = None) -> str:
    """A grammar for one `<tool_call>` block calling one of `tools` (only `name` when given)
    with arguments that match its parameters."""
    import llguidance

    options = []
    for tool in tools:
        fn = tool.get("function", tool)
        if name is not None and fn.get("name") != name:
            continue
        parameters = fn.get("parameters") or {"type": "object"}
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": fn["name"]}, "arguments": parameters},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    if not options:
        raise ModelError(f"no tool named {name!r} among the request's tools")
    schema = (options[0] if len(options) == 1 else {"anyOf": options}) | {"x-guidance": _LAYOUT}
    lark = f'start: "<tool_call>\\n" %json {json.dumps(schema)} "\\n</tool_call>"'
    return llguidance.LLMatcher.grammar_from_lark(lark)


def check(grammar: str) -> str | None:
    """Why `grammar` cannot be used (one line), or None when it can."""
    import llguidance

    return llguidance.LLMatcher.validate_grammar(grammar) or None


class Constraint:
    """One row's grammar state: `allowed()` before a token, `accept(token)` after it."""

    def __init__(self, tokenizer: Any, grammar: str, vocab_size: int) -> None:
        import llguidance

        self.matcher = llguidance.LLMatcher(
            _ll_tokenizer(tokenizer, vocab_size), grammar, log_level=0
        )
        self.vocab_size = vocab_size

    def allowed(self, device: torch.device) -> torch.Tensor:
        """The tokens the grammar allows next, as a bool mask over the vocabulary."""
        bits = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        mask = np.unpackbits(bits, bitorder="little")[: self.vocab_size].astype(bool)
        return torch.from_numpy(mask).to(device)

    def accept(self, token: int) -> None:
        self.matcher.consume_token(token)


def _ll_tokenizer(tokenizer: Any, vocab_size: int) -> Any:
    """llguidance's view of a Hugging Face tokenizer (about a second to build: kept)."""
    import llguidance.hf

    key = (id(tokenizer), vocab_size)
    with _LOCK:
        if key not in _TOKENIZERS:
            _TOKENIZERS[key] = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)
        return _TOKENIZERS[key]
