"""`parallama serve`: the fleet as one model behind Ollama's and OpenAI's APIs, until Ctrl-C."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from ..urls import is_loopback
from .common import CONFIG_ENV, DEFAULT_CONFIG, load_fleet, user_errors

if TYPE_CHECKING:
    from ..fleet import Agent, Fleet
    from ..serve import Running, ServeOptions

DEFAULT_PORT = 11400  # the same as parallama.serve.DEFAULT_PORT, written here so `--help` imports nothing


@click.command()
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help=f"Fleet config. Default: ${CONFIG_ENV}, then ./{DEFAULT_CONFIG}.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback reaches other machines (use --api-key-env).")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--api-key-env", metavar="NAME",
              help="Require `Authorization: Bearer <key>`, the key read from environment variable NAME.")
@click.option("--max-queue", type=click.IntRange(min=0), default=8, show_default=True,
              help="Runs that may wait beyond those the servers' slots let go at once; more get HTTP 429.")
@click.option("--progress", type=click.Choice(["thinking", "think-tags", "none"]), default="thinking",
              show_default=True, help="How clients see the workers' progress: as reasoning (Ollama `thinking`, "
                                      "OpenAI `reasoning_content`), inside <think>…</think> in the content, or not.")
@click.option("--no-history", is_flag=True, help="Do not keep served runs in the history (or set PARALLAMA_NO_HISTORY=1).")
@click.option("--allow-origin", "allow_origins", multiple=True, metavar="ORIGIN",
              help="Let web pages from ORIGIN call the API from a browser (repeatable; `https://*.example.com`, "
                   "or `*` for any). Pages on this machine may always.")
@click.option("--no-metrics", is_flag=True, help="Leave out GET /metrics (Prometheus metrics, served by default, "
                                                 "behind the API key when there is one).")
def serve(config_path: str | None, host: str, port: int, api_key_env: str | None, max_queue: int, progress: str,
          no_history: bool, allow_origins: tuple[str, ...], no_metrics: bool) -> None:
    """Serve the fleet as one model, `parallama:latest` (and one per strategy: `:synthesize`, `:judge`,
    `:council`, `:vote`, `:confidence`), and each agent alone as `parallama/<agent>` (a task model for titles and
    tags), behind Ollama's API (/api/chat …) and OpenAI's (/v1/chat/completions …), for Open WebUI, Continue, the
    ollama and openai clients, or curl. The workers' progress streams as thinking, the final answer as the reply; a
    request's tools go to the reviewer that writes it (config: "serve": {"tools": "review" | "agent" | "ignore"}).
    A web page at /ui/ shows every worker live, the review, the final answer, the timeline and the history."""
    with user_errors():
        import asyncio

        from ..history import history_disabled
        from ..serve import ServeOptions

        fleet = load_fleet(config_path)
        options = ServeOptions(progress=progress, max_queue=max_queue,  # type: ignore[arg-type]
                               api_key=_api_key(api_key_env), history=not (no_history or history_disabled()),
                               allow_origins=allow_origins, metrics=not no_metrics)
        asyncio.run(_serve(fleet, options, host, port, api_key_env))


def _api_key(name: str | None) -> str | None:
    from ..errors import UsageError

    if name is None:
        return None
    key = os.environ.get(name, "").strip()
    if not key:
        raise UsageError(f"--api-key-env {name}: the environment variable {name} is not set (or empty); "
                         f"export {name}=<a long random key> first")
    return key


async def _serve(fleet: "Fleet", options: "ServeOptions", host: str, port: int, key_env: str | None) -> None:
    import asyncio
    import logging
    import signal

    from ..errors import SetupError
    from ..serve import start

    access = logging.getLogger("parallama.serve.access")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    notes = logging.getLogger("parallama.serve")  # warnings (a damaged history) and a bug's traceback
    if not notes.handlers:
        notes.addHandler(logging.StreamHandler(sys.stderr))
    try:
        running = await start(fleet, options, host=host, port=port, access_log=access)
    except OSError as exc:
        raise SetupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{_port_hint(port)}") from exc
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        warning = exposure_warning(host, running.port, keyed=options.api_key is not None)
        if warning:
            click.echo(f"warning: {warning}", err=True)
        for line in _banner(fleet, running, options, key_env):
            click.echo(line, err=True)
        await stop.wait()
    finally:
        await running.close()
        click.echo("parallama serve stopped", err=True)


def exposure_warning(host: str, port: int, *, keyed: bool) -> str | None:
    """What to say when other machines can reach the server and nothing keeps them out."""
    if is_loopback(host) or keyed:
        return None
    return (f"listening on {host} with no API key: anyone who can reach port {port} can run your fleet; "
            "pass --api-key-env NAME")


def _traced(running: "Running") -> bool:
    from ..serve.observed import OBSERVED

    return running.runner.app[OBSERVED].tracing is not None


def _port_hint(port: int) -> str:
    from ..engines.ports import port_holder

    if port == 0:
        return ""
    return f" (held by {port_holder(port)}): pass --port with another port, or --port 0 for any free one"


def _tools_line(fleet: "Fleet", tools_agent: "Agent | None") -> str:
    """Where a request's tools go, as `serve.tools` says."""
    if fleet.tools_mode == "ignore":
        return "not used: the ensemble answers without them (serve.tools: ignore)"
    alone = f"{tools_agent.name} alone" if tools_agent else "none (no tools agent: answered without them)"
    if fleet.tools_mode == "agent":
        return f"requests with tools go to {alone} (serve.tools: agent)"
    writer = fleet.reviewers[0].name if fleet.reviewers else None
    return (f"the ensemble answers, and {writer} (which writes the reply) gets the tools; tool_choice "
            f"demanding one: {alone}" if writer else
            "the ensemble answers without them (no reviewer writes the reply); set serve.tools_agent and "
            '"tools": "agent" to have one agent call them')


