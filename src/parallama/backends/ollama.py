"""Ollama's native `/api/chat`: NDJSON lines until one says `done: true` with the metrics (durations in ns); probed
through /api/version, /api/tags, /api/ps and /api/show."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Sequence

from pydantic import TypeAdapter
from typing_extensions import TypedDict, override

from ..errors import AgentTimeout, BackendError, HTTPStatus, StreamBroken
from ..ollama_commands import pull_command, serve_command
from ..urls import is_local, port_of
from .base import (Completion, Stream, bad_tool_call, mid_stream_error, open_stream, parse_chunk,
                   request_headers, token_logprobs)
from .chunks import OLLAMA_CHUNK
from .kind import Backend
from .messages import Message
from .probing import PROBE_TIMEOUT_S, ServerProbe, get_json, post_json, probe_transport
from .tools import Tool, ollama_messages

if TYPE_CHECKING:
    import aiohttp

    from ..fleet import Agent
    from .base import DeltaSink


class _Version(TypedDict, total=False):
    version: str


class _Model(TypedDict, total=False):
    name: str
    model: str
    size: int
    "Bytes in memory (/api/ps)."


class _Models(TypedDict, total=False):
    """Ollama's /api/tags and /api/ps."""

    models: List[_Model]


class _ShowDetails(TypedDict, total=False):
    parameter_size: str
    quantization_level: str


class _Show(TypedDict, total=False):
    """Ollama's /api/show, the parts `plan` reads (`model_info` values are checked where they are read)."""

    details: _ShowDetails
    model_info: Dict[str, Any]
    capabilities: List[str]


# What a server answers is typed where it is read, like every chunk of a chat: a wrong shape (or JSON nested too
# deep) is a ValueError here, "no usable answer", never a crash further on.
_VERSION, _MODELS, _SHOW = TypeAdapter(_Version), TypeAdapter(_Models), TypeAdapter(_Show)


