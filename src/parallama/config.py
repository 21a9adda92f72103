"""Load and validate a fleet config (`config.json`: a reviewer and workers, each an `api_url` and a `model`) into
typed agents and servers."""

from __future__ import annotations

import difflib
import json
import os
import re
from typing import Any, Literal, Mapping, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, ValidationInfo, field_validator

from .errors import ConfigError, ConfigErrors
from .backends import backend_for, parse_api_url
from .fleet import MAX_ANSWER_CHARS, Agent, Fleet, Hedge, Quorum, Replica, Role, Samples, Server
from .slots import check_environment, check_setting
from .review import DEFAULT_STRATEGY, STRATEGIES, VOTING, votes_over_samples
from .urls import Protocol, credentials, public_url, server_of

WORKER_TIMEOUT_S = 60.0
REVIEWER_TIMEOUT_S = 120.0

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ---------------------------------------------------------------- the file's schema


class HedgeSpec(BaseModel):
    """A pool's hedged requests: a copy onto another replica's idle slot when the first token is late."""

    model_config = ConfigDict(extra="forbid")

    after_s: float | None = Field(default=None, gt=0)
    "Seconds without a first token before a copy is sent."
    percentile: float | None = Field(default=None, ge=50, lt=100)
    "Instead of `after_s`: this percentile of the pool's recent times to first token (once 20 are known)."


class AgentSpec(BaseModel):
    """One agent as written in the file."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    "Shown in the view and output; defaults to the model."
    api_url: str | list[Any]
    "Ollama `/api/chat` (or bare host:port) or OpenAI-compatible `/v1`, `/v1/chat/completions`; or a list of such "
    "URLs, servers holding the same model (a pool: each request goes to one with a free slot)."
    model: str = Field(min_length=1)
    "Model name as the server knows it (`llama3:8b`)."
    timeout: float | None = Field(default=None, gt=0, strict=True)
    "Seconds from sending the request to its last token."
    system: str | None = None
    "System prompt."
    options: dict[str, Any] = Field(default_factory=dict)
    "Ollama `options` (temperature, num_ctx, num_gpu...); mapped to OpenAI fields where they exist."
    api_key_env: str | None = None
    "Name of the environment variable holding an API key, sent as a Bearer token."
    think: StrictBool | Literal["low", "medium", "high"] | None = None
    "Reasoning models: think or not (Ollama's `think`), or how hard (`reasoning_effort` on OpenAI-compatible)."
    required: StrictBool = False
    "A worker the run always waits for: a quorum or a settled vote never cuts it."
    max_answer_chars: int | None = Field(default=None, gt=0, strict=True)
    "The most characters of answer and thinking read from one request (default 1,000,000); more fails it as too_long."
    hedge: HedgeSpec | None = None
    "A pool only: when the first token is late, a copy onto another replica's idle slot nobody waits for; the first "
    "to answer wins (at most 10 % of the pool's requests)."

    @field_validator("api_url", mode="before")
    @classmethod
    def _url_or_pool(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("an empty list: give one URL, or the URLs of servers holding the same model")
            return value  # each URL is checked where its place (api_url[i]) can be named
        if not isinstance(value, str):
            raise ValueError("must be a URL, or a list of URLs of servers holding the same model")
        parse_api_url(value)
        return value

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(f"{value!r} is not an environment variable name (the key itself never goes in the file)")
        return value


class ServerSpec(BaseModel):
    """Per-server settings under the top-level `servers` key."""

    model_config = ConfigDict(extra="forbid")

    parallel: int = Field(default=1, ge=1, strict=True)
    "Requests the server takes at once (OLLAMA_NUM_PARALLEL); more wait on the client side."


PROMPT_FIELDS = ("task", "answers", "answer_list")
ANSWER_FIELDS = ("answers", "answer_list")


def _template_fields(value: str) -> set[str]:
    """The placeholders of a reviewer template; ValueError for a broken one or an unknown placeholder."""
    import string

    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
    except ValueError as exc:
        raise ValueError(f"broken template: {exc} (write {{{{ and }}}} for literal braces)") from exc
    unknown = sorted(fields - set(PROMPT_FIELDS))
    if unknown:
        raise ValueError(f"unknown placeholder {{{unknown[0]}}}: use {{task}}, {{answers}} or {{answer_list}}")
    return fields


class QuorumSpec(BaseModel):
    """When the workers' stage stops waiting for stragglers."""

    model_config = ConfigDict(extra="forbid")

    min_answers: int = Field(ge=1, strict=True)
    "Once this many workers have answered, the rest get `grace_s` more, then are cut."
    grace_s: float = Field(default=0.0, ge=0)
    "Seconds the rest may still take once `min_answers` have answered."


