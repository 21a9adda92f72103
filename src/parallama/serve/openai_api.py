"""OpenAI's API as the `openai` SDK parses it: `/v1/models` and `/v1/chat/completions`, stream and not.

A stream is server-sent events: every chunk has the same `id` and `created`, progress comes as
`delta.reasoning_content` in chunks with no content, then the answer as `delta.content`, a chunk with
`finish_reason: "stop"`, the usage chunk (`choices: []`) when `stream_options.include_usage` asks, and
`data: [DONE]`. Quiet moments get SSE comment lines, which every client skips."""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .alone import AgentAsk, AgentReply
from .conversation import for_agent, split
from .errors import ApiError
from .feed import write_stream
from .narration import CONTENT, coalesce
from .runs import SERVICE, Ask, Reply
from .wire import OPENAI_IGNORED, OpenAIChatRequest, OpenAIMessage, ignored_fields, openai_text, parse

if TYPE_CHECKING:
    from ..backends import Message, ToolCall
    from .alone import Tally
    from .narration import Piece
    from .runs import Service

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{model:.+}", model)
    app.router.add_post("/v1/chat/completions", chat_completions)


async def models(request: web.Request) -> web.Response:
    catalogue = request.app[SERVICE].catalogue
    return web.json_response({"object": "list", "data": [catalogue.openai_entry(name) for name in catalogue.names]})


