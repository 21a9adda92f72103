"""OpenAI-compatible `/v1/chat/completions` (vLLM, llama.cpp, LM Studio, Ollama's /v1): SSE until `data: [DONE]`;
probed through `/v1/models`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, List, Mapping, Sequence

from pydantic import TypeAdapter
from typing_extensions import TypedDict, override

from ..errors import StreamBroken
from .base import (Completion, Stream, bad_tool_call, malformed, mid_stream_error, open_stream,
                   parse_chunk, token_logprobs)
from .chunks import OPENAI_CHUNK, OpenAIUsage
from .kind import Backend
from .messages import Message
from .probing import ServerProbe, get_json
from .tools import Tool

if TYPE_CHECKING:
    import aiohttp

    from ..fleet import Agent
    from .base import DeltaSink

_SSE_OTHER_FIELDS = (b"event:", b"id:", b"retry:")

OPTION_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",  # not OpenAI's own, but vLLM and llama.cpp's server accept it
    "seed": "seed",
    "stop": "stop",
    "num_predict": "max_tokens",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
"Ollama options with an OpenAI-compatible request field; the rest have no equivalent there."


class _Served(TypedDict, total=False):
    id: str


class _Listing(TypedDict, total=False):
    """An OpenAI-compatible /v1/models."""

    data: List[_Served]


_LISTING = TypeAdapter(_Listing)


class OpenAICompatible(Backend):
    """The OpenAI-compatible chat API."""

    name = "openai"
    label = "OpenAI-compatible"
    api_path = "/v1"
    default_context = 4096
    "What such a server gives a request varies (llama.cpp: its `n_ctx` ÷ slots); a common size."

    @override
    def endpoint_for(self, base: str, path: str) -> str | None:
        if path.endswith("/v1"):
            return base + path + "/chat/completions"
        if path.endswith("/v1/chat/completions"):
            return base + path
        return None

    @override
    def probe_base(self, endpoint: str) -> str:
        return endpoint.removesuffix("/chat/completions")

    @override
    def unsent_options(self, options: Mapping[str, Any]) -> list[str]:
        return sorted(k for k in options if k not in OPTION_FIELDS)

    @override
    def structured_output(self, schema: Mapping[str, Any], name: str) -> dict[str, Any]:
        # llama.cpp's server turns the schema into a grammar that binds the sampler; vLLM and OpenAI honour it too.
        return {"response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": dict(schema)}}}

    @override
    def request_body(self, agent: "Agent", messages: list[Message], tools: Sequence[Tool] = (),
                     logprobs: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": agent.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            body["tools"] = list(tools)
        for option, value in agent.options.items():
            field = OPTION_FIELDS.get(option)
            if field:
                body[field] = value
        if isinstance(agent.think, str):
            body["reasoning_effort"] = agent.think
        elif agent.think is not None:
            # vLLM's and llama.cpp's way to switch a model's thinking on or off (Qwen3, DeepSeek-R1 templates).
            body["chat_template_kwargs"] = {"enable_thinking": agent.think}
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
        """Stream one chat: the answer from `choices[0].delta.content`, thinking from `delta.reasoning_content` or
        `delta.reasoning` (or inline `<think>`), the tools it calls from `delta.tool_calls` fragments, token
        counts from the final `usage`, the tokens' logprobs (when asked) from `choices[0].logprobs.content`."""
        stream = Stream(agent, on_delta, on_thinking)
        feed, think = stream.feed, stream.think
        usage: OpenAIUsage | None = None
        body = self.request_body(agent, messages, tools, logprobs)
        async with open_stream(session, agent, body, self) as response:
            async for line in response.content:
                line = line.strip()
                if not line or line.startswith(b":"):
                    continue
                if not line.startswith(b"data:"):
                    if line.startswith(_SSE_OTHER_FIELDS):
                        continue
                    raise malformed(agent, line)
                data = line[5:].strip()
                if data == b"[DONE]":
                    details = (usage or {}).get("completion_tokens_details") or {}
                    try:
                        return stream.completion(
                            prompt_tokens=usage.get("prompt_tokens") if usage else None,
                            generated_tokens=usage.get("completion_tokens") if usage else None,
                            thinking_tokens=details.get("reasoning_tokens") or None)
                    except ValueError as exc:  # a tool call never named
                        raise bad_tool_call(agent, exc) from exc
                chunk = parse_chunk(agent, OPENAI_CHUNK, data)
                if "error" in chunk:
                    raise mid_stream_error(agent, chunk["error"])
                choices = chunk.get("choices")
                if choices:
                    choice = choices[0]
                    delta = choice.get("delta")
                    if delta:
                        thought = delta.get("reasoning_content") or delta.get("reasoning")
                        if thought:
                            think(thought)
                        text = delta.get("content")
                        if text:
                            feed(text)
                        calls = delta.get("tool_calls")
                        if calls:
                            try:
                                stream.calls.add_openai(calls)
                            except ValueError as exc:
                                raise bad_tool_call(agent, exc) from exc
                    if logprobs is not None:
                        tokens = (choice.get("logprobs") or {}).get("content")
                        if tokens:
                            stream.add_logprobs(token_logprobs(tokens))
                if chunk.get("usage"):
                    usage = chunk["usage"]
            raise StreamBroken("stream ended before `data: [DONE]`", agent=agent.name, url=agent.endpoint)

    @override
    async def probe(self, session: "aiohttp.ClientSession", base: str, headers: Mapping[str, str],
                    probe: ServerProbe, models: list[str]) -> None:
        started = time.perf_counter()
        listing = await get_json(session, base + "/models", headers, _LISTING)  # base: the .../v1 here
        probe.latency_ms = (time.perf_counter() - started) * 1000
        probe.models = [m.get("id", "") for m in listing.get("data", [])]
        probe.version = self.label
        probe.reachable = True

    @override
    async def loaded_models(self, session: "aiohttp.ClientSession", agent: "Agent",
                            timeout_s: float = 2.0) -> list[str] | None:
        return None  # no such endpoint: whether a model is warm is not known

    @override
    def start_command(self, endpoint: str) -> str | None:
        return None

    @override
    def pull_command(self, endpoint: str, model: str) -> str | None:
        return None

    @override
    def missing_model_fix(self, server: str, model: str, served: list[str]) -> str:
        return f"serve {model} on that server, or fix the model name (it has: {', '.join(served[:5]) or 'none'})"

    @override
    def more_slots_fix(self, server: str, workers: int) -> str:
        return f"Give them separate servers, or more slots if the server has them (\"parallel\": {workers})"

    @override
    def several_models_note(self, models: int) -> str | None:
        return None
