"""The fleet as the rest of parallama sees it: agents (workers and reviewers, resolved from the config), the servers
they use, and the review settings. `config` builds a Fleet from a file; code may build one directly."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Literal, Mapping

from .urls import Protocol, basic_auth

Role = Literal["worker", "reviewer"]

@dataclass(frozen=True)
class Quorum:
    """Once `min_answers` workers have answered, the rest get at most `grace_s` more, then are cut (`cutoff`)."""

    min_answers: int
    grace_s: float = 0.0


@dataclass(frozen=True)
class Samples:
    """While the leading short answer holds less than `settle` of the answers, ask every worker again (another
    seed), up to `max` answers each (`sampling`)."""

    max: int
    settle: float = 0.5


@dataclass(frozen=True)
class Server:
    """A model server, `scheme://host:port`, and how many requests it takes at once."""

    url: str
    parallel: int = 1


@dataclass(frozen=True)
class Replica:
    """One server of an agent's pool: where its requests go when this replica takes them."""

    api_url: str
    "Without its `user:password@`."
    endpoint: str
    server: str
    url_auth: tuple[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Hedge:
    """When a pooled request's first token is late (`after_s`, or this percentile of the pool's recent times to
    first token), a copy goes to another replica's idle slot; the first to answer wins."""

    after_s: float | None = None
    percentile: float | None = None


MAX_ANSWER_CHARS = 1_000_000
"""An answer's bound by default (≈ 250,000 tokens: more than any model writes in one answer). A server that streams
on past it is broken or hostile; it fails only that agent, and keeps the client's memory bounded."""


@dataclass(frozen=True, eq=False)
class Agent:
    """One worker or reviewer, resolved: protocol, endpoint and server known, defaults applied."""

    name: str
    role: Role
    model: str
    api_url: str
    protocol: Protocol
    endpoint: str
    server: str
    timeout: float
    system: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    api_key_env: str | None = None
    required: bool = False
    "A worker a quorum or a settled vote never cuts."
    think: bool | str | None = None
    "Sent as Ollama's `think`, or OpenAI-compatible `reasoning_effort` (levels) / `enable_thinking` (on, off)."
    max_answer_chars: int = MAX_ANSWER_CHARS
    "The most characters of answer and thinking together read from one request; more fails it as `too_long`."
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    "Raw request fields merged into the body (set by code, such as the embedded fleet; not from the file)."
    url_auth: tuple[str, str] | None = field(default=None, repr=False)
    "(user, password) from the api_url's `user:password@`, sent as HTTP Basic auth. `api_url` and `endpoint` are "
    "kept without it, so whatever shows or stores them cannot leak it."
    replicas: tuple[Replica, ...] = ()
    "A pool: every server of the same model this agent's requests may go to (`api_url` a list in the config; the "
    "first is `api_url`/`endpoint`/`server`). Empty: the agent's one server."
    hedge: Hedge | None = None
    "A pool's hedged requests (None: off, the default)."

    @property
    def pool(self) -> tuple[Replica, ...]:
        """The servers this agent's requests may go to: its replicas, or its one server."""
        return self.replicas or (Replica(self.api_url, self.endpoint, self.server, self.url_auth),)

    @property
    def pooled(self) -> bool:
        return len(self.replicas) > 1

    def on(self, replica: Replica) -> "Agent":
        """This agent as sent to `replica`."""
        if replica.endpoint == self.endpoint and replica.url_auth == self.url_auth:
            return self
        return replace(self, api_url=replica.api_url, endpoint=replica.endpoint, server=replica.server,
                       url_auth=replica.url_auth)

    def api_key(self) -> str | None:
        """The key from the environment, read when a request is made; never stored or shown."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def authorization(self) -> str | None:
        """The `Authorization` header: `Bearer <key>` from api_key_env, or `Basic …` from the URL's user:password."""
        key = self.api_key()
        if key:
            return f"Bearer {key}"
        if self.url_auth:
            return basic_auth(*self.url_auth)
        return None

    def secrets(self) -> list[str]:
        """What this agent sends that must never be shown or stored: its key, its URL password (and both as the
        Authorization header carries them)."""
        found = []
        key = self.api_key()
        if key:
            found.append(key)
        auths = [self.url_auth] + [r.url_auth for r in self.replicas]
        for auth in dict.fromkeys(a for a in auths if a):
            found.append(auth[1])
            found.append(basic_auth(*auth).split(" ", 1)[1])
        return [s for s in found if s]

    def __repr__(self) -> str:
        return f"Agent(name={self.name!r}, model={self.model!r}, api_url={self.api_url!r})"


@dataclass(frozen=True)
class Fleet:
    """The validated config: workers in config order, an optional reviewer, and the servers they use."""

    workers: tuple[Agent, ...]
    reviewers: tuple[Agent, ...]
    "Tried in order until one succeeds; empty when there is no review."
    servers: Mapping[str, Server]
    strategy: str = "synthesize"
    ("A name in `review.STRATEGIES`, which the config checks; the default is the registry's first (a contract test "
     "holds them equal: the fleet sits below the strategies and cannot ask them).")
    review_prompt: str | None = None
    review_system: str | None = None
    rounds: int = 1
    source: str = "config"
    warnings: tuple[str, ...] = ()
    slot_store: str | None = None
    "The config's `slot_store` (PARALLAMA_SLOT_STORE wins over it when the client opens)."
    quorum: Quorum | None = None
    "Cut the workers' stragglers once enough have answered (None: wait for every worker)."
    samples: Samples | None = None
    "Ask the workers again while their answers disagree, for a strategy that votes (None: one answer each)."
    tools_agent_name: str | None = None
    "The config's `serve.tools_agent`."
    tools_mode: str = "review"
    "The config's `serve.tools`: `review`, `agent` or `ignore`."

    @property
    def reviewer(self) -> Agent | None:
        """The first reviewer (the others are its fallbacks)."""
        return self.reviewers[0] if self.reviewers else None

    @property
    def tools_agent(self) -> Agent | None:
        """The agent that answers `serve`'s requests carrying tools: the one `serve.tools_agent` names, else the
        first reviewer; None when there is neither."""
        if self.tools_agent_name is None:
            return self.reviewer
        return next((a for a in self.agents if a.name == self.tools_agent_name), None)

    @property
    def agents(self) -> tuple[Agent, ...]:
        return self.workers + self.reviewers

    def secrets(self) -> list[str]:
        """Every key and URL password its agents send (keys as the environment holds them now)."""
        return secrets_of(self.agents)

    def with_extra_body(self, extra: Mapping[str, Any]) -> "Fleet":
        """The same fleet with `extra` merged into every agent's request body."""
        def add(agent: Agent) -> Agent:
            return replace(agent, extra_body={**agent.extra_body, **extra})

        return replace(self, workers=tuple(add(w) for w in self.workers),
                       reviewers=tuple(add(r) for r in self.reviewers))


def secrets_of(agents: Iterable[Agent]) -> list[str]:
    """Every key and URL password these agents send, for a Redactor."""
    return [secret for agent in agents for secret in agent.secrets()]
