"""Model backends behind one interface, so the harness never knows who answers it.

`make_model("scripted:replies.json")` replays canned replies (tests, demos);
`make_model("openai:MODEL[@BASE_URL]")` talks to any OpenAI-compatible server;
`make_model("local:smollm2")` runs a transformers model in this process (the `local` extra),
the one the trainer updates. `rockroll.models.serve` serves any of them over HTTP.
"""

from rockroll.errors import ModelError
from rockroll.models.base import BatchedDecoding, Model, Scoring, approx_tokens, parse_arguments
from rockroll.models.messages import Completion, Message, ToolCall
from rockroll.models.openai_compat import OpenAIModel
from rockroll.models.registry import make_model, register_model
from rockroll.models.scripted import ScriptedModel

__all__ = [
    "BatchedDecoding",
    "Completion",
    "Message",
    "Model",
    "ModelError",
    "OpenAIModel",
    "Scoring",
    "ScriptedModel",
    "ToolCall",
    "approx_tokens",
    "make_model",
    "parse_arguments",
    "register_model",
]
