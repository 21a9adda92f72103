"""Pools: one agent served by several servers of the same model (its replicas), below the calls and over the gates.

A request takes a replica with a free slot: one where the model is loaded first (Ollama's `/api/ps`), then one whose
recent time to first token is not clearly worse, then the one this process sent fewest requests; ties at random,
never by list order. When none is free it waits at every replica's gate at once, in its one place in the order
(the run's start, then its order in the run), and takes whichever frees first; past the gates the shared slots do
the same across processes and hosts, so the pool has one queue and no idle replica while a request waits.

A replica that refuses the connection or fails before the first token (5xx, the stream broken) is benched for a
back-off and the request goes to another at once; after the first token there is no retry. A benched replica is
probed (`GET /`) when its back-off ends and comes back as soon as it answers. With every replica benched, the
request fails with one line naming them all.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from .backends import backend_for
from .errors import BackendError, HTTPStatus, Malformed, StreamBroken, Unreachable
from .probe import same_model

if TYPE_CHECKING:
    import aiohttp

    from .backends.base import Completion
    from .fleet import Agent, Hedge, Replica
    from .gates import Gate, Priority

BENCH_S = 1.0
"A replica's first back-off; doubled each time its probe finds it still down, up to BENCH_MAX_S."
BENCH_MAX_S = 30.0
PROBE_TIMEOUT_S = 2.0
WARM_FRESH_S = 10.0
"How long what a replica's `/api/ps` said counts as fresh."
TTFT_TIE = 1.25
TTFT_TIE_S = 0.05
"Recent times to first token within 25 % (and 50 ms) of the fastest replica's count as equally fast."
TTFT_WEIGHT = 0.3
"Weight of the newest time to first token in a replica's running average."
TTFT_FRESH_REQUESTS = 20
("A replica's time to first token counts while fewer pooled requests than this were sent since it was measured: "
 "one left aside as slower is tried again then, so an old measurement never starves it.")
HEDGE_BUDGET = 0.10
"At most this share of a pool's requests get a hedged copy."
HEDGE_MIN_TTFTS = 20
"A percentile hedge waits until this many times to first token are known."
HEDGE_POLL_S = 0.02
"Past the threshold, how often a late request looks again for an idle replica."
TTFT_KEPT = 200


@dataclass(eq=False)
class ReplicaHealth:
    """What this process knows of one server as a replica: benched or not, how fast it answered, what it has
    loaded. Readable by status views and metrics (`health_of`)."""

    server: str
    benched_until: float = 0.0
    "`time.monotonic()` until which no request goes there (0: not benched)."
    why: str = ""
    "Why it was benched last."
    backoff_s: float = 0.0
    benched: int = 0
    "Times it was benched."
    ttft_s: float | None = None
    "Running average of its times to first token (seconds)."
    ttft_seq: int = 0
    "The loop's count of pooled requests when `ttft_s` was last measured."
    warm: dict[str, bool] = field(default_factory=dict)
    warm_at: float = -math.inf
    probing: "asyncio.Task[None] | None" = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def is_benched(self, now: float | None = None) -> bool:
        return self.benched_until > (time.monotonic() if now is None else now)

    def until_clock(self) -> str:
        """When the back-off ends, as this machine's clock reads it (HH:MM:SS)."""
        return time.strftime("%H:%M:%S", time.localtime(time.time() + max(0.0, self.benched_until - time.monotonic())))

    def answered(self, ttft_s: float | None) -> None:
        """A request here got its answer: back-off forgotten, its first token's time counted."""
        self.backoff_s = 0.0
        if ttft_s is not None:
            self.ttft_seq = _here().sent
            self.ttft_s = ttft_s if self.ttft_s is None else (1 - TTFT_WEIGHT) * self.ttft_s + TTFT_WEIGHT * ttft_s

    def is_warm(self, model: str) -> bool | None:
        if not self.warm:
            return None
        return any(same_model(model, name) for name, loaded in self.warm.items() if loaded)


