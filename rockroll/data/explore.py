"""The strategies by name: what `--strategy` chooses from, and where a plug-in registers."""

from __future__ import annotations

from rockroll.data.commits import CommitReplay
from rockroll.data.strategies import BugInjection, FeatureRemoval, Strategy
from rockroll.errors import UsageError

STRATEGIES: dict[str, Strategy] = {
    s.name: s for s in (BugInjection(), FeatureRemoval(), CommitReplay())
}
DEFAULT = ("bug-injection", "feature-removal", "commit-replay")


def register_strategy(strategy: Strategy) -> None:
    """Make `strategy` (a `name`, `drafts` and `instruction`) a choice of `--strategy`."""
    STRATEGIES[strategy.name] = strategy


def get_strategies(names: list[str]) -> list[Strategy]:
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise UsageError(
            f"--strategy: unknown {', '.join(unknown)}; known: {', '.join(sorted(STRATEGIES))}"
        )
    return [STRATEGIES[n] for n in names]
