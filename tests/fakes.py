"""Protocol-faithful fake model servers for the tests and benchmarks.

A FakeServer is a real aiohttp.web server on 127.0.0.1 (random port), running its own event loop in a
background thread, that speaks Ollama's `/api/chat` (NDJSON) and the OpenAI-compatible
`/v1/chat/completions` (SSE) the way the real servers do: same chunk shapes, same final-chunk fields,
same error bodies and status codes. Per model it has a latency, a token count and a fault; it records
every request it got and how many were in flight at once.

    with FakeServer(slots=1) as server:
        server.model("llama3:8b", latency=1.0, tokens=20)
        server.model("broken", fault="cut")
        ... point agents at server.url + "/api/chat" ...
        server.max_in_flight, server.requests

Hostile faults too: a line longer than any client should read, the caller's key quoted back in a 401, in the
answer or in an error line; and `BannerServer`, something on a port that does not speak HTTP at all.
"""

from __future__ import annotations

import asyncio
import json
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

FAULTS = {"404", "500", "500_traceback", "503", "cut", "truncated", "garbage", "hang", "error_line", "empty",
          "long_line", "long_unterminated", "401_echo", "401_partial", "echo", "error_echo", "raw_chunk", "endless"}
"""`long_line`: mid-stream, one chunk `line_bytes` long; `long_unterminated`: the same without its newline, then the
end. `raw_chunk`: mid-stream, the JSON text `raw_chunk` as one more chunk, framed as the protocol frames one (an
NDJSON line, an SSE `data:` event), then the rest of the stream. `401_echo` / `401_partial`: 401 quoting the caller's key whole / as hosted APIs abbreviate it
(`sk-abc1****…wxyz`); `echo`: the answer repeats the Authorization header, split over two chunks; `error_echo`: an
error line quoting it mid-stream. `endless`: mid-stream, small chunks as fast as it can write, never ending (a
broken server whose model does not stop). `500_traceback`: HTTP 500 whose error message is a Python traceback with
local file paths (llama-cpp-python's server, asked for what its grammar code cannot take)."""


TRACEBACK = """Traceback (most recent call last):
  File "/home/user/.venv/lib/python3.11/site-packages/llama_cpp/server/errors.py", line 171, in custom_route_handler
    response = await original_route_handler(request)
  File "/home/user/.venv/lib/python3.11/site-packages/llama_cpp/llama_grammar.py", line 40, in from_string
    raise ValueError("from_string: error parsing grammar file: parsed_grammar.rules is empty")
ValueError: from_string: error parsing grammar file: parsed_grammar.rules is empty"""


