"""Ollama's API, as `docs/api.md` gives it and the `ollama` client parses it: `/api/version`, `/api/tags`, `/api/ps`,
`/api/show`, `/api/chat` and `/api/generate` (stream and not). A stream is NDJSON where every line is one whole JSON
object (never a blank line); the last says `done: true` with the durations in nanoseconds, or is `{"error": ...}`."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import __version__
from ..backends.tools import ToolCall, new_call_id
from .alone import AgentAsk, AgentReply
from .conversation import for_agent, split
from .feed import write_stream
from .narration import CONTENT, REASONING, Piece, coalesce
from .runs import SERVICE, Ask, Reply
from .errors import ApiError
from .wire import (OLLAMA_IGNORED, OllamaChatRequest, OllamaGenerateRequest, OllamaMessage, OllamaShowRequest,
                   ignored_fields, parse, seed_of)

if TYPE_CHECKING:
    from ..backends import Message
    from ..fleet import Agent
    from .alone import Tally
    from .runs import Service

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
    service = request.app[SERVICE]
    body = await parse(request, OllamaChatRequest)
    agent = service.agent_to_answer(body.model, body.tools)
    strategy = service.strategy_for(body.model) if agent is None else ""
    lines = ChatLines(body.model)
    if not body.messages:
        return web.json_response(lines.loaded(body))
    if agent is not None:
        messages, dropped = for_agent(_messages(body.messages))
        ignored = (ignored_fields(body, OLLAMA_IGNORED) + [f"options.{key}" for key in body.options or {}]
                   + [f"{r} messages" for r in dropped] + (["images"] if any(m.images for m in body.messages) else []))
        tools = tuple(t.model_dump(exclude_none=True) for t in body.tools or ())
        alone = AgentAsk(body.model, agent, tuple(messages), tools, _thinking(service, body.think))
        return await answer_alone(request, service, alone, lines, stream=body.stream, ignored=ignored)
    context, prompt, dropped = split((m.role, m.content or "") for m in body.messages)
    ignored = ignored_fields(body, OLLAMA_IGNORED) + _ignored_options(body.options) + [f"{r} messages" for r in dropped]
    if any(m.images for m in body.messages):
        ignored.append("images")
    ask = Ask(body.model, strategy, prompt, context, _progress(service, body.think), seed_of(body.options),
              tuple(ignored))
    return await answer(request, service, ask, lines, stream=body.stream, ignored=ignored)


async def generate(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    body = await parse(request, OllamaGenerateRequest)
    agent: Agent | None = service.catalogue.agent_for(body.model)
    strategy = service.strategy_for(body.model) if agent is None else ""
    lines = GenerateLines(body.model)
    if not (body.prompt or "").strip():
        return web.json_response(lines.loaded(body))
    turns = ([("system", body.system)] if body.system else []) + [("user", body.prompt or "")]
    if agent is not None:
        ignored = ignored_fields(body, OLLAMA_IGNORED) + [f"options.{key}" for key in body.options or {}]
        messages: tuple[Message, ...] = tuple({"role": role, "content": text} for role, text in turns)
        alone = AgentAsk(body.model, agent, messages, (), _thinking(service, body.think))
        return await answer_alone(request, service, alone, lines, stream=body.stream, ignored=ignored)
    context, prompt, _ = split(turns)
    ignored = ignored_fields(body, OLLAMA_IGNORED) + _ignored_options(body.options)
    ask = Ask(body.model, strategy, prompt, context, _progress(service, body.think), seed_of(body.options),
              tuple(ignored))
    return await answer(request, service, ask, lines, stream=body.stream, ignored=ignored)


async def answer(request: web.Request, service: "Service", ask: Ask, lines: "ChatLines", *, stream: bool,
                 ignored: list[str]) -> web.StreamResponse:
    headers = {"X-Parallama-Ignored": ", ".join(ignored)} if ignored else {}
    async with Reply(service, ask) as reply:  # 429 before anything is sent
        if not stream:
            reasoning, content = await reply.collect_text()
            if reply.error:
                raise ApiError(reply.error_status, reply.error)
            return web.json_response(lines.whole(reply.narrator, content, reasoning),
                                     headers=headers)
        response = web.StreamResponse(headers={"Content-Type": NDJSON, **headers})
        await response.prepare(request)

        def keepalive() -> bytes:  # a quiet moment: a short progress line, or an empty one
            text = reply.keepalive_text()
            return lines.piece(*reply.styled_status(text)) if text else lines.piece(CONTENT, "")

        await write_stream(response, reply, lines.pieces, keepalive)
        if reply.error:
            # Front-ends drop an error line: the reason is content too, and the stream ends as streams do.
            await response.write(lines.piece(CONTENT, reply.note()) + lines.final(reply.narrator)
                                 + _line({"error": reply.error}))
        else:
            await response.write(lines.final(reply.narrator))
        await response.write_eof()
        return response


async def answer_alone(request: web.Request, service: "Service", ask: AgentAsk, lines: "ChatLines", *,
                       stream: bool, ignored: list[str]) -> web.StreamResponse:
    """One agent's answer (see `alone`): its text, or the tool calls it asks for in `message.tool_calls`."""
    headers = {"X-Parallama-Ignored": ", ".join(ignored)} if ignored else {}
    async with AgentReply(service, ask) as reply:  # 429 before anything is sent
        if not stream:
            reasoning, content = await reply.collect_text()
            if reply.result is None:
                raise ApiError(reply.error_status, reply.error or "no answer")
            return web.json_response(lines.whole(reply, content, reasoning, reply.result.tool_calls),
                                     headers=headers)
        response = web.StreamResponse(headers={"Content-Type": NDJSON, **headers})
        await response.prepare(request)
        await write_stream(response, reply, lines.pieces, lambda: lines.piece(CONTENT, ""))
        if reply.result is None:
            await response.write(lines.piece(CONTENT, reply.note()) + lines.final(reply)
                                 + _line({"error": reply.error}))
        else:
            if reply.result.tool_calls:  # as Ollama streams them: whole, in a line of their own before the last
                await response.write(lines.calls(reply.result.tool_calls))
            await response.write(lines.final(reply))
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


