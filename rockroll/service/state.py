"""What every route of the API shares, kept on `app.state.service` and reached with the `Svc`
dependency: the pool (and its store), the per-token slots, the metrics, the size limits and
the token cache."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from rockroll.service.auth import TokenCache
from rockroll.service.metrics import Metrics
from rockroll.service.pool import Pool
from rockroll.service.slots import Slots
from rockroll.service.store import Store

VERSION = "1"


@dataclass(frozen=True)
class Limits:
    """Bytes the server takes and gives at most (`rockroll serve --max-*`)."""

    upload: int  # one file or tree upload
    download: int  # one file read (GET /files)
    tree: int  # the files of one tree read (GET /tree)


@dataclass
class Service:
    """The state of one app."""

    pool: Pool
    slots: Slots
    metrics: Metrics
    limits: Limits
    tokens: TokenCache
    started: float = field(default_factory=time.time)

    @property
    def store(self) -> Store:
        return self.pool.store


async def service(request: Request) -> Service:
    """The app's `Service` (async: a dependency that is a plain function costs a thread hop)."""
    return request.app.state.service  # type: ignore[no-any-return]


Svc = Annotated[Service, Depends(service)]