class SamplesSpec(BaseModel):
    """Sampling more while the workers disagree (for a strategy that votes)."""

    model_config = ConfigDict(extra="forbid")

    max: int = Field(ge=1, le=20, strict=True)
    "The most answers each worker gives (its first included)."
    settle: float = Field(default=0.5, gt=0, le=1)
    "Stop once the leading short answer holds at least this share of the answers (and leads alone)."


class ReviewSpec(BaseModel):
    """How the reviewer combines the workers' answers."""

    model_config = ConfigDict(extra="forbid")

    strategy: str = Field(default=DEFAULT_STRATEGY, strict=True)
    "One of `review.STRATEGIES`."
    system: str | None = None
    "Template for the reviewer's system message (after the agent's own `system`); replaces the strategy's instructions."
    prompt: str | None = None
    "Template for the reviewer's user message, with {task} and {answers} (or {answer_list}); replaces the strategy's."
    rounds: int = Field(default=1, ge=1, le=10, strict=True)
    "Mixture-of-Agents layers: in round k+1 every worker sees the round-k answers and refines."
    quorum: QuorumSpec | None = None
    "Stop waiting for stragglers: once `min_answers` workers answered, the rest get `grace_s` more, then are cut."
    samples: SamplesSpec | None = None
    "Ask the workers again, with other seeds, while their short answers disagree (vote, confidence)."

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value not in STRATEGIES:
            *others, last = (repr(name) for name in STRATEGIES)
            raise ValueError(f"must be one of {', '.join(others)} or {last}")
        return value

    @field_validator("system")
    @classmethod
    def _system_placeholders(cls, value: str | None) -> str | None:
        if value is not None:
            _template_fields(value)
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_placeholders(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        fields = _template_fields(value)
        system = info.data.get("system")
        if system:
            fields |= _template_fields(system)
        if not fields & set(ANSWER_FIELDS):
            raise ValueError(f"must contain {{answers}} or {{answer_list}}{' (or system must)' if system else ''}, "
                             "or the reviewer never sees the workers' answers")
        return value


class ServeSpec(BaseModel):
    """What `parallama serve` does beyond running the fleet."""

    model_config = ConfigDict(extra="forbid")

    tools_agent: str | None = Field(default=None, min_length=1)
    "The agent (by name) that answers a request carrying tools; default: the first reviewer."
    tools: Literal["review", "agent", "ignore"] = "review"
    """What a request offering tools gets: `review` (the workers answer as usual and the reviewer that writes the
    reply gets the tools), `agent` (the tools agent answers alone), `ignore` (the ensemble answers without them)."""


class ConfigFile(BaseModel):
    """The whole config file."""

    model_config = ConfigDict(extra="forbid")

    reviewer_agent: list[AgentSpec] | None = Field(default=None, min_length=1)
    "One reviewer, or a list tried in order when one fails."
    worker_agents: list[AgentSpec] = Field(min_length=1)
    servers: dict[str, ServerSpec] = Field(default_factory=dict)
    review: ReviewSpec = Field(default_factory=ReviewSpec)
    slot_store: str | None = None
    "Who shares the servers' slots: `local` (every process on this machine, the default), `none`, or `redis://…`."
    serve: ServeSpec = Field(default_factory=ServeSpec)

    @field_validator("slot_store")
    @classmethod
    def _slot_store(cls, value: str | None) -> str | None:
        return None if value is None else check_setting(value)

    @field_validator("reviewer_agent", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @field_validator("servers")
    @classmethod
    def _server_keys(cls, value: dict[str, ServerSpec]) -> dict[str, ServerSpec]:
        for url in value:
            server_of(url)
        return value


# ---------------------------------------------------------------- loading


ConfigLike = Union[Fleet, str, "os.PathLike[str]", Mapping[str, Any]]
"A Fleet, a config file's path, or the config as a dict."


def as_fleet(config: ConfigLike) -> Fleet:
    """The validated fleet, from whatever the caller holds."""
    if isinstance(config, Fleet):
        return config
    if isinstance(config, Mapping):
        return fleet_from_dict(dict(config))
    return load_config(config)


MAX_CONFIG_BYTES = 1 << 20
"A config with 200 agents and long system prompts is under 200 KB; more is not a config (or `/dev/zero`)."
MAX_DEPTH = 64
"Nesting a config needs: 4 levels, plus whatever an agent's `options` hold."


def load_config(path: str | os.PathLike[str]) -> Fleet:
    """Read, parse and validate a config file; raise ConfigError naming file:line:col or the JSON path."""
    source = str(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)  # never more: the path may be a device or a huge file
    except FileNotFoundError as exc:
        raise ConfigError("no such file", source=source) from exc
    except IsADirectoryError as exc:
        raise ConfigError("is a directory, not a config file", source=source) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", source=source) from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES // 2**20} MiB, the most a config may be (one with 200 "
                          "agents is under 200 KB): is this the right file?", source=source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x})", source=source, line=line) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(exc.msg, source=source, line=exc.lineno, column=exc.colno) from exc
    except RecursionError as exc:  # the parser's own limit, near 1,000 levels
        raise ConfigError(f"nested more than {MAX_DEPTH} levels deep (a config needs a few)",
                          source=source) from exc
    fleet = fleet_from_dict(data, source=source)
    check_environment()  # PARALLAMA_SLOT_STORE wins over the config's slot_store: checked as it is read
    return fleet


