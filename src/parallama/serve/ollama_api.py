"""Ollama's API, as `docs/api.md` gives it and the `ollama` client parses it: `/api/version`, `/api/tags`, `/api/ps`,
`/api/show`, `/api/chat` and `/api/generate` (stream and not). A stream is NDJSON where every line is one whole JSON
object (never a blank line); the last says `done: true` with the durations in nanoseconds, or is `{"error": ...}`."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import __version__
from .errors import ApiError
from .feed import write_stream
from .narration import CONTENT, REASONING, Piece, coalesce
from .service import SERVICE
from .wire import (OllamaChatRequest, OllamaGenerateRequest, OllamaShowRequest, ollama_chat_intent,
                   ollama_generate_intent, parse)

if TYPE_CHECKING:
    from ..backends.tools import ToolCall
    from .alone import Tally
    from .wire import Intent

API_VERSION = "0.12.6"
"The Ollama version whose API this follows; clients compare it (Open WebUI warns below 0.1.16)."
NDJSON = "application/x-ndjson"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/tags", tags)
    app.router.add_get("/api/ps", running)
    app.router.add_post("/api/show", show)
    app.router.add_post("/api/chat", chat)
    app.router.add_post("/api/generate", generate)


async def version(_request: web.Request) -> web.Response:
    return web.json_response({"version": API_VERSION, "parallama": __version__})


async def tags(request: web.Request) -> web.Response:
    catalogue = request.app[SERVICE].catalogue
    return web.json_response({"models": [catalogue.tag_entry(name) for name in catalogue.names]})


async def running(request: web.Request) -> web.Response:
    """Ollama's `models` with runs in progress, and (ours) each server's load across every sharing process."""
    service = request.app[SERVICE]
    return web.json_response({"models": service.running(),
                              "servers": [now.as_json(url) for url, now in service.client.load().items()]})


async def show(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    body = await parse(request, OllamaShowRequest)
    name = body.model or body.name
    if not name:
        raise ApiError(400, "model is required", param="model")
    service.check_model(name)
    return web.json_response(service.catalogue.show(name))


async def chat(request: web.Request) -> web.StreamResponse:
    body = await parse(request, OllamaChatRequest)
    return await respond(request, ollama_chat_intent(body), ChatLines(body.model), body)


async def generate(request: web.Request) -> web.StreamResponse:
    body = await parse(request, OllamaGenerateRequest)
    return await respond(request, ollama_generate_intent(body), GenerateLines(body.model), body)


async def respond(request: web.Request, intent: "Intent", lines: "ChatLines", body: Any) -> web.StreamResponse:
    """A chat (or generate) answer, whoever answers (the fleet, or one agent): progress as `thinking`, the reply
    as `content`, the tool calls it asks for in `message.tool_calls`; with no answer, why, as content, then the
    error line the `ollama` client raises on."""
    service = request.app[SERVICE]
    if intent.empty:
        service.check_model(intent.model)
        return web.json_response(lines.loaded(body))
    follower = service.follower(intent)
    ignored = follower.ask.ignored
    headers = {"X-Parallama-Ignored": ", ".join(ignored)} if ignored else {}
    async with follower as reply:  # 429 before anything is sent
        if not intent.stream:
            reasoning, content = await reply.collect_text()
            if reply.error:
                raise ApiError(reply.error_status, reply.error)
            return web.json_response(lines.whole(reply.tally, content, reasoning, reply.tool_calls),
                                     headers=headers)
        response = web.StreamResponse(headers={"Content-Type": NDJSON, **headers})
        await response.prepare(request)

        def keepalive() -> bytes:  # a quiet moment: a short progress line, or an empty one
            text = reply.keepalive_text()
            return lines.piece(*reply.styled_status(text)) if text else lines.piece(CONTENT, "")

        await write_stream(response, reply, lines.pieces, keepalive)
        if reply.error:
            await response.write(lines.piece(CONTENT, reply.note()) + lines.final(reply.tally)
                                 + _line({"error": reply.error}))
        else:
            if reply.tool_calls:  # as Ollama streams them: whole, in a line of their own before the last
                await response.write(lines.calls(reply.tool_calls))
            await response.write(lines.final(reply.tally))
        await response.write_eof()
        return response


class ChatLines:
    """`/api/chat` lines: `message` with `role`, `content` and, for progress, `thinking`."""

    def __init__(self, model: str) -> None:
        self.model = model

    def _text(self, channel: str, text: str) -> dict[str, Any]:
        if channel == REASONING:
            return {"message": {"role": "assistant", "content": "", "thinking": text}}
        return {"message": {"role": "assistant", "content": text}}

    def pieces(self, pieces: list[Piece]) -> bytes:
        """A batch of pieces, neighbours of one channel as one line."""
        return b"".join(self.piece(channel, text) for channel, text in coalesce(pieces))

    def piece(self, channel: str, text: str) -> bytes:
        return _line({"model": self.model, "created_at": _now(), **self._text(channel, text), "done": False})

    def _end(self, narrator: "Tally") -> dict[str, Any]:
        times = narrator.durations_ns()
        return {"done_reason": "stop", "done": True, "total_duration": times["total_duration"],
                "load_duration": times["load_duration"], "prompt_eval_count": narrator.prompt_tokens,
                "prompt_eval_duration": times["prompt_eval_duration"], "eval_count": narrator.completion_tokens,
                "eval_duration": times["eval_duration"]}

    def final(self, narrator: "Tally") -> bytes:
        return _line({"model": self.model, "created_at": _now(), **self._text(CONTENT, ""), **self._end(narrator)})

    def calls(self, calls: "tuple[ToolCall, ...]") -> bytes:
        message = {"role": "assistant", "content": "", "tool_calls": [call.ollama() for call in calls]}
        return _line({"model": self.model, "created_at": _now(), "message": message, "done": False})

    def whole(self, narrator: "Tally", content: str, reasoning: str,
              calls: "tuple[ToolCall, ...]" = ()) -> dict[str, Any]:
        message = self._text(CONTENT, content)
        if reasoning:
            message["message"]["thinking"] = reasoning
        if calls:
            message["message"]["tool_calls"] = [call.ollama() for call in calls]
        return {"model": self.model, "created_at": _now(), **message, **self._end(narrator)}

    def loaded(self, body: Any) -> dict[str, Any]:
        """The answer to a request with nothing to answer: Ollama loads the model (or, with `keep_alive: 0`,
        unloads it) and says so. `ollama run` sends one before the chat."""
        unload = (body.model_extra or {}).get("keep_alive") in (0, "0", "0s", "0m")
        return {"model": self.model, "created_at": _now(), **self._text(CONTENT, ""),
                "done_reason": "unload" if unload else "load", "done": True}


class GenerateLines(ChatLines):
    """`/api/generate` lines: `response` and, for progress, `thinking`."""

    def _text(self, channel: str, text: str) -> dict[str, Any]:
        if channel == REASONING:
            return {"response": "", "thinking": text}
        return {"response": text}

    def whole(self, narrator: "Tally", content: str, reasoning: str,
              calls: "tuple[ToolCall, ...]" = ()) -> dict[str, Any]:  # noqa: ARG002 - /api/generate has no calls
        fields = self._text(CONTENT, content)
        if reasoning:
            fields["thinking"] = reasoning
        return {"model": self.model, "created_at": _now(), **fields, **self._end(narrator)}


def _line(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode() + b"\n"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
