"""OpenTelemetry traces: a run as one `invoke_workflow` span with a `chat` span per request, in the GenAI
conventions' attributes; serve's HTTP request as their parent under the client's `traceparent`, exported over OTLP
to a receiver in this test; no prompt text unless content capture is asked for; off and not imported otherwise."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from typing import Any, Iterator

import aiohttp
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conftest import guide_fleet, worker, write_config


@pytest.fixture
def exported() -> Iterator[tuple[Any, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


async def test_a_run_is_one_workflow_span_with_a_chat_span_per_request(servers, exported):
    from parallama import FleetClient
    from parallama.observe.traces import RunTracer

    tracer, exporter = exported
    async with FleetClient(guide_fleet(servers)) as client:
        client.subscribe(RunTracer(tracer, capture=False))
        result = await client.run("What is 2+2? the private words")
    spans = exporter.get_finished_spans()
    [workflow] = [s for s in spans if s.attributes["gen_ai.operation.name"] == "invoke_workflow"]
    agents = [s for s in spans if s.attributes["gen_ai.operation.name"] == "chat"]
    assert len(spans) == 4 and len(agents) == 3
    assert workflow.name == "invoke_workflow parallama:synthesize"
    assert workflow.parent is None and workflow.status.status_code == StatusCode.OK
    assert workflow.attributes["parallama.outcome"] == "answered"
    by_agent = {s.attributes["gen_ai.agent.name"]: s for s in agents}
    assert set(by_agent) == {"A", "B", "Rev"}
    results = {r.name: r for r in [*result.workers, result.review]}
    for name, span in by_agent.items():
        assert span.parent.span_id == workflow.context.span_id
        assert span.context.trace_id == workflow.context.trace_id
        assert span.kind == SpanKind.CLIENT
        assert span.status.status_code == StatusCode.OK
        agent = results[name]
        assert span.name == f"chat {agent.model}"
        assert span.attributes["gen_ai.request.model"] == agent.model
        assert span.attributes["gen_ai.provider.name"] == "ollama"
        assert span.attributes["gen_ai.usage.output_tokens"] == agent.completion_tokens
        assert span.attributes["gen_ai.usage.input_tokens"] == agent.prompt_tokens
        server = servers[{"A": 0, "B": 1, "Rev": 2}[name]]
        assert span.attributes["server.port"] == int(server.url.rsplit(":", 1)[1])
        assert span.attributes["server.address"] == "localhost"
        [waited] = [e for e in span.events if e.name == "parallama.slot_acquired"]
        assert waited.attributes["parallama.slot_wait_s"] == agent.queued_s
    assert by_agent["Rev"].attributes["parallama.stage"] == "review"
    text = json.dumps([dict(s.attributes) for s in spans] + [s.name for s in spans])
    assert "private words" not in text and "Alpha says" not in text  # no content unless it is asked for


async def test_failures_carry_error_type_and_content_only_on_opt_in(servers, exported, monkeypatch):
    from parallama import FleetClient
    from parallama.observe.traces import RunTracer

    tracer, exporter = exported
    config = guide_fleet(servers)
    servers[0].model("gone", fault="404")
    config["worker_agents"][0] = worker(servers[0], "gone", name="A")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    async with FleetClient(config) as client:
        client.subscribe(RunTracer(tracer))
        await client.run("What is 2+2? the private words")
    spans = {s.attributes.get("gen_ai.agent.name"): s for s in exporter.get_finished_spans()}
    failed = spans["A"]
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.attributes["error.type"] == "model_not_found"
    assert json.loads(spans["B"].attributes["gen_ai.output.messages"])[0]["parts"][0]["content"] == "Beta says 4."
    workflow = spans["parallama:synthesize"]
    assert "private words" in workflow.attributes["gen_ai.input.messages"]
    assert "The answer is 4." in workflow.attributes["gen_ai.output.messages"]


class Receiver:
    """An OTLP/HTTP traces receiver on 127.0.0.1, in its own thread (the exporter posts from its own)."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        received = self.spans

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        received.extend(scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_serve_exports_the_request_and_its_run_under_the_clients_traceparent(serve, servers, monkeypatch):
    receiver = Receiver()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        running = await serve(guide_fleet(servers))
        async with aiohttp.ClientSession() as session:
            async with session.post(running.url + "/api/chat", headers={
                    "traceparent": f"00-{trace_id}-{parent_id}-01"}, json={
                    "model": "parallama", "messages": [{"role": "user", "content": "2+2?"}], "stream": False}) as r:
                assert r.status == 200
        await running.close()  # sends what is left
    finally:
        receiver.close()
    spans = {s.name: s for s in receiver.spans}
    assert len(receiver.spans) == 5, sorted(spans)
    assert {s.trace_id.hex() for s in receiver.spans} == {trace_id}
    http_span = spans["POST /api/chat"]
    assert http_span.parent_span_id.hex() == parent_id
    workflow = spans["invoke_workflow parallama:synthesize"]
    assert workflow.parent_span_id == http_span.span_id
    chats = [s for s in receiver.spans if s.name.startswith("chat ")]
    assert len(chats) == 3 and all(s.parent_span_id == workflow.span_id for s in chats)
    attributes = {a.key: a.value for a in chats[0].attributes}
    assert {"gen_ai.request.model", "gen_ai.usage.output_tokens", "server.port", "gen_ai.provider.name",
            "gen_ai.agent.name"} <= set(attributes)


def test_traces_are_off_and_not_imported_without_the_environment(tmp_path, servers):
    config = write_config(tmp_path / "c.json", guide_fleet(servers))
    code = ("import sys\nfrom parallama.cli import cli\n"
            f"try:\n    cli(['run', 'q', '-c', {str(config)!r}, '--no-history', '--metrics-port', '0'])\n"
            "except SystemExit as exit:\n    code = exit.code\n"
            "print('exit', code, sorted({m.split('.')[0] for m in sys.modules} & {'opentelemetry'}))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60).stdout
    assert out.strip().splitlines()[-1] == "exit 0 []"


def test_run_sends_its_spans_where_the_environment_says_under_its_traceparent(tmp_path, servers):
    config = write_config(tmp_path / "c.json", guide_fleet(servers))
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}, "OTEL_TRACES_EXPORTER": "console",
           "TRACEPARENT": f"00-{trace_id}-b7ad6b7169203331-01"}
    done = subprocess.run([sys.executable, "-m", "parallama", "run", "2+2?", "-c", str(config), "--no-history",
                           "--json", "--quiet"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["final"] == "The answer is 4."  # stdout holds the answer alone
    spans = json.loads("[" + done.stderr[done.stderr.index("{"):].replace("}\n{", "},\n{") + "]")
    assert sorted(s["name"] for s in spans) == ["chat m", "chat m", "chat rev", "invoke_workflow parallama:synthesize"]
    assert {s["context"]["trace_id"] for s in spans} == {"0x" + trace_id}
    [workflow] = [s for s in spans if s["name"].startswith("invoke_workflow")]
    assert workflow["parent_id"] == "0xb7ad6b7169203331"
    assert workflow["resource"]["attributes"]["service.name"] == "parallama"


async def test_a_run_serve_stops_on_its_way_out_is_still_sent(serve, monkeypatch):
    from fakes import FakeServer

    receiver = Receiver()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        with FakeServer(slots=1) as hanging:
            hanging.model("m", fault="hang", tokens=4)
            running = await serve({"worker_agents": [worker(hanging, "m", name="A")]})
            async with aiohttp.ClientSession() as session:
                response = await session.post(running.url + "/api/chat", json={
                    "model": "parallama", "messages": [{"role": "user", "content": "q"}]})
                await response.content.readline()  # the first line: the run is under way, its client still there
                await running.close()  # serve stops with the run still going
                response.close()
    finally:
        receiver.close()
    names = sorted(s.name for s in receiver.spans)
    assert names == ["POST /api/chat", "chat m", "invoke_workflow parallama:workers"], names
    workflow = next(s for s in receiver.spans if s.name.startswith("invoke_workflow"))
    assert {a.key: a.value.string_value for a in workflow.attributes}["parallama.outcome"] == "interrupted"