def fleet_from_dict(data: Any, *, source: str = "config") -> Fleet:
    """Validate a config already parsed from JSON."""
    if not isinstance(data, dict):
        raise ConfigError("must be a JSON object with a \"worker_agents\" list", source=source)
    _check_depth(data, source)
    try:
        spec = ConfigFile.model_validate(data)
    except ValidationError as exc:
        single_reviewer = isinstance(data.get("reviewer_agent"), dict)
        errors = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            if single_reviewer and loc[:2] == ("reviewer_agent", 0):
                err = {**err, "loc": ("reviewer_agent",) + loc[2:]}  # report it as the user wrote it
            errors.append(_config_error(err, source))
        raise ConfigErrors(errors) from exc
    return _resolve(spec, source)


def _resolve(spec: ConfigFile, source: str) -> Fleet:
    servers = {server_of(url): Server(url=server_of(url), parallel=s.parallel) for url, s in spec.servers.items()}
    warnings: list[str] = []
    taken: set[str] = set()
    errors: list[ConfigError] = []

    def pool(a: AgentSpec, where: str) -> tuple[Protocol, tuple[Replica, ...]] | None:
        """The agent's protocol and its replicas (one for a single URL); None when a URL of a list is wrong."""
        urls = a.api_url if isinstance(a.api_url, list) else [a.api_url]
        listed = isinstance(a.api_url, list)
        replicas: list[Replica] = []
        protocol: Protocol | None = None
        bad = False
        for i, url in enumerate(urls):
            path = f"{where}.api_url[{i}]" if listed else f"{where}.api_url"
            if not isinstance(url, str):
                errors.append(ConfigError("must be a string", source=source, json_path=path))
                bad = True
                continue
            try:
                kind, endpoint = parse_api_url(url)
                server = server_of(url)
            except ValueError as exc:
                errors.append(ConfigError(str(exc), source=source, json_path=path))
                bad = True
                continue
            if protocol is None:
                protocol = kind
            elif kind != protocol:
                errors.append(ConfigError(
                    f"speaks {kind}'s API, but {where}.api_url[0] speaks {protocol}'s: every server of a pool must "
                    "speak the same protocol", source=source, json_path=path))
                bad = True
                continue
            if any(r.server == server for r in replicas):
                errors.append(ConfigError(f"lists the server {server} twice", source=source, json_path=path))
                bad = True
                continue
            replicas.append(Replica(public_url(url), endpoint, server, credentials(url)))
        if bad or protocol is None:
            return None
        return protocol, tuple(replicas)

    def agent(a: AgentSpec, role: Role, where: str, default_timeout: float) -> Agent | None:
        found = pool(a, where)
        if found is None:
            return None
        protocol, replicas = found
        first = replicas[0]
        endpoint, server = first.endpoint, first.server
        for replica in replicas:
            servers.setdefault(replica.server, Server(url=replica.server))
        name = _unique(a.name or a.model, taken)
        if a.api_key_env and a.api_key_env not in os.environ:
            errors.append(ConfigError(
                f"environment variable {a.api_key_env} is not set", source=source, json_path=f"{where}.api_key_env"))
        url_auth = first.url_auth
        if any(r.url_auth for r in replicas) and a.api_key_env:
            errors.append(ConfigError(
                "api_url has a user:password and api_key_env names a key: both would be the Authorization header; "
                "keep one", source=source, json_path=f"{where}.api_key_env"))
        backend = backend_for(protocol)
        dropped = backend.unsent_options(a.options)
        if dropped:
            warnings.append(f"{where}.options: {', '.join(dropped)} has no {backend.label} field; not sent")
        hedge = None
        if a.hedge is not None:
            if (a.hedge.after_s is None) == (a.hedge.percentile is None):
                errors.append(ConfigError("give after_s (seconds) or percentile (of recent times to first token), "
                                          "one of them", source=source, json_path=f"{where}.hedge"))
            elif len(replicas) < 2:
                errors.append(ConfigError("hedging needs a pool: make api_url a list of servers of the same model",
                                          source=source, json_path=f"{where}.hedge"))
            else:
                hedge = Hedge(after_s=a.hedge.after_s, percentile=a.hedge.percentile)
        if a.required and role == "reviewer":
            errors.append(ConfigError("only a worker can be required (a quorum cuts workers, never reviewers)",
                                      source=source, json_path=f"{where}.required"))
        return Agent(
            name=name, role=role, model=a.model, api_url=first.api_url, protocol=protocol,
            endpoint=endpoint, server=server, timeout=a.timeout or default_timeout, system=a.system,
            options=dict(a.options), api_key_env=a.api_key_env, think=a.think, url_auth=url_auth,
            required=a.required, max_answer_chars=a.max_answer_chars or MAX_ANSWER_CHARS,
            replicas=replicas if len(replicas) > 1 else (), hedge=hedge,
        )

    made = [agent(a, "worker", f"worker_agents[{i}]", WORKER_TIMEOUT_S) for i, a in enumerate(spec.worker_agents)]
    listed = len(spec.reviewer_agent or []) > 1
    made_reviewers = [agent(r, "reviewer", f"reviewer_agent[{i}]" if listed else "reviewer_agent", REVIEWER_TIMEOUT_S)
                      for i, r in enumerate(spec.reviewer_agent or [])]
    workers = tuple(a for a in made if a is not None)
    reviewers = tuple(a for a in made_reviewers if a is not None)
    quorum = spec.review.quorum
    if quorum is not None and quorum.min_answers > len(spec.worker_agents):
        errors.append(ConfigError(f"must be at most the number of workers ({len(spec.worker_agents)})", source=source,
                                  json_path="review.quorum.min_answers"))
    samples = spec.review.samples
    if samples is not None and not votes_over_samples(spec.review.strategy):
        errors.append(ConfigError(f"samples need a strategy that votes ({', '.join(VOTING)}), not "
                                  f"{spec.review.strategy!r}", source=source, json_path="review.samples"))
    if samples is not None and spec.review.rounds > 1:
        errors.append(ConfigError("samples cannot be combined with rounds > 1 (sampling asks the first question "
                                  "again)", source=source, json_path="review.samples"))
    tools_agent = spec.serve.tools_agent
    if tools_agent is not None and tools_agent not in {a.name for a in workers + reviewers}:
        names = [a.name for a in workers + reviewers]
        close = difflib.get_close_matches(tools_agent, names, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else "the agents are " + ", ".join(map(repr, names))
        errors.append(ConfigError(f"no agent is named {tools_agent!r} ({hint})", source=source,
                                  json_path="serve.tools_agent"))
    if errors:
        raise ConfigErrors(errors)
    used = {r.server for a in workers + reviewers for r in a.pool}
    for url in spec.servers:
        if server_of(url) not in used:
            warnings.append(f"servers[{public_url(url)!r}]: no agent uses this server")
    return Fleet(workers=workers, reviewers=reviewers, servers=servers, strategy=spec.review.strategy,
                 review_prompt=spec.review.prompt, review_system=spec.review.system, rounds=spec.review.rounds,
                 source=source,
                 warnings=tuple(warnings), slot_store=spec.slot_store,
                 quorum=Quorum(quorum.min_answers, quorum.grace_s) if quorum is not None else None,
                 samples=Samples(samples.max, samples.settle) if samples is not None else None,
                 tools_agent_name=tools_agent, tools_mode=spec.serve.tools)


def _check_depth(data: Any, source: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH before anything recursive (validation, JSON for history) sees it."""
    level: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    for _ in range(MAX_DEPTH):
        level = [(child, loc + (key,)) for value, loc in level
                 for key, child in (value.items() if isinstance(value, dict) else
                                    enumerate(value) if isinstance(value, list) else ())
                 if isinstance(child, (dict, list))]
        if not level:
            return
    raise ConfigError(f"nested more than {MAX_DEPTH} levels deep (a config needs a few)", source=source,
                      json_path=json_path(level[0][1][:4]) + "…")


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name} ({n})"
    taken.add(candidate)
    return candidate


# ---------------------------------------------------------------- error messages

def json_path(loc: tuple[Any, ...]) -> str:
    """`('worker_agents', 1, 'timeout')` → `worker_agents[1].timeout`."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i > 0 and loc[0] == "servers" and i == 1:
            out += f"[{json.dumps(public_url(str(part)))}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _schema_at(parent: tuple[Any, ...]) -> type[BaseModel] | None:
    if not parent:
        return ConfigFile
    head = parent[0]
    if head in ("worker_agents", "reviewer_agent") and parent[-1] == "hedge":
        return HedgeSpec
    if head in ("worker_agents", "reviewer_agent"):
        return AgentSpec
    if head == "servers" and len(parent) == 2:
        return ServerSpec
    if head == "review" and len(parent) == 1:
        return ReviewSpec
    if parent == ("review", "quorum"):
        return QuorumSpec
    if parent == ("review", "samples"):
        return SamplesSpec
    if head == "serve" and len(parent) == 1:
        return ServeSpec
    return None


def _config_error(err: Mapping[str, Any], source: str) -> ConfigError:
    loc = tuple(err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        key = str(loc[-1])
        schema = _schema_at(loc[:-1])
        known = list(schema.model_fields) if schema else []
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else (f" (known keys: {', '.join(known)})" if known else "")
        return ConfigError(f"unknown key {key!r}{hint}", source=source, json_path=json_path(loc[:-1]) or None)
    messages = {
        "missing": "is required",
        "string_type": "must be a string",
        "dict_type": "must be an object",
        "model_type": "must be an object",
        "model_attributes_type": "must be an object",
        "list_type": "must be a list",
        "float_type": "must be a positive number",
        "int_type": "must be a whole number",
        "literal_error": f"must be one of {ctx.get('expected', '')}",
    }
    if kind == "greater_than" and ctx.get("gt") == 0:
        message = "must be a positive number"
    elif kind == "greater_than_equal":
        message = f"must be at least {ctx.get('ge')}"
    elif kind == "too_short" and loc == ("worker_agents",):
        message = "needs at least one worker agent"
    elif kind == "string_too_short":
        message = "must not be empty"
    elif kind == "value_error":
        message = str(ctx.get("error") or err["msg"])
    else:
        message = messages.get(kind, err["msg"])
    return ConfigError(message, source=source, json_path=json_path(loc) or None)
