"""The backend registry's contract: every registered backend answers every facet, against a protocol-faithful fake
server where the facet talks to one — so a new backend kind is its module, one line in the registry, and the fakes."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from fakes import FakeServer
from parallama.backends import Backend, backend_for, backends, parse_api_url
from parallama.backends.probing import ServerProbe
from parallama.config import fleet_from_dict
from parallama.fleet import Agent

BACKENDS = [pytest.param(b, id=b.name) for b in backends()]
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def agent_on(server: FakeServer, backend: Backend, **options) -> Agent:
    fleet = fleet_from_dict({"worker_agents": [{"api_url": server.url + backend.api_path, "model": "m",
                                                "options": options}]})
    return fleet.workers[0]


async def chat(backend: Backend, agent: Agent, **kwargs):
    async with aiohttp.ClientSession() as session:
        return await backend.chat(session, agent, [{"role": "user", "content": "hi"}], lambda _: None,
                                  lambda _: None, **kwargs)


def test_every_backend_is_found_by_its_name_and_its_url():
    assert len({b.name for b in backends()}) == len(backends()) >= 2
    for backend in backends():
        assert backend_for(backend.name) is backend
        protocol, endpoint = parse_api_url("http://localhost:1234" + backend.api_path)
        assert protocol == backend.name
        assert endpoint.startswith(backend.probe_base(endpoint)) and backend.endpoint_for(
            "http://localhost:1234", backend.api_path) == endpoint
    with pytest.raises(ValueError, match="cannot tell the protocol") as caught:
        parse_api_url("http://localhost:1234/nowhere")
    for backend in backends():  # the error names every backend's path
        assert backend.api_path in str(caught.value) and backend.label in str(caught.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_answers_every_facet(backend: Backend):
    assert backend.label and backend.default_context > 0
    assert isinstance(backend.unsent_options({"temperature": 0.5, "num_ctx": 2048}), list)
    structured = backend.structured_output(SCHEMA, "answer")
    assert structured and SCHEMA in _values(structured)  # the schema itself goes in the request
    for text in (backend.start_command("http://localhost:11434/api/chat"),
                 backend.pull_command("http://localhost:11434/api/chat", "m"),
                 backend.several_models_note(2)):
        assert text is None or isinstance(text, str) and text
    assert "m7" in backend.missing_model_fix("http://localhost:1", "m7", ["a", "b"])
    assert "3" in backend.more_slots_fix("http://localhost:1", 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_streams_an_answer_with_its_logprobs_only_when_asked(backend: Backend):
    with FakeServer(version="0.12.11") as server:
        server.model("m", text="one two three", tokens=3, logprob=-0.5)
        agent = agent_on(server, backend)
        plain = asyncio.run(chat(backend, agent))
        assert plain.text == "one two three" and plain.logprobs is None
        assert "logprobs" not in server.requests[-1].body and "top_logprobs" not in server.requests[-1].body
        asked = asyncio.run(chat(backend, agent, logprobs=2))
        assert asked.text == "one two three"
        assert asked.logprobs is not None
        assert "".join(t.token for t in asked.logprobs) == asked.text
        assert all(t.logprob == -0.5 and len(t.top) == 2 and t.top[0] == (t.token, -0.5) for t in asked.logprobs)
        own = asyncio.run(chat(backend, agent, logprobs=0))
        assert own.logprobs and all(t.top == () for t in own.logprobs)


def test_an_ollama_that_ignores_logprobs_is_not_an_error():
    """Ollama before 0.12.11 reads no `logprobs` field: the answer comes as usual, with no logprobs."""
    backend = backend_for("ollama")
    with FakeServer(version="0.12.6") as server:
        server.model("m", text="one two three", tokens=3)
        completion = asyncio.run(chat(backend, agent_on(server, backend), logprobs=2))
        assert server.requests[-1].body["logprobs"] is True and server.requests[-1].body["top_logprobs"] == 2
    assert completion.text == "one two three" and completion.logprobs is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_probes_its_server(backend: Backend):
    with FakeServer() as server:
        server.model("m")
        agent = agent_on(server, backend)
        probe = ServerProbe(url=backend.probe_base(agent.endpoint), protocol=backend.name)

        async def ask() -> None:
            async with aiohttp.ClientSession() as session:
                await backend.probe(session, probe.url, {}, probe, ["m"])

        asyncio.run(ask())
    assert probe.reachable and probe.has_model("m") and probe.version and probe.latency_ms is not None


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_sends_the_options_it_has_a_field_for(backend: Backend):
    with FakeServer() as server:
        server.model("m")
        agent = agent_on(server, backend, temperature=0.25, num_ctx=2048)
        body = backend.request_body(agent, [{"role": "user", "content": "hi"}])
        unsent = backend.unsent_options(agent.options)
    assert body["model"] == "m" and body["stream"] is True and body["messages"]
    assert 0.25 in _values(body) and "temperature" not in unsent
    assert (2048 in _values(body)) == ("num_ctx" not in unsent)


def _values(data) -> list:
    """Every value nested in `data`."""
    if isinstance(data, dict):
        return [v for value in data.values() for v in [value, *_values(value)]]
    if isinstance(data, list):
        return [v for value in data for v in [value, *_values(value)]]
    return []


@pytest.mark.parametrize("backend", BACKENDS)
def test_logprobs_asked_by_a_stage_reach_its_results(backend: Backend):
    """A stage that asks `Run.ask(…, logprobs=N)` finds each answer's tokens in `AgentResult.logprobs`; one that
    does not ask gets None and sends no such field."""
    from parallama.calls import Run, Transport, client_session
    from parallama.redact import Redactor

    async def ask(agent: Agent, **kwargs):
        async with client_session() as session:
            run = Run(Transport(session, {}, None), "r1", None, Redactor([]))
            [result] = await run.ask("workers", [(agent, [{"role": "user", "content": "hi"}])], None, **kwargs)
            return result

    with FakeServer(version="0.13.0") as server:
        server.model("m", text="yes it is", tokens=3, logprob=-0.1)
        agent = agent_on(server, backend)
        asked = asyncio.run(ask(agent, logprobs=1))
        plain = asyncio.run(ask(agent))
    assert asked.ok and [t.token for t in asked.logprobs] == ["yes ", "it ", "is"]
    assert all(t.top == (("yes ", -0.1),) for t in asked.logprobs[:1])
    assert plain.ok and plain.logprobs is None