@dataclass(eq=False)
class PoolStats:
    """One pool's requests in this process: how many, how many were hedged (and won by the copy), and its recent
    times to first token (for a percentile hedge)."""

    servers: tuple[str, ...]
    requests: int = 0
    hedges: int = 0
    hedges_won: int = 0
    "Hedged requests whose copy answered first."
    ttfts: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=TTFT_KEPT))

    def may_hedge(self) -> bool:
        """One more hedge stays within the budget (HEDGE_BUDGET of the pool's requests)."""
        return self.hedges + 1 <= HEDGE_BUDGET * self.requests

    def threshold(self, hedge: "Hedge") -> float | None:
        """Seconds without a first token before a copy goes out; None: not yet known (a percentile, too few)."""
        if hedge.after_s is not None:
            return hedge.after_s
        if hedge.percentile is None or len(self.ttfts) < HEDGE_MIN_TTFTS:
            return None
        ordered = sorted(self.ttfts)
        return ordered[min(len(ordered) - 1, int(len(ordered) * hedge.percentile / 100))]


class _Pools:
    """One event loop's replicas (by server) and the future that wakes waiting requests when one comes back."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.health: dict[str, ReplicaHealth] = {}
        self.stats: dict[tuple[str, ...], PoolStats] = {}
        self.sent = 0
        "Pooled requests sent so far (what a time to first token's age is counted in)."
        self.loop = loop
        self.changed: asyncio.Future[None] = loop.create_future()

    def notify(self) -> None:
        """A replica came back: requests waiting on the others look again."""
        if not self.changed.done():
            self.changed.set_result(None)
        self.changed = self.loop.create_future()


_pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pools]" = weakref.WeakKeyDictionary()


def _here() -> _Pools:
    loop = asyncio.get_running_loop()
    pools = _pools.get(loop)
    if pools is None:
        pools = _pools[loop] = _Pools(loop)
    return pools


def health_of(server: str) -> ReplicaHealth:
    """The running loop's knowledge of `server` as a replica (made on first use)."""
    pools = _here()
    health = pools.health.get(server)
    if health is None:
        health = pools.health[server] = ReplicaHealth(server)
    return health


def stats_of(agent: "Agent") -> PoolStats:
    """The running loop's counts for `agent`'s pool (by its servers: agents on the same pool share them)."""
    pools = _here()
    servers = tuple(r.server for r in agent.pool)
    stats = pools.stats.get(servers)
    if stats is None:
        stats = pools.stats[servers] = PoolStats(servers)
    return stats


def known_pools(loop: asyncio.AbstractEventLoop | None) -> dict[tuple[str, ...], PoolStats]:
    """Every pool `loop` has sent to, with its counts (requests, hedges)."""
    pools = _pools.get(loop) if loop is not None else None
    return dict(pools.stats) if pools is not None else {}


def known_health(loop: asyncio.AbstractEventLoop | None) -> dict[str, ReplicaHealth]:
    """Every replica `loop` has sent to, by server (for status views and metrics; safe from any thread)."""
    pools = _pools.get(loop) if loop is not None else None
    return dict(pools.health) if pools is not None else {}


class PooledCall(Protocol):
    """What a pool needs of a request (`calls._Call`)."""

    agent: "Agent"
    priority: "Priority"
    sent_at: float | None
    first_at: float | None

    sent_to: "Agent | None"

    async def send(self, session: "aiohttp.ClientSession", replica: "Replica | None" = None,
                   may_retry: bool = False, hedging: "Hedging | None" = None) -> BackendError | None: ...

    def fail(self, error: BackendError) -> None: ...

    def note(self, line: str) -> None: ...


def retryable(error: BackendError) -> bool:
    """Whether a failure before the first token says the replica, not the request, is at fault."""
    if isinstance(error, Unreachable):
        return True
    if isinstance(error, StreamBroken) and not isinstance(error, Malformed):
        return True
    return isinstance(error, HTTPStatus) and error.status_code >= 500