async def model(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    name = request.match_info["model"]
    service.check_model(name)
    return web.json_response(service.catalogue.openai_entry(service.catalogue.canonical(name)))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    body = await parse(request, OpenAIChatRequest)
    agent = service.agent_to_answer(body.model, body.tools)
    if agent is not None:
        messages, not_text = _messages(body.messages)
        kept, dropped = for_agent(messages)
        ignored = (ignored_fields(body, OPENAI_IGNORED) + (["seed"] if body.seed is not None else [])
                   + [f"{r} messages" for r in dropped] + (["content parts that are not text"] if not_text else []))
        tools = tuple(t.model_dump(exclude_none=True) for t in body.tools or ())
        alone = AgentAsk(body.model, agent, tuple(kept), tools, service.options.progress == "thinking")
        return await answer_alone(request, service, alone, body, ignored)
    strategy = service.strategy_for(body.model)
    turns = []
    not_text = False
    for message in body.messages:
        text, other = openai_text(message.content)
        not_text = not_text or other
        turns.append((message.role, text))
    context, prompt, dropped = split(turns)
    ignored = ignored_fields(body, OPENAI_IGNORED) + [f"{r} messages" for r in dropped]
    if not_text:
        ignored.append("content parts that are not text")
    headers = {"X-Parallama-Ignored": ", ".join(ignored)} if ignored else {}
    ask = Ask(body.model, strategy, prompt, context, service.options.progress, body.seed, tuple(ignored))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    chunks = Chunks(body.model)
    async with Reply(service, ask) as reply:  # 429 before anything is sent
        if not body.stream:
            reasoning, content = await reply.collect_text()
            if reply.error:
                raise ApiError(reply.error_status, reply.error, code="no_answer")
            return web.json_response(chunks.whole(reply.narrator, content, reasoning),
                                     headers=headers)
        response = web.StreamResponse(headers={**SSE_HEADERS, **headers})
        await response.prepare(request)
        await response.write(chunks.delta({"role": "assistant", "content": ""}))

        def keepalive() -> bytes:  # an SSE comment, which every client skips
            return f": {(reply.narrator.status() or '').strip() or 'working'}\n\n".encode()

        await write_stream(response, reply, lambda pieces: _deltas(chunks, pieces), keepalive)
        if reply.error:
            # Front-ends drop an error event: the reason is content too, and the stream ends as streams do.
            error = ApiError(reply.error_status, reply.error, code="no_answer")
            await response.write(chunks.delta({"content": reply.note()}) + chunks.delta({}, finish="stop")
                                 + b"data: " + json.dumps(error.openai_body()).encode() + b"\n\n")
        else:
            await response.write(chunks.delta({}, finish="stop"))
            if include_usage:
                await response.write(chunks.usage(reply.narrator))
        await response.write(DONE)
        await response.write_eof()
        return response


async def answer_alone(request: web.Request, service: "Service", ask: AgentAsk, body: OpenAIChatRequest,
                       ignored: list[str]) -> web.StreamResponse:
    """One agent's answer (see `alone`): its text, or the tool calls it asks for (`finish_reason: "tool_calls"`)."""
    headers = {"X-Parallama-Ignored": ", ".join(ignored)} if ignored else {}
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    chunks = Chunks(body.model)
    async with AgentReply(service, ask) as reply:  # 429 before anything is sent
        if not body.stream:
            reasoning, content = await reply.collect_text()
            if reply.result is None:
                raise ApiError(reply.error_status, reply.error or "no answer", code="no_answer")
            return web.json_response(chunks.whole(reply, content, reasoning, reply.result.tool_calls),
                                     headers=headers)
        response = web.StreamResponse(headers={**SSE_HEADERS, **headers})
        await response.prepare(request)
        await response.write(chunks.delta({"role": "assistant", "content": ""}))
        await write_stream(response, reply, lambda pieces: _deltas(chunks, pieces), lambda: b": working\n\n")
        if reply.result is None:
            error = ApiError(reply.error_status, reply.error or "no answer", code="no_answer")
            await response.write(chunks.delta({"content": reply.note()}) + chunks.delta({}, finish="stop")
                                 + b"data: " + json.dumps(error.openai_body()).encode() + b"\n\n")
        else:
            calls = reply.result.tool_calls
            for index, call in enumerate(calls):  # each call whole in one delta, as servers may send them
                await response.write(chunks.delta({"tool_calls": [{"index": index, **call.openai()}]}))
            await response.write(chunks.delta({}, finish="tool_calls" if calls else "stop"))
            if include_usage:
                await response.write(chunks.usage(reply))
        await response.write(DONE)
        await response.write_eof()
        return response


def _deltas(chunks: "Chunks", pieces: "list[Piece]") -> bytes:
    return b"".join(chunks.delta({"content": text} if channel == CONTENT else {"reasoning_content": text})
                    for channel, text in coalesce(pieces))


def _messages(messages: list[OpenAIMessage]) -> "tuple[list[Message], bool]":
    """OpenAI's messages as one agent takes them, tool calls and results kept; (them, whether some content parts
    were not text)."""
    out: list[Message] = []
    not_text = False
    for m in messages:
        text, other = openai_text(m.content)
        not_text = not_text or other
        message: Message = {"role": m.role, "content": text}
        if m.tool_calls:
            message["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.function.name, "arguments": c.function.arguments}}
                                     for c in m.tool_calls]
        if m.tool_call_id:
            message["tool_call_id"] = m.tool_call_id
        name = (m.model_extra or {}).get("name")
        if m.role == "tool" and isinstance(name, str):
            message["name"] = name
        out.append(message)
    return out, not_text


class Chunks:
    """One completion's chunks: the same `id`, `created` and `model` in each."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model
        # Each chunk differs only in its delta: the JSON around it is written once.
        self._head = ('data: {"id": %s, "object": "chat.completion.chunk", "created": %d, "model": %s, '
                      '"system_fingerprint": null, "choices": [{"index": 0, "delta": '
                      % (json.dumps(self.id), self.created, json.dumps(model)))

    def delta(self, delta: dict[str, Any], *, finish: str | None = None) -> bytes:
        tail = ', "logprobs": null, "finish_reason": %s}]}\n\n' % (json.dumps(finish))
        return (self._head + json.dumps(delta, ensure_ascii=False) + tail).encode()

    def usage(self, narrator: "Tally") -> bytes:
        return b"data: " + json.dumps({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                       "model": self.model, "system_fingerprint": None, "choices": [],
                                       "usage": _usage(narrator)}).encode() + b"\n\n"

    def whole(self, narrator: "Tally", content: str, reasoning: str,
              calls: "tuple[ToolCall, ...]" = ()) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": content or (None if calls else "")}
        if reasoning:
            message["reasoning_content"] = reasoning
        if calls:
            message["tool_calls"] = [call.openai() for call in calls]
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": "tool_calls" if calls else "stop"}],
                "usage": _usage(narrator)}


def _usage(narrator: "Tally") -> dict[str, int]:
    """Tokens of every request the run made (workers, rounds, rankings, reviewers)."""
    return {"prompt_tokens": narrator.prompt_tokens, "completion_tokens": narrator.completion_tokens,
            "total_tokens": narrator.prompt_tokens + narrator.completion_tokens}