class Ollama(Backend):
    """Ollama's native API."""

    name = "ollama"
    label = "Ollama"
    api_path = "/api/chat"
    default_context = 4096
    "Ollama's `num_ctx` when a model's Modelfile sets none (since 0.6.x; 2048 before)."

    @override
    def endpoint_for(self, base: str, path: str) -> str | None:
        if path == "" or path.endswith("/api/chat"):
            return base + (path or "/api/chat")
        return None

    @override
    def probe_base(self, endpoint: str) -> str:
        return endpoint.removesuffix("/api/chat")

    @override
    def unsent_options(self, options: Mapping[str, Any]) -> list[str]:
        return []  # Ollama's own names: all sent as they are

    @override
    def structured_output(self, schema: Mapping[str, Any], name: str) -> dict[str, Any]:
        return {"format": dict(schema)}

    @override
    def request_body(self, agent: "Agent", messages: list[Message], tools: Sequence[Tool] = (),
                     logprobs: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": agent.model, "stream": True}
        if tools or any(m["role"] == "tool" or "tool_calls" in m for m in messages):
            body["messages"] = ollama_messages(messages)
        else:
            body["messages"] = messages
        if tools:
            body["tools"] = list(tools)
        if agent.options:
            body["options"] = dict(agent.options)
        if agent.think is not None:
            body["think"] = agent.think
        if logprobs is not None:
            body["logprobs"] = True
            if logprobs:
                body["top_logprobs"] = logprobs
        body.update(agent.extra_body)
        return body

    @override
    async def chat(self, session: "aiohttp.ClientSession", agent: "Agent", messages: list[Message],
                   on_delta: "DeltaSink", on_thinking: "DeltaSink", *, tools: Sequence[Tool] = (),
                   logprobs: int | None = None) -> Completion:
        """Stream one chat from an Ollama server: the answer from `message.content`, thinking from
        `message.thinking` (or inline `<think>` in the content), the tools it calls from `message.tool_calls`, the
        tokens' logprobs (when asked) from each chunk's top-level `logprobs`."""
        stream = Stream(agent, on_delta, on_thinking)
        feed, think = stream.feed, stream.think
        body = self.request_body(agent, messages, tools, logprobs)
        async with open_stream(session, agent, body, self) as response:
            async for line in response.content:
                if not line.strip():
                    continue
                chunk = parse_chunk(agent, OLLAMA_CHUNK, line)
                if "error" in chunk:
                    raise mid_stream_error(agent, chunk["error"])
                message = chunk.get("message")
                if message:
                    thought = message.get("thinking")
                    if thought:
                        think(thought)
                    text = message.get("content")
                    if text:
                        feed(text)
                    calls = message.get("tool_calls")
                    if calls:
                        try:
                            stream.calls.add_ollama(calls)
                        except ValueError as exc:
                            raise bad_tool_call(agent, exc) from exc
                if logprobs is not None:
                    tokens = chunk.get("logprobs")
                    if tokens:
                        stream.add_logprobs(token_logprobs(tokens))
                if chunk.get("done"):
                    eval_ns = chunk.get("eval_duration")
                    return stream.completion(prompt_tokens=chunk.get("prompt_eval_count"),
                                             generated_tokens=chunk.get("eval_count"),
                                             generation_s=eval_ns / 1e9 if eval_ns else None)
            raise StreamBroken("stream ended before the final chunk (done: true)", agent=agent.name,
                               url=agent.endpoint)

    @override
    async def probe(self, session: "aiohttp.ClientSession", base: str, headers: Mapping[str, str],
                    probe: ServerProbe, models: list[str]) -> None:
        started = time.perf_counter()
        version = await get_json(session, base + "/api/version", headers, _VERSION)
        probe.latency_ms = (time.perf_counter() - started) * 1000
        probe.version = version.get("version", "?")
        tags = await get_json(session, base + "/api/tags", headers, _MODELS)
        probe.models = [m.get("name") or m.get("model", "") for m in tags.get("models", [])]
        probe.reachable = True
        await _details(session, base, headers, probe, models)

    @override
    async def loaded_models(self, session: "aiohttp.ClientSession", agent: "Agent",
                            timeout_s: float = 2.0) -> list[str] | None:
        """The models loaded on the agent's server now (`/api/ps`); None when it does not answer that."""
        import aiohttp

        headers = {k: v for k, v in request_headers(agent).items() if k == "Authorization"}
        try:
            async with session.get(self.probe_base(agent.endpoint) + "/api/ps", headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                if response.status != 200:
                    return None
                data = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, OSError):
            return None
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, list):
            return None
        return [str(m.get("name") or m.get("model")) for m in models if isinstance(m, dict)]

    @override
    def start_command(self, endpoint: str) -> str | None:
        return serve_command(port_of(endpoint)) if is_local(endpoint) else None

    @override
    def pull_command(self, endpoint: str, model: str) -> str | None:
        return pull_command(endpoint, model)

    @override
    def missing_model_fix(self, server: str, model: str, served: list[str]) -> str:
        return f"{pull_command(server, model)} or `parallama pull {model} --url {server}`"

    @override
    def more_slots_fix(self, server: str, workers: int) -> str:
        return (f"Start instances with `parallama up -n {workers}` (one per worker), or raise OLLAMA_NUM_PARALLEL "
                f"to {workers} and set \"servers\": {{\"{server}\": {{\"parallel\": {workers}}}}}")

    @override
    def several_models_note(self, models: int) -> str | None:
        return f"Ollama needs OLLAMA_MAX_LOADED_MODELS ≥ {models} and the memory to hold them all"


async def _details(session: "aiohttp.ClientSession", url: str, headers: Mapping[str, str], probe: ServerProbe,
                   models: list[str]) -> None:
    """What is loaded (/api/ps) and each model's details (/api/show): helpful for sizing, not needed to run, so a
    failure here is a note and the server stays usable."""
    async def ask(path: str, what: str, adapter: TypeAdapter[Any], body: dict | None = None) -> Any:
        try:
            with probe_transport(url, headers):
                if body is None:
                    return await get_json(session, url + path, headers, adapter)
                return await post_json(session, url + path, body, headers, adapter)
        except AgentTimeout:
            probe.notes.append(f"{path} did not answer {what}within {PROBE_TIMEOUT_S:g} s")
        except HTTPStatus as exc:
            probe.notes.append(f"{path} answered {what}with HTTP {exc.status_code}")
        except BackendError as exc:
            probe.notes.append(f"{path} gave no usable answer {what}({type(exc.__cause__ or exc).__name__})")
        except ValueError as exc:
            probe.notes.append(f"{path} gave no usable answer {what}({type(exc).__name__})")
        return None

    present = [m for m in models if probe.has_model(m)]
    ps, *shown = await asyncio.gather(ask("/api/ps", "", _MODELS),
                                      *(ask("/api/show", f"for {m} ", _SHOW, {"model": m}) for m in present))
    if ps is not None:
        probe.loaded = {m.get("name") or m.get("model", ""): int(m.get("size") or 0) for m in ps.get("models", [])}
    for model, details in zip(present, shown):
        if details is not None:
            probe.shown[model] = dict(details)