@dataclass
class Behaviour:
    latency: float = 0.1
    "Seconds from the request's arrival (once it has a slot) to its last token."
    tokens: int = 10
    text: str | None = None
    "Answer text; split into `tokens` pieces. Default: words naming the model."
    fault: str | None = None
    ttft: float | None = None
    "Seconds before the first token; default latency / tokens."
    parameter_size: str = "8.0B"
    quantization: str = "Q4_0"
    layers: int = 32
    kv_heads: int = 8
    loaded_bytes: int | None = None
    "When set, /api/ps lists the model as loaded with this size."
    reject_structured_output: bool = False
    "Answer 400 to a request with `format` / `response_format`, as a server without structured output may."
    respond: Any = None
    "A function of the request's messages returning the answer text (overrides `text`), for reviewers and rankers."
    thinking: str | None = None
    "A reasoning model: this thought streams before the answer (unless the request says `think: false`)."
    thinking_style: str = "field"
    "`field`: Ollama `message.thinking` / OpenAI `delta.<reasoning_field>`; `inline`: `<think>…</think>` in the"
    " content, cut into 5-character chunks so the tags are split across chunks."
    reasoning_field: str = "reasoning_content"
    "OpenAI-compatible: `reasoning_content` (vLLM, llama.cpp) or `reasoning` (newer vLLM, OpenRouter)."
    reject_think: bool = False
    reject_tools: bool = False
    "Answer 400 to an Ollama request that offers tools, as Ollama does for a model without tool support."
    "Answer 400 to a request that asks for thinking settings, as Ollama does for a model without thinking."
    line_bytes: int = 5 * 1024 * 1024
    "Length of the one line the `long_line` faults send."
    show_delay: float = 0.0
    "Seconds /api/show takes to answer (a model being loaded from a slow disk)."
    tool_calls: Any = None
    "When the request offers `tools`: the calls to answer with, as [(name, arguments dict)], or a function of the"
    " request's messages returning them (empty: answer with text). Ollama sends them whole in one chunk's"
    " `message.tool_calls`; OpenAI as `delta.tool_calls` fragments (the arguments' JSON in pieces), then"
    " `finish_reason: \"tool_calls\"`."
    raw_chunk: str = ""
    "What the `raw_chunk` fault sends as one chunk (a hostile server's wrong-typed field, say)."
    logprob: float = -0.25
    "Each answer piece's logprob, sent when the request asks `logprobs: true` (Ollama: from version 0.12.11; an"
    " older one ignores the field, as the real one does)."
    fault_on: str | None = None
    "When set, `fault` hits only the requests whose messages hold this text (a poison prompt); the rest are served."
    hold: threading.Event | None = None
    "When given, each request stops after `hold_after` pieces of its answer (its stream open, its slot held) until"
    " the event is set, then goes on at its pace: a test looks at a run while the request is surely in flight."
    hold_after: int = 0
    "How many pieces a held request sends before it waits for `hold` (0: none)."

    def calls(self, body: dict) -> list[tuple[str, dict]]:
        if not body.get("tools") or self.tool_calls is None:
            return []
        calls = self.tool_calls(body.get("messages") or []) if callable(self.tool_calls) else self.tool_calls
        return list(calls or [])

    def pieces(self, model: str, messages: list[dict] | None = None) -> list[str]:
        text = self.respond(messages or []) if self.respond else self.text
        if text is not None:
            words = text.split(" ")
            n = max(1, min(self.tokens, len(words)))
            size = -(-len(words) // n)
            return [" ".join(words[i:i + size]) + (" " if i + size < len(words) else "")
                    for i in range(0, len(words), size)]
        return [f"{model}-{i} " for i in range(self.tokens)]

    def stream(self, model: str, body: dict) -> list[tuple[str, str]]:
        """What to stream, as (kind, text) pieces: kind `thinking`, `content` or `tool_calls` (then a list of calls)."""
        calls = self.calls(body)
        if calls:
            return [("tool_calls", calls)]  # type: ignore[list-item]
        answer = [("content", p) for p in self.pieces(model, body.get("messages"))]
        wants = body.get("think", (body.get("chat_template_kwargs") or {}).get("enable_thinking", True))
        if not self.thinking or wants is False:
            return answer
        if self.thinking_style == "inline":
            text = f"<think>{self.thinking}</think>\n\n" + "".join(p for _, p in answer)
            return [("content", text[i:i + 5]) for i in range(0, len(text), 5)]
        words = self.thinking.split(" ")
        return [("thinking", w + (" " if i < len(words) - 1 else "")) for i, w in enumerate(words)] + answer

    def logprobs(self, piece: str, body: dict) -> list[dict]:
        """The piece as one token with its logprob and, when `top_logprobs` is asked, that many rivals (itself
        first), in the shape both Ollama and llama.cpp's server send (`token`, `logprob`, `bytes`)."""
        top = [{"token": piece, "logprob": self.logprob, "bytes": list(piece.encode())}]
        top += [{"token": f"alt{k}", "logprob": self.logprob - k, "bytes": list(f"alt{k}".encode())}
                for k in range(1, int(body.get("top_logprobs") or 0))]
        return [{**top[0], "top_logprobs": top if body.get("top_logprobs") else []}]



@dataclass
class Recorded:
    """One request the fake received."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    arrived: float
    started: float | None = None
    "When it got a server slot (time.perf_counter())."
    ended: float | None = None
    disconnected: bool = False
    "The client closed the connection before the answer was complete."

    @property
    def model(self) -> str:
        return self.body.get("model", "")

    @property
    def messages(self) -> list[dict]:
        return self.body.get("messages", [])

    @property
    def authorization(self) -> str:
        return self.headers.get("Authorization", "")

    @property
    def key(self) -> str:
        """What the caller sent as its key: the Authorization header after `Bearer ` (or `Basic `)."""
        return self.authorization.partition(" ")[2]


class FakeServer:
    """An Ollama/OpenAI-compatible server with controllable latency, slots and faults."""

    def __init__(self, *, slots: int | None = None, version: str = "0.12.6", host: str = "127.0.0.1",
                 port: int = 0, extra_ports: int = 0, require_authorization: str | None = None,
                 strict: bool = False) -> None:
        self.slots = slots
        self.strict = strict
        ("Count a request out of `in_flight` only once its last line is written (not before it goes out): a client "
         "that sends its next request the moment it has read a stream's end is then seen overlapping.")
        self.require_authorization = require_authorization
        "When set, every request without exactly this Authorization header gets 401 (a key-protected server)."
        self.extra_ports = extra_ports
        "More ports served by this same server (same slots): one process that looks like several servers."
        self.other_urls: list[str] = []
        self.host = host
        "Requests served at once; the rest wait inside the server (as Ollama queues). None: no limit."
        self.version = version
        self.models: dict[str, Behaviour] = {}
        self.requests: list[Recorded] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._slots_sem: asyncio.Semaphore | None = None

    # ---------------------------------------------------------------- control

    def model(self, name: str, **behaviour: Any) -> "FakeServer":
        fault = behaviour.get("fault")
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
        self.models[name] = Behaviour(**behaviour)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.requests.clear()
        self.max_in_flight = 0

    def overlapped(self) -> bool:
        """Whether any two recorded requests were being served at the same time."""
        spans = sorted((r.arrived, r.ended or time.perf_counter()) for r in self.requests)
        return any(b[0] < a[1] for a, b in zip(spans, spans[1:]))

    def __enter__(self) -> "FakeServer":
        self._thread = threading.Thread(target=self._serve, name="fake-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop and self._thread:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    # ---------------------------------------------------------------- server

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _start(self) -> None:
        self._slots_sem = asyncio.Semaphore(self.slots) if self.slots else None
        app = web.Application(middlewares=[self._authorize], client_max_size=64 * 2**20)  # as Ollama: no small cap
        app.router.add_post("/api/chat", self._ollama_chat)
        app.router.add_post("/v1/chat/completions", self._openai_chat)
        app.router.add_get("/api/version", self._version)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_get("/v1/models", self._v1_models)
        app.router.add_post("/api/show", self._show)
        app.router.add_get("/api/ps", self._ps)
        app.router.add_get("/", self._root)
        app.router.add_post("/api/pull", self._pull)
        # Like Ollama, stop generating (and free the slot) when the client goes away.
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        for _ in range(self.extra_ports):
            extra = web.TCPSite(self._runner, self.host, 0)
            await extra.start()
            self.other_urls.append(f"http://127.0.0.1:{extra._server.sockets[0].getsockname()[1]}")  # type: ignore

    async def _stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.require_authorization and request.headers.get("Authorization") != self.require_authorization:
            return web.json_response({"error": "unauthorized"}, status=401)
        return await handler(request)

    async def _pull(self, request: web.Request) -> web.StreamResponse:
        """Ollama's pull stream; a model name containing "missing" does not exist in the registry."""
        record, _ = await self._admit(request)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(b'{"status":"pulling manifest"}\n')
        if "missing" in record.model:
            await response.write(b'{"error":"pull model manifest: file does not exist"}\n')
        else:
            total = 4_000_000
            for done in range(0, total + 1, 1_000_000):
                await asyncio.sleep(0.01)
                await response.write(json.dumps({"status": "pulling 6a0746a1ec1a", "digest": "sha256:6a0746a1ec1a",
                                                 "total": total, "completed": done}).encode() + b"\n")
            for status in ("verifying sha256 digest", "writing manifest", "success"):
                await response.write(json.dumps({"status": status}).encode() + b"\n")
            self.model(record.model)
        await response.write_eof()
        return response

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": self.version})

    async def _tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [
            {"name": m, "model": m, "modified_at": _now(), "size": 1_000_000, "digest": "0" * 64,
             "details": {"format": "gguf", "family": "llama", "parameter_size": "8B", "quantization_level": "Q4_0"}}
            for m in self.models]})

    async def _show(self, request: web.Request) -> web.Response:
        record, behaviour = await self._admit(request)
        if behaviour is None:
            return web.json_response({"error": f"model '{record.model}' not found"}, status=404)
        await asyncio.sleep(behaviour.show_delay)
        params = float(behaviour.parameter_size.rstrip("BbMm")) * (1e6 if behaviour.parameter_size[-1] in "Mm" else 1e9)
        return web.json_response({
            "license": "", "modelfile": f"FROM {record.model}\n", "parameters": "stop \"<|eot_id|>\"",
            "template": "{{ .Prompt }}",
            "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                        "parameter_size": behaviour.parameter_size, "quantization_level": behaviour.quantization},
            "model_info": {"general.architecture": "llama", "general.parameter_count": int(params),
                           "llama.block_count": behaviour.layers, "llama.attention.head_count": 32,
                           "llama.attention.head_count_kv": behaviour.kv_heads, "llama.embedding_length": 4096,
                           "llama.context_length": 8192},
            "capabilities": ["completion", "thinking"] if behaviour.thinking else ["completion"],
            "modified_at": _now()})

    async def _ps(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [
            {"name": name, "model": name, "size": b.loaded_bytes, "digest": "0" * 64,
             "details": {"format": "gguf", "family": "llama", "parameter_size": b.parameter_size,
                         "quantization_level": b.quantization},
             "expires_at": "2099-01-01T00:00:00Z", "size_vram": 0}
            for name, b in self.models.items() if b.loaded_bytes]})

    async def _v1_models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "library"} for m in self.models]})

    def _version_number(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.version.split("-")[0].split(".") if part.isdigit())

    # ---------------------------------------------------------------- chat

    async def _admit(self, request: web.Request) -> tuple[Recorded, Behaviour | None]:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        record = Recorded(request.path, body, dict(request.headers), time.perf_counter())
        self.requests.append(record)
        behaviour = self.models.get(body.get("model", ""))
        if behaviour is not None and behaviour.fault_on is not None and not any(
                behaviour.fault_on in str(m.get("content", "")) for m in record.messages if isinstance(m, dict)):
            behaviour = replace(behaviour, fault=None)
        return record, behaviour

    async def _ollama_chat(self, request: web.Request) -> web.StreamResponse:
        record, behaviour = await self._admit(request)
        model = record.model
        if behaviour is None or behaviour.fault == "404":
            record.ended = time.perf_counter()
            return web.json_response({"error": f'model "{model}" not found, try pulling it first'}, status=404)
        if behaviour.fault == "500":
            record.ended = time.perf_counter()
            return web.json_response({"error": "llama runner process has terminated: signal: killed"}, status=500)
        if behaviour.fault in ("401_echo", "401_partial"):  # Ollama behind a proxy that checks keys
            record.ended = time.perf_counter()
            return web.json_response({"error": _bad_key_message(record, behaviour.fault)}, status=401)
        if behaviour.reject_structured_output and "format" in record.body:
            record.ended = time.perf_counter()
            return web.json_response({"error": "invalid format: structured outputs are not supported"}, status=400)
        if behaviour.reject_think and "think" in record.body:
            record.ended = time.perf_counter()
            return web.json_response({"error": f'"{model}" does not support thinking'}, status=400)
        if behaviour.reject_tools and record.body.get("tools"):
            record.ended = time.perf_counter()
            return web.json_response({"error": f"registry.ollama.ai/library/{model} does not support tools"},
                                     status=400)
        if behaviour.fault == "503":
            record.ended = time.perf_counter()
            return web.json_response({"error": "server busy, please try again.  maximum pending requests exceeded"},
                                     status=503)
        if any(not isinstance(call.get("function", {}).get("arguments", {}), dict)
               for m in record.messages for call in m.get("tool_calls") or []):
            record.ended = time.perf_counter()  # Ollama's arguments are an object (a Go map)
            return web.json_response({"error": "json: cannot unmarshal string into Go struct field "
                                               "ToolCallFunction.messages.tool_calls.function.arguments of type "
                                               "api.ToolCallFunctionArguments"}, status=400)

        async def frame(piece: Any, kind: str = "content") -> bytes:
            if kind == "tool_calls":
                message = {"role": "assistant", "content": "", "tool_calls": [
                    {"function": {"name": name, "arguments": arguments}} for name, arguments in piece]}
            else:
                message = ({"role": "assistant", "content": piece} if kind == "content"
                           else {"role": "assistant", "content": "", "thinking": piece})
            chunk = {"model": model, "created_at": _now(), "message": message, "done": False}
            if record.body.get("logprobs") and kind != "tool_calls" and self._version_number() >= (0, 12, 11):
                chunk["logprobs"] = behaviour.logprobs(piece, record.body)  # top level, beside `message`
            return (json.dumps(chunk) + "\n").encode()

        def final(count: int, started: float) -> bytes:
            total = int((time.perf_counter() - record.arrived) * 1e9)
            gen = int((time.perf_counter() - started) * 1e9)
            prompt_tokens = sum(len((m.get("content") or "").split()) for m in record.messages)
            return (json.dumps({
                "model": model, "created_at": _now(), "message": {"role": "assistant", "content": ""},
                "done_reason": "stop", "done": True, "total_duration": total, "load_duration": 1_000_000,
                "prompt_eval_count": prompt_tokens, "prompt_eval_duration": 2_000_000,
                "eval_count": count, "eval_duration": max(gen, 1)}) + "\n").encode()

        error_line = b'{"error":"an error was encountered while running the model: unexpected EOF"}\n'
        if behaviour.fault == "error_echo":
            error_line = (json.dumps({"error": f"credentials expired: {record.authorization}"}) + "\n").encode()
        return await self._stream(request, record, behaviour, "application/x-ndjson", frame, final,
                                  error_line=error_line, done_line=None)

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        record, behaviour = await self._admit(request)
        model = record.model
        if behaviour is None or behaviour.fault == "404":
            record.ended = time.perf_counter()
            return web.json_response({"error": {"message": f"The model `{model}` does not exist.",
                                                "type": "NotFoundError", "param": None, "code": 404}}, status=404)
        refused = next((f for f in ("reasoning_effort", "chat_template_kwargs") if f in record.body), None)
        if behaviour.reject_think and refused:
            record.ended = time.perf_counter()
            return web.json_response({"error": {"message": f"Unrecognized request argument supplied: {refused}",
                                                "type": "invalid_request_error", "param": refused, "code": None}},
                                     status=400)
        if behaviour.reject_structured_output and "response_format" in record.body:
            record.ended = time.perf_counter()
            return web.json_response({"error": {"message": "response_format is not supported", "type":
                                                "invalid_request_error", "param": "response_format", "code": None}},
                                     status=400)
        if behaviour.fault in ("401_echo", "401_partial"):
            record.ended = time.perf_counter()
            return web.json_response({"error": {"message": _bad_key_message(record, behaviour.fault),
                                                "type": "invalid_request_error", "param": None,
                                                "code": "invalid_api_key"}}, status=401)
        unanswered = next((i for i, m in enumerate(record.messages)
                           if m.get("role") == "tool" and not m.get("tool_call_id")), None)
        if unanswered is not None:
            record.ended = time.perf_counter()
            return web.json_response({"error": {"message": "Missing parameter 'tool_call_id': messages with role "
                                                           "'tool' must have a 'tool_call_id'.",
                                                "type": "invalid_request_error",
                                                "param": f"messages.[{unanswered}].tool_call_id",
                                                "code": "missing_required_parameter"}}, status=400)
        if behaviour.fault == "500_traceback":
            record.ended = time.perf_counter()
            return web.json_response({"error": {"message": TRACEBACK, "type": "internal_server_error"}}, status=500)
        if behaviour.fault in ("500", "503"):
            record.ended = time.perf_counter()
            status = int(behaviour.fault)
            message = "Internal server error" if status == 500 else "Server is busy, please try again later"
            return web.json_response({"error": {"message": message, "type": "server_error", "param": None,
                                                "code": status}}, status=status)
        ident = f"chatcmpl-{len(self.requests)}"
        created = int(time.time())
        include_usage = bool((record.body.get("stream_options") or {}).get("include_usage"))
        first = [True]

        called = [False]

        async def frame(piece: Any, kind: str = "content") -> bytes:
            if kind == "tool_calls":  # the name in the first fragment of each call, its arguments in pieces
                called[0] = True
                out = b""
                for index, (name, arguments) in enumerate(piece):
                    text = json.dumps(arguments)
                    fragments = [{"index": index, "id": f"call_fake{index}", "type": "function",
                                  "function": {"name": name, "arguments": ""}}]
                    fragments += [{"index": index, "function": {"arguments": text[i:i + 7]}}
                                  for i in range(0, len(text), 7)]
                    for fragment in fragments:
                        delta = {"role": "assistant", "content": None, "tool_calls": [fragment]} if first[0] \
                            else {"tool_calls": [fragment]}
                        first[0] = False
                        out += _sse({"id": ident, "object": "chat.completion.chunk", "created": created,
                                     "model": model, "system_fingerprint": "fp_fake",
                                     "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
                return out
            key = "content" if kind == "content" else behaviour.reasoning_field
            delta = {"role": "assistant", key: piece} if first[0] else {key: piece}
            first[0] = False
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
            if record.body.get("logprobs"):
                choice["logprobs"] = {"content": behaviour.logprobs(piece, record.body)}
            return _sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                         "system_fingerprint": "fp_fake", "choices": [choice]})

        def final(count: int, started: float) -> bytes:
            out = _sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                        "system_fingerprint": "fp_fake",
                        "choices": [{"index": 0, "delta": {},
                                     "finish_reason": "tool_calls" if called[0] else "stop"}]})
            if include_usage:
                prompt_tokens = sum(len((m.get("content") or "").split()) for m in record.messages)
                out += _sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                             "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": count,
                                                      "total_tokens": prompt_tokens + count}})
            return out

        error_line = _sse({"error": {"message": "model runner crashed", "type": "server_error"}})
        if behaviour.fault == "error_echo":
            error_line = _sse({"error": {"message": f"credentials expired: {record.authorization}",
                                         "type": "server_error"}})
        return await self._stream(request, record, behaviour, "text/event-stream", frame, final,
                                  error_line=error_line, done_line=b"data: [DONE]\n\n")

    async def _stream(self, request, record, behaviour, content_type, frame, final, *, error_line, done_line):
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self._slots_sem:
                async with self._slots_sem:
                    return await self._generate(request, record, behaviour, content_type, frame, final,
                                                error_line, done_line)
            return await self._generate(request, record, behaviour, content_type, frame, final,
                                        error_line, done_line)
        except asyncio.CancelledError:
            record.disconnected = True  # aiohttp cancels the handler when the client goes away
            raise
        finally:
            self._finish(record)

    def _finish(self, record: Recorded) -> None:
        """The request no longer holds the server: called before its last bytes go out, so a client that has
        read the end of a stream never sees the request still counted in flight."""
        if record.ended is None:
            record.ended = time.perf_counter()
            self.in_flight -= 1

    async def _generate(self, request, record, behaviour, content_type, frame, final, error_line, done_line):
        record.started = started = time.perf_counter()
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        pieces = [] if behaviour.fault == "empty" else behaviour.stream(record.model, record.body)
        if behaviour.fault == "echo":
            header = record.authorization
            pieces += [("content", f"you sent {header[:len(header) // 2]}"),
                       ("content", f"{header[len(header) // 2:]}, thanks")]
        steps = max(1, len(pieces))
        gap = behaviour.latency / steps
        fault = behaviour.fault
        first = behaviour.ttft if behaviour.ttft is not None else gap
        for i, (kind, piece) in enumerate(pieces):
            if behaviour.hold is not None and i == behaviour.hold_after:
                held = time.perf_counter()
                while not behaviour.hold.is_set():  # set from the test's thread
                    await asyncio.sleep(0.01)
                started += time.perf_counter() - held  # the rest at its pace, from here
            # Against absolute times, so sleep overshoot does not pile up over many tokens.
            due = started + first + i * (behaviour.latency - first) / max(1, steps - 1) if steps > 1 else started + first
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            if i == steps // 2 and fault == "raw_chunk":
                raw = behaviour.raw_chunk.encode()
                await response.write(b"data: " + raw + b"\n\n" if done_line else raw + b"\n")
            if i == steps // 2 and fault == "endless":
                batch = (await frame("many words ")) * 256
                while True:
                    await response.write(batch)
            if i == steps // 2 and fault in ("long_line", "long_unterminated"):
                line = await frame("x" * behaviour.line_bytes)
                await response.write(line if fault == "long_line" else line.rstrip(b"\n"))
                if fault == "long_unterminated":
                    await response.write_eof()
                    return response
            if i == steps // 2 and fault in ("cut", "truncated", "garbage", "hang", "error_line", "error_echo"):
                if fault == "hang":
                    await asyncio.sleep(3600)
                if fault == "cut":
                    request.transport.close()  # abrupt: the chunked body never terminates
                    return response
                if fault == "truncated":
                    await response.write_eof()  # clean end, but no final chunk
                    return response
                if fault == "garbage":
                    await response.write(b"<html><body>502 Bad Gateway</body></html>\n")
                if fault in ("error_line", "error_echo"):
                    await response.write(error_line)
                    await response.write_eof()
                    return response
            await response.write(await frame(piece, kind))
        if not pieces:
            await asyncio.sleep(behaviour.latency)
        last = final(len(pieces), started)
        if not self.strict:
            self._finish(record)
        await response.write(last)
        if done_line:
            await response.write(done_line)
        self._finish(record)
        await response.write_eof()
        return response