def _messages(messages: "list[OllamaMessage]") -> list["Message"]:
    """Ollama's messages as one agent takes them (OpenAI's shape, see `backends.tools`): each earlier call gets an
    id (Ollama's have none), and a tool's result answers the first call of its tool not yet answered."""
    out: list[Message] = []
    waiting: list[tuple[str, str]] = []  # (id, tool) of calls not yet answered
    for m in messages:
        message: Message = {"role": m.role, "content": m.content or ""}
        if m.tool_calls:
            calls = [ToolCall(c.id or new_call_id(), c.function.name, c.function.arguments
                              if isinstance(c.function.arguments, str) else json.dumps(c.function.arguments))
                     for c in m.tool_calls]
            message["tool_calls"] = [call.openai() for call in calls]
            waiting = [(call.id, call.name) for call in calls]
        elif m.role == "tool":
            answered = next((w for w in waiting if w[1] == m.tool_name), waiting[0] if waiting else None)
            if answered is not None:
                waiting.remove(answered)
            message["tool_call_id"] = answered[0] if answered else new_call_id()
            name = m.tool_name or (answered[1] if answered else None)
            if name:
                message["name"] = name
        out.append(message)
    return out


def _thinking(service: "Service", think: object) -> bool:
    """An agent's own thinking is shown as `thinking` unless the request or serve's progress setting says no."""
    return think is not False and service.options.progress == "thinking"


def _progress(service: "Service", think: object) -> Any:
    """`think: false` asks for no thinking: this answer comes without progress."""
    return "none" if think is False else service.options.progress


def _ignored_options(options: dict[str, Any] | None) -> list[str]:
    return [f"options.{key}" for key in (options or {}) if key != "seed"]


def _line(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode() + b"\n"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
