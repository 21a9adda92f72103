"""`parallama up / status / down / pull / compose`: start and stop local server instances."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .common import Number, check_writable, echo_json, user_errors, write_file

if TYPE_CHECKING:
    from ..engines.state import Instance, InstanceStore

ENGINE_CHOICE = click.Choice(["llama-cpp", "ollama"])
DEFAULT_BASE_PORT = {"ollama": 11434, "llama-cpp": 8080}


def _recorded_instances(store: "InstanceStore") -> "list[Instance]":
    """The instances on record; a damaged record is said so (where, and what was found running), set aside and
    rewritten with what could be recovered."""
    record = store.read()
    if record.damage:
        aside = store.repair(record)
        found = ", ".join(f"{i.url} (pid {i.pid})" for i in record.recovered) or "none"
        kept = f"; the damaged file is kept as {aside}" if aside else ""
        click.echo(f"warning: {record.damage}{kept}; instances found running by their command line and port: "
                   f"{found}", err=True)
    return record.instances


def _default_engine() -> str:
    import shutil

    return "ollama" if shutil.which("ollama") else "llama-cpp"


@click.command()
@click.option("--engine", type=ENGINE_CHOICE, help="Server to start. Default: ollama when installed, else llama-cpp.")
@click.option("-n", "count", type=click.IntRange(min=1), default=1, show_default=True, help="Instances to start.")
@click.option("--base-port", type=click.IntRange(1, 65535), help="First port to try (ollama 11434, llama-cpp 8080).")
@click.option("--model", help="llama-cpp: a GGUF file (default: the embedded demo model); ollama: recorded for --write-config.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads per instance (default: (cores − 1) ÷ N, at least 1).")
@click.option("--parallel", type=click.IntRange(min=1), default=1, show_default=True,
              help="Slots per instance: requests it serves at once over one copy of the model (ollama: "
                   "OLLAMA_NUM_PARALLEL; llama-cpp: n_parallel, 2048 tokens of context per slot).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; anything else is exposed.")
@click.option("--strict-ports", is_flag=True, help="Fail (exit 2) on a busy port instead of moving on.")
@click.option("--ready-timeout", type=Number(min=0, min_open=True), default=120.0, show_default=True,
              metavar="SECONDS", help="How long to wait for each instance to answer.")
@click.option("--write-config", type=click.Path(dir_okay=False),
              help="Write a config with one worker per slot of the instances (and their slots in `servers`), "
                   "each with its own system prompt, temperature and seed, and a token cap (copies that answer "
                   "alike gain nothing).")
@click.option("--plain-workers", is_flag=True,
              help="With --write-config: workers that are plain copies of the model (no system prompt, no options).")
@click.option("--pool", is_flag=True,
              help="With --write-config: every agent's api_url lists all the instances (one pool of replicas: each "
                   "request goes to one with a free slot).")
@click.option("--force", is_flag=True, help="With --write-config: replace the file when it exists.")
def up(engine: str | None, count: int, base_port: int | None, model: str | None, threads: int | None,
       parallel: int, host: str, strict_ports: bool, ready_timeout: float, write_config: str | None,
       plain_workers: bool, pool: bool, force: bool) -> None:
    """Start N server instances on free ports and wait until each answers."""
    with user_errors():
        from ..engines import engine_named
        from ..engines.instances import exposure_warning, start_instances
        from ..errors import UsageError

        name = engine or _default_engine()
        if write_config and name == "ollama" and not model:
            raise UsageError("--write-config needs --model with the ollama engine (the model the workers use)")
        if plain_workers and not write_config:
            raise UsageError("--plain-workers shapes the config --write-config writes: add --write-config FILE")
        if pool and not write_config:
            raise UsageError("--pool shapes the config --write-config writes: add --write-config FILE")
        if write_config:
            check_writable(write_config, "--write-config", force=force)
        warning = exposure_warning(host)
        if warning:
            click.echo(f"warning: {warning}", err=True)

        from contextlib import nullcontext

        from rich.console import Console

        console = Console(stderr=True, highlight=False)

        def ready(instance, seconds: float) -> None:
            console.print(f"✓ {instance.engine} ready on {instance.url} (pid {instance.pid}, {seconds:.1f} s)",
                          markup=False)

        from ..engines.state import InstanceStore

        store = InstanceStore()
        _recorded_instances(store)
        waiting = console.status(f"starting {count} {name} instance(s) and waiting until they answer…")
        with waiting if console.is_terminal else nullcontext():
            report = start_instances(engine_named(name), count, base_port=base_port or DEFAULT_BASE_PORT[name],
                                     host=host, model=model, threads=threads, parallel=parallel,
                                     strict_ports=strict_ports, ready_timeout=ready_timeout, store=store,
                                     on_ready=ready)
        for line in report.skipped:
            click.echo(f"note: {line}; took the next free port", err=True)
        for instance in report.instances:
            click.echo(instance.api_url)
        if write_config:
            from ..engines.fleet_config import fleet_config
            from ..engines.instances import stop_instances

            try:
                config = fleet_config(report.instances, plain=plain_workers, pool=pool)
                write_file(write_config, json.dumps(config, indent=2) + "\n", "--write-config", force=force)
            except UsageError:  # it could be written a moment ago: all or nothing, stop what was started
                stop_instances(report.instances, store=store)
                raise
            click.echo(f"wrote {write_config}", err=True)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the instances as JSON.")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="Also show every server of this fleet (each replica of a pool): slots in use and requests waiting, "
                   "across the processes sharing its slots.")
def status(as_json: bool, config_path: str | None) -> None:
    """List the instances parallama started: alive or dead, URL, model, memory; with -c, each server's slots."""
    with user_errors():
        from ..engines.instances import instance_status
        from ..engines.state import InstanceStore

        store = InstanceStore()
        live, stale = instance_status(store, _recorded_instances(store))
        servers = _server_loads(config_path) if config_path else None
        if as_json:
            data: dict = {"instances": [{"engine": s.instance.engine, "pid": s.instance.pid, "url": s.instance.url,
                                         "api_url": s.instance.api_url, "model": s.instance.model, "alive": s.alive,
                                         "rss_bytes": s.rss_bytes, "log": s.instance.log, "note": s.note or None}
                                        for s in live + stale]}
            if servers is not None:
                data["servers"] = servers
            echo_json(data)
            return
        if servers is not None:
            for load in servers:
                pools = f"  pool of {', '.join(load['pools'])}" if load["pools"] else ""
                if load["in_flight"] is None:
                    click.echo(f"server {load['server']}  {load['slots']} slots (not shared: slot_store none){pools}")
                    continue
                waiting = f", {load['waiting']} waiting" if load["waiting"] else ""
                shared = "every host on the Redis" if load["shared"] == "redis" else "this machine"
                click.echo(f"server {load['server']}  {load['in_flight']}/{load['slots']} busy{waiting} "
                           f"(on {shared}){pools}")
        if not live and not stale and servers is None:
            click.echo("no instances (start some with `parallama up -n 3`)", err=True)
        for s in live:
            rss = f"{s.rss_bytes / 2**20:.0f} MiB" if s.rss_bytes else "?"
            click.echo(f"alive  {s.instance.url}  {s.instance.engine}  pid {s.instance.pid}  {rss}  "
                       f"{Path(s.instance.model).name if s.instance.model else '-'}")
        for s in stale:
            i = s.instance
            click.echo(f"dead   {i.url}  {i.engine}  pid {i.pid} {s.note}; removed from the record")


