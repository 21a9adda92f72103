"""Ollama's native `/api/chat`: NDJSON lines until one says `done: true` with the metrics (durations in ns)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import StreamBroken
from .base import Completion, Message, mid_stream_error, open_stream, parse_json_line

if TYPE_CHECKING:
    import aiohttp

    from ..config import Agent
    from . import DeltaSink


def request_body(agent: "Agent", messages: list[Message]) -> dict:
    body: dict = {"model": agent.model, "messages": messages, "stream": True}
    if agent.options:
        body["options"] = dict(agent.options)
    body.update(agent.extra_body)
    return body


async def chat(
    session: "aiohttp.ClientSession", agent: "Agent", messages: list[Message], on_delta: "DeltaSink"
) -> Completion:
    """Stream one chat from an Ollama server; text comes from `message.content` of each line."""
    parts: list[str] = []
    async with open_stream(session, agent, request_body(agent, messages)) as response:
        async for line in response.content:
            if not line.strip():
                continue
            chunk = parse_json_line(agent, line)
            if "error" in chunk:
                raise mid_stream_error(agent, chunk["error"])
            message = chunk.get("message")
            if message:
                text = message.get("content")
                if text:
                    parts.append(text)
                    on_delta(text)
            if chunk.get("done"):
                return final_completion("".join(parts), chunk)
        raise StreamBroken("stream ended before the final chunk (done: true)", agent=agent.name, url=agent.endpoint)


def final_completion(text: str, final: dict) -> Completion:
    eval_ns = final.get("eval_duration")
    return Completion(
        text=text,
        prompt_tokens=final.get("prompt_eval_count"),
        completion_tokens=final.get("eval_count"),
        generation_s=eval_ns / 1e9 if eval_ns else None,
    )
