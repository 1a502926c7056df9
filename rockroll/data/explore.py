"""The strategies by name: what `--strategy` chooses from, and where a plug-in registers."""

from __future__ import annotations

from rockroll.data.commits import CommitReplay
from rockroll.data.model_bugs import ModelBugs
from rockroll.data.strategies import BugInjection, FeatureRemoval, Strategy
from rockroll.data.workflows import TerminalWorkflows
from rockroll.errors import UsageError
from rockroll.models.base import Model

STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (BugInjection(), FeatureRemoval(), CommitReplay(), ModelBugs(), TerminalWorkflows())
}
DEFAULT = ("bug-injection", "feature-removal", "commit-replay")  # deterministic: no model


def register_strategy(strategy: Strategy) -> None:
    """Make `strategy` (a `name`, `drafts` and `instruction`) a choice of `--strategy`."""
    STRATEGIES[strategy.name] = strategy


def needs_model(names: list[str]) -> list[str]:
    return [n for n in names if getattr(STRATEGIES.get(n), "needs_model", False)]


def check_strategies(names: list[str], with_model: bool) -> None:
    """Refuse, with what to do, a name not known or one that needs a model when there is none."""
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise UsageError(
            f"--strategy: unknown {', '.join(unknown)}; known: {', '.join(sorted(STRATEGIES))}"
        )
    if (wanting := needs_model(names)) and not with_model:
        raise UsageError(
            f"--strategy {', '.join(wanting)} drafts with a model: add --model SPEC "
            "(e.g. openai:NAME@URL or local:smollm2)"
        )


def get_strategies(names: list[str], model: Model | None = None) -> list[Strategy]:
    """The strategies named, those that draft with a model handed `model`."""
    check_strategies(names, model is not None)
    found: list[Strategy] = []
    for name in names:
        strategy = STRATEGIES[name]
        if model is not None and getattr(strategy, "needs_model", False):
            strategy = strategy.with_model(model)  # type: ignore[attr-defined]
        found.append(strategy)
    return found
