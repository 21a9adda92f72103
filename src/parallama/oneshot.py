"""`run` and `run_sync`: one run over a throwaway FleetClient, as `httpx.get` sits beside `httpx.Client`.

Several concurrent `run()` calls in one event loop still share each server's slots: the gates belong to the loop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Sequence

from .client import FleetClient
from .config import ConfigLike
from .events import EventSink
from .history import History, HistoryWriter
from .result import RunResult

if TYPE_CHECKING:
    from .backends import Message


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
    review the answers with the strategy; return the result. `history=True` keeps the run in the history db (a
    `History` there keeps it in that one). `context`: earlier turns of the conversation `prompt` continues (see
    `FleetClient.run`)."""
    store = History() if history is True else history or None  # first: a HistoryError here leaves nothing open
    try:
        async with FleetClient(config) as client:
            if store is not None:
                client.subscribe(HistoryWriter(store))
            return await client.run(prompt, deadline=deadline, review=review, strategy=strategy, on_event=on_event,
                                    seed=seed, context=context)
    finally:
        if history is True and store is not None:
            store.close()


def run_sync(prompt: str, config: ConfigLike, **kwargs: Any) -> RunResult:
    """Blocking twin of `run` for scripts (not inside a running event loop)."""
    return asyncio.run(run(prompt, config, **kwargs))