def _bad_key_message(record: Recorded, fault: str) -> str:
    """A hosted API's 401 message, quoting the key it was sent, whole or abbreviated (its start and its end)."""
    key = record.key
    shown = key if fault == "401_echo" else key[:7] + "*" * max(0, len(key) - 11) + key[-4:]
    return (f"Incorrect API key provided: {shown}. You can find your API key at "
            "https://platform.example.com/account/api-keys.")


def _sse(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (for 'connection refused')."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ReplayServer(FakeServer):
    """Answers every chat POST with recorded raw bytes (status, content type, body), for parser tests."""

    def __init__(self, body: bytes, *, status: int = 200, content_type: str = "application/x-ndjson") -> None:
        super().__init__()
        self.body, self.status, self.content_type = body, status, content_type

    async def _ollama_chat(self, request: web.Request) -> web.StreamResponse:
        await self._admit(request)
        response = web.StreamResponse(status=self.status, headers={"Content-Type": self.content_type})
        await response.prepare(request)
        await response.write(self.body)
        await response.write_eof()
        return response

    _openai_chat = _ollama_chat


class BannerServer:
    """Not an HTTP server: a program on a port (sshd, a database) that greets each connection with a banner, reads
    what the client says, and hangs up once the client does (as sshd does: closing on a client's unread request
    would reset the connection, and the client might lose the banner). What a user meets when api_url names the
    wrong port."""

    def __init__(self, banner: bytes = b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n") -> None:
        self.banner = banner
        self.connections = 0
        self._server: socketserver.ThreadingTCPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "BannerServer":
        fake = self

        class Greet(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                fake.connections += 1
                self.request.sendall(fake.banner)
                self.request.settimeout(60)  # sshd's login grace: a client that says nothing is let go
                try:
                    while self.request.recv(65536):
                        pass
                except OSError:
                    pass

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Greet)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="banner-server", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
