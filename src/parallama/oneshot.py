"""`run` and `run_sync`: one run over a throwaway FleetClient, as `httpx.get` sits beside `httpx.Client`.

Several concurrent `run()` calls in one event loop still share each server's slots: the gates belong to the loop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Sequence

from .client import FleetClient
from .config import ConfigLike
from .events import EventSink
from .result import RunResult

if TYPE_CHECKING:
    from .backends import Message
    from .history import History


async def run(
    prompt: str,
    config: ConfigLike,
    *,
    deadline: float | None = None,
    review: bool = True,
    strategy: str | None = None,
    on_event: EventSink | None = None,
    history: "bool | History" = False,
    seed: int | None = None,
    context: "Sequence[Message] | None" = None,
) -> RunResult:
    """Run every worker on `prompt` in parallel (within server slots), `rounds` times when the config asks, then
    review the answers with the strategy; return the result. `history=True` keeps the run in the history db.
    `context`: earlier turns of the conversation `prompt` continues (see `FleetClient.run`)."""
    async with FleetClient(config, history=history) as client:
        return await client.run(prompt, deadline=deadline, review=review, strategy=strategy, on_event=on_event,
                                seed=seed, context=context)


def run_sync(prompt: str, config: ConfigLike, **kwargs: Any) -> RunResult:
    """Blocking twin of `run` for scripts (not inside a running event loop)."""
    return asyncio.run(run(prompt, config, **kwargs))
