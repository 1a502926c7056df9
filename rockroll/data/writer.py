"""Instructions written by a model, when `rockroll data synth --model SPEC` names one (any
backend of the harness: a remote OpenAI-compatible teacher, a local model, a scripted one).

The model sees what an issue reporter would: the project, the failing tests and their
messages, and the strategy's template; never the fix (the original code). What it writes still
goes through the leak gate. A model that cannot be reached is found before a source's first
draft (`check_model`), so the source fails with one clear line and the run goes on.
"""

from __future__ import annotations

from rockroll.data.project import Project
from rockroll.data.strategies import Draft
from rockroll.errors import ModelError
from rockroll.models.base import Model
from rockroll.models.messages import Message
from rockroll.models.registry import make_model

SYSTEM = (
    "You write task descriptions for a software engineer, like a good bug report or feature "
    "request: what is wrong or missing and how to see it, never how to fix it. Write Markdown, "
    "under 250 words, with a title line. Do not include code that fixes the problem."
)
MIN_WORDS = 15


def load_writer(spec: str) -> Model:
    return make_model(spec)


def check_model(model: Model, spec: str) -> None:
    """One short request; a ModelError naming the spec when the model does not answer."""
    try:
        model.complete([Message(role="user", content="Say OK.")], None, max_tokens=4)
    except ModelError as exc:
        raise ModelError(f"--model {spec}: the model does not answer: {exc}") from None


def write_instruction(model: Model, draft: Draft, project: Project, template: str) -> str:
    """The model's instruction for the draft; the template when it answers with too little."""
    prompt = (
        f"Project: {project.name} {project.version}, in /app.\n"
        f"Kind of task: {draft.strategy} in `{draft.path}` (function `{draft.function}`).\n\n"
        f"The facts, as a template states them:\n\n{template}\n\n"
        "Rewrite this as a clear task description for the engineer. Keep every test name."
    )
    reply = model.complete(
        [Message(role="system", content=SYSTEM), Message(role="user", content=prompt)],
        None,
        max_tokens=600,
    )
    text = (reply.message.content or "").strip()
    return text + "\n" if len(text.split()) >= MIN_WORDS else template