async def send_pooled(session: "aiohttp.ClientSession", gate_of: Callable[[str], "Gate"], call: PooledCall) -> None:
    """Send `call` to a replica of its agent's pool, moving it on when a replica fails before the first token."""
    agent = call.agent
    stats = stats_of(agent)
    stats.requests += 1
    _here().sent += 1
    while True:
        try:
            replica, gate = await take(session, gate_of, agent, call.priority)
        except Unreachable as exc:
            call.fail(exc)
            return
        slot = _Slot(gate)
        hedging = Hedging(session, gate_of, call, replica, slot, stats) if agent.hedge is not None else None
        try:
            error = await call.send(session, replica, True, hedging)
        finally:
            slot.release()
        if error is None:
            sent, first = call.sent_at, call.first_at
            ttft = first - sent if first is not None and sent is not None else None
            served = call.sent_to.server if call.sent_to is not None else replica.server
            health_of(served).answered(ttft)
            if ttft is not None:
                stats.ttfts.append(ttft)
            return
        line = bench(replica, error)
        if line:
            call.note(line)


class _Slot:
    """A slot held on a gate, given back once however many times `release` is called."""

    __slots__ = ("gate",)

    def __init__(self, gate: "Gate") -> None:
        self.gate: "Gate | None" = gate

    def release(self) -> None:
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.release()


async def idle_replica(gate_of: Callable[[str], "Gate"], agent: "Agent",
                       but: "Replica") -> tuple["Replica", "Gate"] | None:
    """Another replica of the pool with a slot free that nobody waits for (in any process or host sharing the
    store), taken now; None when there is none."""
    others = [r for r in agent.pool if r != but and not health_of(r.server).is_benched()]
    for replica in random.sample(others, len(others)):
        gate = gate_of(replica.server)
        if not gate.idle():
            continue
        if await gate.take_if_free() if gate.asks_elsewhere() else gate.try_acquire():
            return replica, gate
    return None


