"""OpenAI-compatible `/v1/chat/completions` (vLLM, llama.cpp, LM Studio, Ollama's /v1): SSE until `data: [DONE]`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from ..errors import StreamBroken
from ..fleet import OPENAI_OPTION_FIELDS
from .base import (Completion, Stream, bad_tool_call, malformed, mid_stream_error, open_stream,
                   parse_chunk)
from .chunks import OPENAI_CHUNK, OpenAIUsage
from .messages import Message
from .tools import Tool

if TYPE_CHECKING:
    import aiohttp

    from ..fleet import Agent
    from . import DeltaSink

_SSE_OTHER_FIELDS = (b"event:", b"id:", b"retry:")


def request_body(agent: "Agent", messages: list[Message], tools: Sequence[Tool] = ()) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": agent.model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if tools:
        body["tools"] = list(tools)
    for option, value in agent.options.items():
        field = OPENAI_OPTION_FIELDS.get(option)
        if field:
            body[field] = value
    if isinstance(agent.think, str):
        body["reasoning_effort"] = agent.think
    elif agent.think is not None:
        # vLLM's and llama.cpp's way to switch a model's thinking on or off (Qwen3, DeepSeek-R1 templates).
        body["chat_template_kwargs"] = {"enable_thinking": agent.think}
    body.update(agent.extra_body)
    return body


async def chat(session: "aiohttp.ClientSession", agent: "Agent", messages: list[Message], on_delta: "DeltaSink",
               on_thinking: "DeltaSink", *, tools: Sequence[Tool] = ()) -> Completion:
    """Stream one chat: the answer from `choices[0].delta.content`, thinking from `delta.reasoning_content` or
    `delta.reasoning` (or inline `<think>`), the tools it calls from `delta.tool_calls` fragments, token counts
    from the final `usage`."""
    stream = Stream(agent, on_delta, on_thinking)
    feed, think = stream.feed, stream.think
    usage: OpenAIUsage | None = None
    async with open_stream(session, agent, request_body(agent, messages, tools)) as response:
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
                delta = choices[0].get("delta")
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
            if chunk.get("usage"):
                usage = chunk["usage"]
        raise StreamBroken("stream ended before `data: [DONE]`", agent=agent.name, url=agent.endpoint)
