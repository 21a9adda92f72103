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

from .errors import ApiError
from .feed import write_stream
from .narration import CONTENT, coalesce
from .service import SERVICE
from .wire import OpenAIChatRequest, openai_intent, parse

if TYPE_CHECKING:
    from ..backends import ToolCall
    from .alone import Tally
    from .narration import Piece
    from .service import Follower

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
    body = await parse(request, OpenAIChatRequest)
    service = request.app[SERVICE]
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return await respond(request, service.follower(openai_intent(body)), stream=body.stream,
                         include_usage=include_usage)


async def respond(request: web.Request, follower: "Follower", *, stream: bool,
                  include_usage: bool = False) -> web.StreamResponse:
    """A chat completion, whoever answers (the fleet, or one agent): progress as `reasoning_content`, the reply as
    `content`, or the tool calls it asks for (`finish_reason: "tool_calls"`); with no answer, why, as content."""
    ignored = follower.ask.ignored
    headers = {"X-Parallama-Ignored": ", ".join(ignored)} if ignored else {}
    chunks = Chunks(follower.model)
    async with follower as reply:  # 429 before anything is sent
        if not stream:
            reasoning, content = await reply.collect_text()
            if reply.error:
                raise ApiError(reply.error_status, reply.error, code="no_answer")
            return web.json_response(chunks.whole(reply.tally, content, reasoning, reply.tool_calls),
                                     headers=headers)
        response = web.StreamResponse(headers={**SSE_HEADERS, **headers})
        await response.prepare(request)
        await response.write(chunks.delta({"role": "assistant", "content": ""}))

        def keepalive() -> bytes:  # an SSE comment, which every client skips
            return f": {(reply.keepalive_text() or '').strip() or 'working'}\n\n".encode()

        await write_stream(response, reply, lambda pieces: _deltas(chunks, pieces), keepalive)
        if reply.error:
            # The reason is content, once: no error event after it (front-ends show one as a second and a third
            # copy of the note, an error box and a toast), and the stream ends as streams do.
            await response.write(chunks.delta({"content": reply.note()}) + chunks.delta({}, finish="stop"))
        else:
            calls = reply.tool_calls
            for index, call in enumerate(calls):  # each call whole in one delta, as servers may send them
                await response.write(chunks.delta({"tool_calls": [{"index": index, **call.openai()}]}))
            await response.write(chunks.delta({}, finish="tool_calls" if calls else "stop"))
            if include_usage:
                await response.write(chunks.usage(reply.tally))
        await response.write(DONE)
        await response.write_eof()
        return response


def _deltas(chunks: "Chunks", pieces: "list[Piece]") -> bytes:
    return b"".join(chunks.delta({"content": text} if channel == CONTENT else {"reasoning_content": text})
                    for channel, text in coalesce(pieces))


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