def _banner(fleet: "Fleet", running: "Running", options: "ServeOptions", key_env: str | None) -> list[str]:
    """What to give each kind of client."""
    url = running.url
    if running.host in ("0.0.0.0", "::"):  # every address: name the machine
        import socket

        url = f"http://{socket.gethostname()}:{running.port}"
    service = running.service
    catalogue = service.catalogue
    ensembles = [name for name in catalogue.names if name not in catalogue.agents]
    tools_agent = fleet.tools_agent
    workers = ", ".join(f"{a.name} ({a.model})" for a in fleet.workers)
    reviewer = f"; reviewer {fleet.reviewers[0].name} ({fleet.reviewers[0].model}), {fleet.strategy}" \
        if fleet.reviewers else "; no reviewer"
    auth = f"  (with Authorization: Bearer ${key_env})" if key_env else ""
    return [
        f"parallama serve: {len(fleet.workers)} worker{'s' if len(fleet.workers) != 1 else ''}: {workers}{reviewer}",
        f"  models      {', '.join(ensembles)}",
        f"  each agent  {', '.join(catalogue.agents)}   (alone: a task model for titles and tags)",
        "  tools       " + _tools_line(fleet, tools_agent),
        f"  Ollama API  {url}{auth}   Open WebUI: an Ollama connection to this URL; "
        f"OLLAMA_HOST={url} for the ollama client",
        f"  OpenAI API  {url}/v1{auth}   base_url for the openai SDK, Continue, llm",
        f"  Web page    {url}/ui/" + ("   (it asks for the key)" if key_env else ""),
        *([f"  Metrics     {url}/metrics{auth}   for Prometheus"] if options.metrics else []),
        *(["  Traces      OpenTelemetry, as the OTEL_* environment variables say"] if _traced(running) else []),
        f"  {service.capacity} run(s) at once on these servers' slots, {options.max_queue} more may wait (then 429);"
        f" progress: {options.progress}; history: {'on' if service.history is not None else 'off'}",
        "  Ctrl-C stops it.",
    ]