class Hedging:
    """One pooled request's race: past the threshold with no first token, a copy onto an idle replica (within the
    budget); the first to produce a token wins, the other is closed and its slot freed at once."""

    def __init__(self, session: "aiohttp.ClientSession", gate_of: Callable[[str], "Gate"], call: PooledCall,
                 first: "Replica", slot: _Slot, stats: PoolStats) -> None:
        self.session = session
        self.gate_of = gate_of
        self.call = call
        self.first = first
        self.slot = slot
        self.stats = stats

    async def chat(self, chat_on: Callable[["Agent", Callable[[str], None], Callable[[str], None]],
                                           "asyncio.Future[Completion] | Any"],
                   on_delta: Callable[[str], None], on_thinking: Callable[[str], None]) -> "Completion":
        agent = self.call.agent
        assert agent.hedge is not None
        threshold = self.stats.threshold(agent.hedge)
        winner: list[int] = []
        tasks: dict[int, asyncio.Task[Completion]] = {}
        replicas = {0: self.first}
        slots = {0: self.slot}
        failed: set[int] = set()
        began = time.monotonic()

        def won(i: int) -> bool:
            if not winner:
                winner.append(i)
                for j, task in tasks.items():
                    if j != i:
                        task.cancel()  # closes its connection; its slot is freed once it has ended
            return winner[0] == i

        def sinks(i: int) -> tuple[Callable[[str], None], Callable[[str], None]]:
            def delta(text: str) -> None:
                if won(i):
                    on_delta(text)

            def thinking(text: str) -> None:
                if won(i):
                    on_thinking(text)
            return delta, thinking

        def start(i: int) -> None:
            tasks[i] = asyncio.ensure_future(chat_on(agent.on(replicas[i]), *sinks(i)))

        start(0)
        try:
            while True:
                live = [t for t in tasks.values() if not t.done()]
                if winner or not live:
                    break
                may_copy = threshold is not None and len(tasks) == 1
                wait_s = None
                if may_copy:
                    wait_s = max(0.0, began + threshold - time.monotonic()) or HEDGE_POLL_S  # type: ignore[operator]
                await asyncio.wait(live, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
                for i, task in tasks.items():
                    if not task.done() or task.cancelled():
                        continue
                    error = task.exception()
                    if error is None:
                        won(i)  # answered with no token at all (tool calls only, an empty answer)
                    elif i not in failed and isinstance(error, BackendError) and retryable(error):
                        failed.add(i)
                        line = bench(replicas[i], error)
                        if line:
                            self.call.note(line)
                if winner:
                    break
                if tasks[0].done() and (len(tasks) == 1 or tasks[1].done()):
                    break
                if (may_copy and time.monotonic() >= began + threshold  # type: ignore[operator]
                        and not tasks[0].done() and self.stats.may_hedge()):
                    spare = await idle_replica(self.gate_of, agent, self.first)
                    if spare is not None:
                        replicas[1], gate = spare
                        slots[1] = _Slot(gate)
                        self.stats.hedges += 1
                        start(1)
            if not winner:  # every attempt failed before a token: the first one's error (a retry may follow)
                return await tasks[0]
            w = winner[0]
            for i, task in tasks.items():
                if i != w:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    slots[i].release()  # the loser's slot goes on at once
            self.call.sent_to = agent.on(replicas[w])
            if len(tasks) > 1:
                if w == 1:
                    self.stats.hedges_won += 1
                    health_of(self.first.server).answered(time.monotonic() - began)  # at least this slow
                loser = replicas[1 - w]
                self.call.note(
                    f"hedged: no first token from {self.first.api_url} after {threshold:.2g} s, a copy went to "
                    f"{replicas[1].api_url}; {replicas[w].api_url} answered first, {loser.api_url}'s request was "
                    f"closed (the pool's hedges: {self.stats.hedges} of {self.stats.requests} requests, at most "
                    f"{HEDGE_BUDGET:.0%})")
            return await tasks[w]
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            for i, slot in slots.items():
                if i != 0:
                    slot.release()


def bench(replica: "Replica", error: BackendError) -> str | None:
    """Bench `replica` for its back-off; the line that says so (None: it was benched already)."""
    health = health_of(replica.server)
    if not health.is_benched():
        health.backoff_s = min(BENCH_MAX_S, health.backoff_s * 2 or BENCH_S)
        health.benched_until = time.monotonic() + health.backoff_s
        health.benched += 1
        health.why = error.cause
        if health.probing is None or health.probing.done():
            health.probing = asyncio.get_running_loop().create_task(_probe(health))
        return (f"replica {replica.api_url} benched until {health.until_clock()} ({health.why}); "
                "its requests go to the other replicas")
    return None


async def _probe(health: ReplicaHealth) -> None:
    """Once the back-off ends, ask the server; answered, it is back (and waiting requests look again), else the
    back-off doubles."""
    import aiohttp

    while True:
        await asyncio.sleep(max(0.0, health.benched_until - time.monotonic()))
        health.benched_until = time.monotonic() + PROBE_TIMEOUT_S  # still benched while it is asked
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)) as session:
                async with session.get(health.server + "/") as response:
                    up = response.status < 500
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            up = False
        if up:
            health.benched_until = 0.0
            _here().notify()
            return
        health.backoff_s = min(BENCH_MAX_S, health.backoff_s * 2 or BENCH_S)
        health.benched_until = time.monotonic() + health.backoff_s


def all_down(agent: "Agent") -> Unreachable:
    """The one line for a pool whose every replica is benched."""
    parts = []
    for replica in agent.pool:
        health = health_of(replica.server)
        parts.append(f"{replica.api_url} ({health.why or 'down'}; benched until {health.until_clock()})")
    return Unreachable("every replica of its pool is down: " + "; ".join(parts),
                       agent=agent.name, url=f"{len(agent.pool)} replicas",
                       hint="start them, or take the dead ones out of api_url")


