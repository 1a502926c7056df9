"""The base class of rockroll's environments: `gymnasium.Env` when gymnasium is installed (the
`gym` extra), otherwise a stand-in with the same seeding, so that `TaskEnv` works either way
and draws the same tasks from the same seed.

Gymnasium's spaces (`observation_space`, `action_space`) exist only with gymnasium installed;
without it they are None.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

try:
    import gymnasium
except ImportError:  # the `gym` extra is not installed
    gymnasium = None  # type: ignore[assignment]

HAVE_GYMNASIUM = gymnasium is not None


class _StandIn:
    """What `TaskEnv` uses of `gymnasium.Env`, for installs without gymnasium."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    render_mode: str | None = None
    spec: Any = None
    _np_random: np.random.Generator | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
                raise ValueError(f"reset(seed=...): a non-negative integer, got {seed!r}")
            self._np_random = np.random.default_rng(seed)
        return None, {}

    @property
    def np_random(self) -> np.random.Generator:
        if self._np_random is None:
            self._np_random = np.random.default_rng()
        return self._np_random

    @property
    def unwrapped(self) -> _StandIn:
        return self


EnvBase: type = gymnasium.Env if gymnasium is not None else _StandIn
"""`gymnasium.Env`, or the stand-in when gymnasium is not installed."""
