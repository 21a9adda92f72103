"""The protocol parsers on recorded byte streams, replayed by a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import pytest

from fakes import ReplayServer
from parallama import run

# Recorded from `ollama serve` 0.12 (`/api/chat`, stream: true); trimmed to three content chunks.
OLLAMA_STREAM = (
    b'{"model":"llama3:8b","created_at":"2025-10-01T10:00:00.1Z","message":{"role":"assistant","content":"Hel"},"done":false}\n'
    b'{"model":"llama3:8b","created_at":"2025-10-01T10:00:00.2Z","message":{"role":"assistant","content":"lo"},"done":false}\n'
    b'{"model":"llama3:8b","created_at":"2025-10-01T10:00:00.3Z","message":{"role":"assistant","content":" world"},"done":false}\n'
    b'{"model":"llama3:8b","created_at":"2025-10-01T10:00:00.4Z","message":{"role":"assistant","content":""},'
    b'"done_reason":"stop","done":true,"total_duration":4353619900,"load_duration":63915300,"prompt_eval_count":10,'
    b'"prompt_eval_duration":246847000,"eval_count":17,"eval_duration":4032296000}\n'
)

# An OpenAI-compatible stream (vLLM/llama.cpp shape) with a keep-alive comment, CRLF line ends and usage.
OPENAI_STREAM = (
    b': ping\r\n\r\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\r\n\r\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\r\n\r\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" there"},"finish_reason":null}]}\r\n\r\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\r\n\r\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}\r\n\r\n'
    b'data: [DONE]\r\n\r\n'
)


def fleet_for(url: str, path: str) -> dict:
    return {"worker_agents": [{"name": "w", "api_url": url + path, "model": "m"}]}


async def replay(body: bytes, path: str = "/api/chat", **kwargs):
    with ReplayServer(body, **kwargs) as fake:
        result = await run("hi", fleet_for(fake.url, path))
        return result.workers[0], fake


async def test_ollama_stream_text_and_final_metrics():
    worker, _ = await replay(OLLAMA_STREAM)
    assert worker.status == "ok"
    assert worker.content == "Hello world"
    assert (worker.prompt_tokens, worker.completion_tokens) == (10, 17)
    assert worker.tokens_per_s == pytest.approx(17 / 4.032296, rel=1e-3)  # eval_count / eval_duration


async def test_openai_stream_text_and_usage():
    worker, _ = await replay(OPENAI_STREAM, "/v1", content_type="text/event-stream")
    assert worker.status == "ok"
    assert worker.content == "Hi there"
    assert (worker.prompt_tokens, worker.completion_tokens) == (7, 2)


async def test_openai_stream_without_usage_counts_chunks():
    body = b"".join(line + b"\n\n" for line in OPENAI_STREAM.split(b"\r\n\r\n") if b'"usage"' not in line and line)
    worker, _ = await replay(body, "/v1/chat/completions", content_type="text/event-stream")
    assert worker.content == "Hi there" and worker.completion_tokens == 2


@pytest.mark.parametrize("body,path,kind,words", [
    (OLLAMA_STREAM.rsplit(b"\n", 2)[0] + b"\n", "/api/chat", "stream_broken", "before the final chunk"),
    (OLLAMA_STREAM[:200] + b"\nnot json at all\n", "/api/chat", "malformed", "malformed line"),
    (OLLAMA_STREAM.split(b"\n")[0] + b'\n{"error":"llama runner process has terminated"}\n', "/api/chat",
     "error", "llama runner process has terminated"),
    (OPENAI_STREAM.replace(b"data: [DONE]\r\n\r\n", b""), "/v1", "stream_broken", "[DONE]"),
    (b'data: {"error": {"message": "context length exceeded", "type": "invalid_request_error"}}\n\n', "/v1",
     "error", "context length exceeded"),
    (b"event: message\nid: 1\ndata: not-json\n\n", "/v1", "malformed", "malformed line"),
])
async def test_broken_streams_become_typed_errors(body, path, kind, words):
    worker, fake = await replay(body, path)
    assert worker.status == "error"
    assert worker.error_kind == kind
    assert words in worker.error
    assert worker.error.startswith(f"w ({fake.url}")


@pytest.mark.parametrize("status,body,kind,words", [
    (404, b'{"error":"model \\"m\\" not found, try pulling it first"}', "model_not_found", "ollama pull m"),
    (500, b'{"error":"llama runner process has terminated: signal: killed"}', "http_status", "HTTP 500: llama runner"),
    (503, b'{"error":"server busy, please try again.  maximum pending requests exceeded"}', "server_busy", "server busy"),
    (404, b"404 page not found", "http_status", "HTTP 404: 404 page not found"),
    (401, b'{"error":{"message":"Invalid API key","type":"auth"}}', "http_status", "Invalid API key"),
])
async def test_status_errors_keep_the_servers_words(status, body, kind, words):
    worker, _ = await replay(body, status=status, content_type="application/json")
    assert worker.status == "error"
    assert worker.error_kind == kind
    assert words in worker.error