def preferred(session: "aiohttp.ClientSession", gate_of: Callable[[str], "Gate"], agent: "Agent",
              replicas: list["Replica"]) -> list["Replica"]:
    """`replicas` best first: warm, not clearly slower to answer, fewest sent; ties at random."""
    healths = {r.server: health_of(r.server) for r in replicas}
    _check_warmth(session, agent, replicas, healths)
    sent = _here().sent
    recent = {server: h.ttft_s for server, h in healths.items()
              if h.ttft_s is not None and sent - h.ttft_seq < TTFT_FRESH_REQUESTS}
    best = min(recent.values()) if recent else None

    def rank(replica: "Replica") -> tuple[bool, bool, int]:
        health = healths[replica.server]
        ttft = recent.get(replica.server)
        slow = best is not None and ttft is not None and ttft > best * TTFT_TIE + TTFT_TIE_S
        return (health.is_warm(agent.model) is not True, slow, gate_of(replica.server).served)

    shuffled = random.sample(replicas, len(replicas))
    return sorted(shuffled, key=rank)


def _check_warmth(session: "aiohttp.ClientSession", agent: "Agent", replicas: list["Replica"],
                  healths: dict[str, ReplicaHealth]) -> None:
    """Ask (in the background) the replicas whose loaded models are not known lately (a backend that cannot say
    answers None: nothing is preferred)."""
    if session.closed:
        return
    loaded_models = backend_for(agent.protocol).loaded_models
    now = time.monotonic()
    for replica in replicas:
        health = healths[replica.server]
        if now - health.warm_at < WARM_FRESH_S:
            continue
        health.warm_at = now
        task = asyncio.get_running_loop().create_task(_ask_warmth(loaded_models, session, agent.on(replica), health))
        health._tasks.add(task)
        task.add_done_callback(health._tasks.discard)


async def _ask_warmth(loaded_models: Any, session: "aiohttp.ClientSession", agent: "Agent",
                      health: ReplicaHealth) -> None:
    try:
        names = await loaded_models(session, agent)
    except RuntimeError:  # the session closed meanwhile
        return
    if names is not None:
        health.warm = {name: True for name in names} or {"": False}


async def take(session: "aiohttp.ClientSession", gate_of: Callable[[str], "Gate"], agent: "Agent",
               priority: "Priority") -> tuple["Replica", "Gate"]:
    """A replica of `agent`'s pool and its gate, a slot held (give it back with `gate.release()`); Unreachable
    when every replica is benched."""
    while True:
        live = [r for r in agent.pool if not health_of(r.server).is_benched()]
        if not live:
            raise all_down(agent)
        ordered = preferred(session, gate_of, agent, live)
        for replica in ordered:
            gate = gate_of(replica.server)
            if gate.try_acquire():
                return replica, gate
        for replica in ordered:  # slots known only by asking (Redis): one round trip where one looks free
            gate = gate_of(replica.server)
            if gate.asks_elsewhere() and gate.idle() and await gate.take_if_free():
                return replica, gate
        got = await _first_free(gate_of, ordered, priority)
        if got is None:
            continue  # a replica came back: look again
        replica, gate = got
        if health_of(replica.server).is_benched():
            gate.release()  # benched while we waited: wait on the others
            continue
        return replica, gate


async def _first_free(gate_of: Callable[[str], "Gate"], ordered: list["Replica"],
                      priority: "Priority") -> tuple["Replica", "Gate"] | None:
    """Wait at every replica's gate at once; the first to let us through wins (several at once: the best of
    them), the others are left (a slot one gave us meanwhile goes on to the next waiting). None: a replica came
    back while we waited."""
    changed = _here().changed
    gates = {r.server: gate_of(r.server) for r in ordered}
    tasks = {asyncio.ensure_future(gates[r.server].acquire(priority)): r for r in ordered}
    cancelled = False
    try:
        await asyncio.wait([*tasks, changed], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        cancelled = True
        raise
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        held = [replica for task, replica in tasks.items() if not task.cancelled() and task.exception() is None]
        keep = None if cancelled else next((r for r in ordered if r in held), None)
        for replica in held:
            if replica is not keep:
                gates[replica.server].release()
    if keep is None:
        return None
    return keep, gates[keep.server]