def _server_loads(config_path: str) -> list[dict]:
    """Every server of the fleet with its slots in the store (each replica of a pool, the pool's agents named)."""
    import asyncio

    from ..slots.loads import store_loads
    from .common import load_fleet

    fleet = load_fleet(config_path)
    loads = asyncio.run(store_loads({url: s.parallel for url, s in fleet.servers.items()}, fleet.slot_store))
    pools = {url: [a.name for a in fleet.agents if a.pooled and any(r.server == url for r in a.pool)]
             for url in fleet.servers}
    if loads is None:
        return [{"server": url, "slots": s.parallel, "in_flight": None, "waiting": None, "shared": "none",
                 "pools": pools[url]} for url, s in fleet.servers.items()]
    return [{"server": s.server, "slots": s.slots, "in_flight": s.in_flight, "waiting": s.waiting, "shared": s.shared,
             "pools": pools[s.server]} for s in loads]


@click.command()
@click.argument("ports", nargs=-1, type=click.IntRange(1, 65535))
@click.option("--all", "everything", is_flag=True, help="Stop every instance parallama started.")
def down(ports: tuple[int, ...], everything: bool) -> None:
    """Stop instances (SIGTERM, then SIGKILL after a grace period) and forget them."""
    with user_errors():
        from ..engines.instances import stop_instances
        from ..engines.state import InstanceStore
        from ..errors import UsageError

        if not ports and not everything:
            raise UsageError("say which instances to stop: `parallama down --all` or `parallama down PORT...`")
        store = InstanceStore()
        known = _recorded_instances(store)
        chosen = known if everything else [i for i in known if i.port in ports]
        unknown = sorted(set(ports) - {i.port for i in known})
        for port in unknown:
            click.echo(f"note: no instance of parallama's on port {port}", err=True)
        report = stop_instances(chosen, store=store)
        for instance in report.stopped:
            click.echo(f"stopped {instance.url} (pid {instance.pid})", err=True)
        for instance, why in report.forgotten:
            click.echo(f"note: {instance.url}: pid {instance.pid} {why}; not signalled, removed from the record",
                       err=True)
        if unknown and not chosen:
            sys.exit(1)


