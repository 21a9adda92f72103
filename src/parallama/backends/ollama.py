"""Ollama's native `/api/chat`: NDJSON lines until one says `done: true` with the metrics (durations in ns)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from ..errors import StreamBroken
from .base import Completion, Stream, bad_tool_call, mid_stream_error, open_stream, parse_chunk, request_headers
from .chunks import OLLAMA_CHUNK
from .messages import Message
from .tools import Tool, ollama_messages

if TYPE_CHECKING:
    import aiohttp

    from ..fleet import Agent
    from . import DeltaSink


def request_body(agent: "Agent", messages: list[Message], tools: Sequence[Tool] = ()) -> dict[str, Any]:
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
    body.update(agent.extra_body)
    return body


async def chat(session: "aiohttp.ClientSession", agent: "Agent", messages: list[Message], on_delta: "DeltaSink",
               on_thinking: "DeltaSink", *, tools: Sequence[Tool] = ()) -> Completion:
    """Stream one chat from an Ollama server: the answer from `message.content`, thinking from
    `message.thinking` (or inline `<think>` in the content), the tools it calls from `message.tool_calls`."""
    stream = Stream(agent, on_delta, on_thinking)
    feed, think = stream.feed, stream.think
    async with open_stream(session, agent, request_body(agent, messages, tools)) as response:
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
            if chunk.get("done"):
                eval_ns = chunk.get("eval_duration")
                return stream.completion(prompt_tokens=chunk.get("prompt_eval_count"),
                                         generated_tokens=chunk.get("eval_count"),
                                         generation_s=eval_ns / 1e9 if eval_ns else None)
        raise StreamBroken("stream ended before the final chunk (done: true)", agent=agent.name, url=agent.endpoint)


async def loaded_models(session: "aiohttp.ClientSession", agent: "Agent", timeout_s: float = 2.0) -> list[str] | None:
    """The models loaded on the agent's server now (Ollama's `/api/ps`); None when it does not answer that."""
    import asyncio

    import aiohttp

    base = agent.endpoint[: -len("/api/chat")] if agent.endpoint.endswith("/api/chat") else agent.server
    headers = {k: v for k, v in request_headers(agent).items() if k == "Authorization"}
    try:
        async with session.get(base + "/api/ps", headers=headers,
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
