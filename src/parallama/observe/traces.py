"""OpenTelemetry traces of a fleet's runs, in the GenAI semantic conventions (status: development): a run is an
`invoke_workflow parallama:<strategy>` span, each agent request a `chat <model>` child (kind CLIENT) carrying
`gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.agent.name`, `server.address`,
`server.port`, `gen_ai.usage.input_tokens` / `output_tokens` and, when it failed, `error.type`; its wait for a slot
is an event on it, its outcome its status. In `serve`, the HTTP request is a span too, the child of the client's
`traceparent` when it sends one, and the parent of the run.

Only imported when the standard environment asks for traces (`observe.traces_wanted`). Prompt and answer text is
recorded only with the conventions' opt-in content capture, `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`
(`true`, `span_only` or `span_and_event`), and then as the run's results hold it: keys and URL passwords masked.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import TYPE_CHECKING, Any, Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import __version__
from ..events import Cut, Event, Failed, Finished, Queued, RunEnded, RunStarted, Started
from ..urls import port_of
from . import METRICS_PATH

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from ..fleet import Agent
    from ..result import AgentResult, RunResult

CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
CAPTURE_ON = ("true", "span_only", "span_and_event")

PROVIDERS = {"ollama": "ollama", "openai": "openai"}
"`gen_ai.provider.name` by protocol: the telemetry flavour the wire speaks (vLLM and llama.cpp speak OpenAI's)."

WORKFLOW_PREFIX = "parallama:"
"A run's workflow name is its strategy as `serve` names the model: `parallama:synthesize`, `parallama:vote`…"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def content_capture() -> bool:
    """Whether the environment opts in to recording prompt and answer text on spans."""
    return os.environ.get(CAPTURE_ENV, "").strip().lower() in CAPTURE_ON


class RunTracer:
    """An event sink that turns runs into spans on `tracer`."""

    def __init__(self, tracer: "Tracer", *, capture: bool | None = None) -> None:
        self.tracer = tracer
        self.capture = content_capture() if capture is None else capture
        self._workflows: dict[str, "Span"] = {}
        self._requests: dict[tuple[str, str, str], list["Span"]] = {}
        self._handlers: dict[type, Callable[..., None]] = {
            RunStarted: self._run_started, Queued: self._queued, Started: self._started, Finished: self._ended,
            Failed: self._ended, Cut: self._ended, RunEnded: self._run_ended}

    def __call__(self, event: Event) -> None:
        handler = self._handlers.get(type(event))  # Delta and Thinking, the hot path, find nothing here
        if handler is not None:
            handler(event)

    def _run_started(self, event: RunStarted) -> None:
        kind = event.kind
        if kind == "agent":
            return  # one agent on its own: its chat span alone, under the caller's span
        name = WORKFLOW_PREFIX + (event.strategy or ("workers" if kind == "run" else kind))
        span = self.tracer.start_span(f"invoke_workflow {name}", kind=SpanKind.INTERNAL, attributes={
            "gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": name, "gen_ai.agent.name": name,
            "parallama.run.id": event.run_id})
        self._workflows[event.run_id] = span

    def _queued(self, event: Queued) -> None:
        agent = event.agent
        workflow = self._workflows.get(event.run_id)
        parent = trace.set_span_in_context(workflow) if workflow is not None else None
        host = urlsplit(agent.server).hostname or ""
        span = self.tracer.start_span(f"chat {agent.model}", context=parent, kind=SpanKind.CLIENT, attributes={
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": PROVIDERS.get(agent.protocol, agent.protocol),
            "gen_ai.request.model": agent.model, "gen_ai.agent.name": agent.name, "server.address": host,
            "server.port": port_of(agent.server), "parallama.stage": event.stage, "parallama.run.id": event.run_id})
        self._requests.setdefault((event.run_id, event.stage, agent.name), []).append(span)

    def _span(self, run_id: str, stage: str, agent: "Agent", *, pop: bool) -> "Span | None":
        key = (run_id, stage, agent.name)
        spans = self._requests.get(key)
        if not spans:
            return None
        if not pop:
            return spans[0]
        span = spans.pop(0)
        if not spans:
            del self._requests[key]
        return span

    def _started(self, event: Started) -> None:
        span = self._span(event.run_id, event.stage, event.agent, pop=False)
        if span is not None:
            span.add_event("parallama.slot_acquired", {"parallama.slot_wait_s": event.queued_s})
            server = event.agent.server  # a pool's: the replica that took the request
            span.set_attributes({"server.address": urlsplit(server).hostname or "", "server.port": port_of(server)})

    def _ended(self, event: Finished) -> None:
        span = self._span(event.run_id, event.stage, event.agent, pop=True)
        if span is None:
            return
        result = event.result
        _set_usage(span, result)
        span.set_attribute("parallama.outcome", {"ok": "done", "error": "failed"}.get(result.status, result.status))
        if result.ttft_s is not None:
            span.set_attribute("parallama.ttft_s", result.ttft_s)
        if result.status == "ok":
            span.set_status(Status(StatusCode.OK))
        elif result.status != "cut":  # a cut is the stage having heard enough, not an error
            span.set_attribute("error.type", result.error_kind or "_OTHER")
            span.set_status(Status(StatusCode.ERROR, (result.error or "").split(" — ", 1)[0]))
        if self.capture and result.content:
            span.set_attribute("gen_ai.output.messages", json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": result.content}]}], ensure_ascii=False))
        span.end()

    def _run_ended(self, event: RunEnded) -> None:
        for key in [k for k in self._requests if k[0] == event.run_id]:
            for span in self._requests.pop(key):
                span.set_attribute("parallama.outcome", "stopped")
                span.end()
        if event.run_id not in self._workflows:
            return
        span = self._workflows.pop(event.run_id)
        result = event.result
        if result is None:
            span.set_attribute("parallama.outcome", "stopped" if event.stopped else "interrupted")
        else:
            self._run_result(span, result)
        span.end()

    def _run_result(self, span: "Span", result: "RunResult") -> None:
        span.set_attribute("parallama.outcome", "answered" if result.answered else "no_answer")
        if result.final_source is not None:
            span.set_attribute("parallama.final_source", str(result.final_source))
        if result.cut:
            span.set_attribute("parallama.cut", list(result.cut))
        if result.answered:
            span.set_status(Status(StatusCode.OK))
        else:
            span.set_attribute("error.type", "no_answer")
            span.set_status(Status(StatusCode.ERROR, "no answer: every worker failed"))
        if self.capture:
            span.set_attribute("gen_ai.input.messages", json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": result.prompt}]}], ensure_ascii=False))
            if result.reply is not None:
                span.set_attribute("gen_ai.output.messages", json.dumps(
                    [{"role": "assistant", "parts": [{"type": "text", "content": result.reply}]}],
                    ensure_ascii=False))


def _set_usage(span: "Span", result: "AgentResult") -> None:
    if result.prompt_tokens is not None:
        span.set_attribute("gen_ai.usage.input_tokens", result.prompt_tokens)
    if result.completion_tokens is not None or result.thinking_tokens is not None:
        span.set_attribute("gen_ai.usage.output_tokens", (result.completion_tokens or 0) + (result.thinking_tokens or 0))


def http_spans(tracer: "Tracer") -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """serve's middleware: a SERVER span for each chat request (a POST) and each request that sends `traceparent`,
    the child of the client's trace when it sends one; the run the request makes is its child."""

    @web.middleware
    async def trace_request(request: web.Request, handler: Handler) -> web.StreamResponse:
        carried = "traceparent" in request.headers
        if not carried and (request.method != "POST" or request.path.startswith("/ui/")
                            or request.path == METRICS_PATH):
            return await handler(request)
        parent = propagate.extract(request.headers) if carried else None
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        span = tracer.start_span(f"{request.method} {route}", context=parent, kind=SpanKind.SERVER, attributes={
            "http.request.method": request.method, "http.route": route, "url.path": request.path})
        token = otel_context.attach(trace.set_span_in_context(span))
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away (nginx's "client closed request"): not the server's error
            span.set_attribute("parallama.outcome", "client_closed")
            raise
        finally:
            otel_context.detach(token)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_attribute("error.type", str(status))
                span.set_status(Status(StatusCode.ERROR))
            span.end()

    return trace_request


class Tracing:
    """A tracer provider of our own, made from the environment: its sink for a client, its tracer, its end."""

    def __init__(self, provider: "TracerProvider") -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("parallama", __version__)

    def sink(self) -> RunTracer:
        return RunTracer(self.tracer)

    async def shutdown(self) -> None:
        """Send what is left and stop (off the event loop: the exporter may wait on the network)."""
        await asyncio.to_thread(self.provider.shutdown)


def tracing_from_env(say: Callable[[str], None]) -> Tracing | None:
    """The tracing the OpenTelemetry environment variables ask for (exporters `otlp`, `console`), or None after one
    warning when the SDK or the exporter asked for is not installed: a run never fails for its telemetry."""
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError:
        say("warning: the environment asks for OpenTelemetry traces, and the SDK is not installed: "
            "pip install 'parallama[otel]'; going on without traces")
        return None
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "parallama"}))
    provider = TracerProvider(resource=resource)
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "console":
            exporters.append(ConsoleSpanExporter(out=sys.stderr))  # stdout holds the answer (or the JSON)
        elif name == "otlp":
            exporter = _otlp_exporter(say)
            if exporter is not None:
                exporters.append(exporter)
        elif name != "none":
            say(f"warning: OTEL_TRACES_EXPORTER={name!r} is not an exporter parallama knows (otlp, console); "
                "left out")
    if not exporters:
        return None
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider)


def _otlp_exporter(say: Callable[[str], None]) -> Any:
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip().lower()
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter)
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        extra = "opentelemetry-exporter-otlp-proto-grpc" if protocol == "grpc" else "parallama[otel]"
        say(f"warning: traces over OTLP ({protocol}) need its exporter: pip install '{extra}'; going on without")
        return None
    return OTLPSpanExporter()  # endpoint, headers, timeout: from the OTEL_EXPORTER_OTLP_* variables


__all__ = ["RunTracer", "Tracing", "http_spans", "tracing_from_env", "content_capture"]