@click.command()
@click.option("-n", "count", type=click.IntRange(min=1), default=3, show_default=True, help="Ollama containers.")
@click.option("--base-port", type=click.IntRange(1, 65535), default=11434, show_default=True)
@click.option("--gpu", is_flag=True, help="Reserve the NVIDIA GPUs for every container.")
@click.option("--parallel", type=click.IntRange(min=1), default=1, show_default=True, help="OLLAMA_NUM_PARALLEL.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Host address the ports are published on.")
@click.option("--redis", is_flag=True, help="Add a Redis for the slots several parallama replicas share.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="docker-compose.yml", show_default=True)
@click.option("--force", is_flag=True, help="Replace the output file when it exists.")
def compose(count: int, base_port: int, gpu: bool, parallel: int, host: str, redis: bool, output: str,
            force: bool) -> None:
    """Write a docker compose file: one ollama/ollama container per port, one shared models volume."""
    with user_errors():
        from ..engines.compose import REDIS_PORT, compose_yaml
        from ..engines.instances import exposure_warning
        from ..errors import UsageError

        warning = exposure_warning(host)
        if warning:
            click.echo(f"warning: {warning}", err=True)
        if base_port + count - 1 > 65535:
            raise UsageError(f"ports {base_port}–{base_port + count - 1} go past 65535: use a --base-port of at most "
                             f"{65536 - count} for {count} containers")
        write_file(output, compose_yaml(count, base_port=base_port, gpu=gpu, host=host, num_parallel=parallel,
                                        redis=redis), "--output", force=force)
        click.echo(f"wrote {output}: `docker compose -f {output} up -d`, then ports "
                   f"{base_port}–{base_port + count - 1}", err=True)
        if redis:
            click.echo(f"slots shared by every replica: PARALLAMA_SLOT_STORE=redis://{host}:{REDIS_PORT}/0", err=True)


@click.command()
@click.argument("model")
@click.option("--url", help="Ollama server to pull through (default: the first ollama instance, else localhost:11434).")
def pull(model: str, url: str | None) -> None:
    """Download MODEL once into the models directory every ollama instance shares."""
    with user_errors():
        import asyncio

        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

        from ..engines.pull import pull_stream
        from ..engines.state import InstanceStore

        if not url:
            ours = [i for i in InstanceStore().load() if i.engine == "ollama" and i.process()]
            url = ours[0].url if ours else "http://127.0.0.1:11434"
        console = Console(stderr=True)
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=console, transient=False) as progress:
            tasks: dict[str, TaskID] = {}

            def on_status(status: str, completed: int | None, total: int | None) -> None:
                if total:
                    task = tasks.get(status)
                    if task is None:
                        task = tasks[status] = progress.add_task(status[:40], total=total)
                    progress.update(task, completed=completed or 0)
                else:
                    progress.console.print(status)

            asyncio.run(pull_stream(url, model, on_status))
