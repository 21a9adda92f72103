"""OpenAI-compatible `/v1/chat/completions` (vLLM, llama.cpp, LM Studio, Ollama's /v1): SSE until `data: [DONE]`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import OPENAI_OPTION_FIELDS
from ..errors import StreamBroken
from .base import Completion, Message, malformed, mid_stream_error, open_stream, parse_json_line

if TYPE_CHECKING:
    import aiohttp

    from ..config import Agent
    from . import DeltaSink

_SSE_OTHER_FIELDS = (b"event:", b"id:", b"retry:")


def request_body(agent: "Agent", messages: list[Message]) -> dict:
    body: dict = {
        "model": agent.model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    for option, value in agent.options.items():
        field = OPENAI_OPTION_FIELDS.get(option)
        if field:
            body[field] = value
    body.update(agent.extra_body)
    return body


async def chat(
    session: "aiohttp.ClientSession", agent: "Agent", messages: list[Message], on_delta: "DeltaSink"
) -> Completion:
    """Stream one chat; text from `choices[0].delta.content`, token counts from the final `usage`."""
    parts: list[str] = []
    usage: dict | None = None
    async with open_stream(session, agent, request_body(agent, messages)) as response:
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
                prompt_tokens = usage.get("prompt_tokens") if usage else None
                completion_tokens = usage.get("completion_tokens") if usage else len(parts)
                return Completion(text="".join(parts), prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
            chunk = parse_json_line(agent, data)
            if "error" in chunk:
                raise mid_stream_error(agent, chunk["error"])
            choices = chunk.get("choices")
            if choices:
                delta = choices[0].get("delta")
                text = delta.get("content") if delta else None
                if text:
                    parts.append(text)
                    on_delta(text)
            if chunk.get("usage"):
                usage = chunk["usage"]
        raise StreamBroken("stream ended before `data: [DONE]`", agent=agent.name, url=agent.endpoint)
