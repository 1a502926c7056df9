"""Backends by name: `make_model("PREFIX:REST")` finds PREFIX here and builds the backend.

Each entry names its factory as "module:function", imported only when a spec asks for it, so
`make_model("scripted:...")` never imports torch. `register_model` adds a backend of the
user's own, given as a callable or as such a "module:function" string.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from rockroll.errors import ModelError
from rockroll.models.base import Model

ModelFactory = Callable[..., Model]
_REGISTRY: dict[str, tuple[ModelFactory | str, str]] = {
    "scripted": ("rockroll.models.scripted:from_spec", "scripted:PATH"),
    "openai": ("rockroll.models.openai_compat:from_spec", "openai:MODEL[@BASE_URL]"),
    "local": ("rockroll.models.local:from_spec", "local:smollm2|local:PATH"),
}


def register_model(prefix: str, factory: ModelFactory | str, usage: str | None = None) -> None:
    """Make `make_model("PREFIX:REST", **kw)` call `factory(REST, **kw)`.

    `factory` is a callable or "module:function"; `usage` (e.g. "local:NAME") is shown when a
    spec is not understood.
    """
    _REGISTRY[prefix] = (factory, usage or f"{prefix}:...")


def make_model(spec: str, **kwargs: Any) -> Model:
    """Build a backend from a spec string such as "openai:gpt-4o-mini@https://host/v1"."""
    prefix, sep, rest = spec.partition(":")
    if not sep or prefix not in _REGISTRY:
        usages = ", ".join(usage for _, usage in _REGISTRY.values())
        raise ModelError(f"unknown model spec {spec!r}; use {usages}")
    if not rest:
        raise ModelError(f"model spec {spec!r} is missing what follows '{prefix}:'")
    return _factory(prefix)(rest, **kwargs)


def _factory(prefix: str) -> ModelFactory:
    factory, usage = _REGISTRY[prefix]
    if callable(factory):
        return factory
    module, _, name = factory.partition(":")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ModelError(
            f"model backend {prefix!r} ({usage}) cannot be loaded from {factory}: {exc}; "
            "install the extra it needs (pip install 'rockroll[local]' for local models)"
        ) from exc
    _REGISTRY[prefix] = (found, usage)
    return found
