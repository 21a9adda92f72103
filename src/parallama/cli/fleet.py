"""`parallama plan / doctor / recommend`: know before a run whether the fleet fits and runs in parallel."""

from __future__ import annotations

import json
import sys

import click

from .common import Number, check_writable, echo_json, load_fleet, user_errors, write_file

RAM = click.option("--ram", type=Number(min=0, min_open=True), metavar="GB",
                   help="Plan for this much RAM instead of this machine's.")
VRAM = click.option("--vram", type=Number(min=0), metavar="GB",
                    help="Plan for this much VRAM instead of what nvidia-smi reports (0: no GPU).")
CONFIG = click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
                      help="Fleet config. Default: $PARALLAMA_CONFIG, then ./parallama.json.")


@click.command()
@CONFIG
@RAM
@VRAM
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(config_path: str | None, ram: float | None, vram: float | None, as_json: bool) -> None:
    """Which workers share a server (and will wait for each other), and whether the fleet fits in memory."""
    with user_errors():
        import asyncio

        from ..memory import this_machine
        from ..plan import make_plan

        result = asyncio.run(make_plan(load_fleet(config_path), machine=this_machine(ram, vram)))
        if as_json:
            echo_json(result.to_dict())
            return
        click.echo("Parallelism")
        for finding in result.parallel:
            click.echo(f"  {finding}")
        for server in result.servers:
            who = ", ".join(server.workers + ([f"{server.reviewer} (reviewer)"] if server.reviewer else []))
            click.echo(f"    {server.url}  {server.parallel} slot(s): {who}")
        if result.timeouts:
            click.echo("Timeouts")
            for finding in result.timeouts:
                click.echo(f"  {finding}")
        click.echo("Memory")
        for line in result.memory_lines:
            click.echo(f"  {line}")
        click.echo(f"  {result.memory}")


@click.command()
@CONFIG
@RAM
@VRAM
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(config_path: str | None, ram: float | None, vram: float | None, as_json: bool) -> None:
    """Check servers, models, memory and settings; exit 1 when something fails."""
    with user_errors():
        import asyncio

        from ..doctor import diagnose
        from ..memory import this_machine

        diagnosis = asyncio.run(diagnose(load_fleet(config_path), machine=this_machine(ram, vram)))
        if as_json:
            echo_json(diagnosis.to_dict())
        else:
            for check in diagnosis.checks:
                click.echo(check.line())
    sys.exit(0 if diagnosis.ok else 1)


@click.command()
@RAM
@VRAM
@click.option("--workers", type=click.IntRange(min=1), default=3, show_default=True, help="How many workers.")
@click.option("--write", "write_path", type=click.Path(dir_okay=False), help="Write the recommended config here.")
@click.option("--force", is_flag=True, help="With --write: replace the file when it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the recommendation as JSON.")
def recommend(ram: float | None, vram: float | None, workers: int, write_path: str | None, force: bool,
              as_json: bool) -> None:
    """Models and a layout (instances or slots) for this machine's memory, with the reasons."""
    with user_errors():
        from ..memory import this_machine
        from ..recommend import recommend as pick

        if write_path:
            check_writable(write_path, "--write", force=force)  # before any output: a refusal leaves nothing half
        choice = pick(this_machine(ram, vram), workers)
        if as_json:
            echo_json(choice.to_dict())
        else:
            click.echo(f"workers:  {', '.join(m.tag for m in choice.workers)}  ({choice.layout})")
            click.echo(f"reviewer: {choice.reviewer.tag}")
            click.echo("why:")
            for reason in choice.reasons:
                click.echo(f"  - {reason}")
            click.echo("to start:")
            for command in choice.commands():
                click.echo(f"  {command}")
        if write_path:
            write_file(write_path, json.dumps(choice.config(), indent=2) + "\n", "--write", force=force)
            click.echo(f"wrote {write_path}: parallama run \"…\" --config {write_path}", err=True)


@click.command()
@CONFIG
@click.option("--prompt", "prompt_text", help="The prompt to send (default: a short fixed question).")
@click.option("--prompts", "prompts_file", type=click.Path(exists=True, dir_okay=False),
              help="A file with one prompt per line.")
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True, help="Runs per mode and prompt.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write the timelines as a PNG.")
def bench(config_path: str | None, prompt_text: str | None, prompts_file: str | None, repeat: int, as_json: bool,
          plot_path: str | None) -> None:
    """Run the workers one at a time and all at once, and compare (after one warm-up request per model)."""
    with user_errors():
        import asyncio

        from ..bench import bench as run_bench
        from ..errors import UsageError
        from ..report.bench_view import print_bench, progress_for

        if prompt_text and prompts_file:
            raise UsageError("give --prompt or --prompts, not both")
        if plot_path:  # before the benchmark: a missing extra or an unwritable path must not cost its results
            from ..report.timeline import plot_timelines, pyplot

            pyplot()
            check_writable(plot_path, "--plot")
        prompts = _read_prompts(prompts_file) if prompts_file else [
            prompt_text or "Explain in three sentences why the sky is blue."]
        fleet = load_fleet(config_path)
        with progress_for() as on_progress:
            result = asyncio.run(run_bench(fleet, prompts, repeat, on_progress))
        if as_json:
            echo_json(result.to_dict())
        else:
            print_bench(result)
        if plot_path:
            plot_timelines(result, plot_path)
            click.echo(f"wrote {plot_path}", err=True)


MAX_PROMPTS_BYTES = 16 << 20


def _read_prompts(path: str) -> list[str]:
    """One prompt per non-blank line of a UTF-8 file."""
    from ..errors import UsageError

    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_PROMPTS_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"--prompts {path}: cannot read it ({exc.strerror or exc})") from exc
    if len(raw) > MAX_PROMPTS_BYTES:
        raise UsageError(f"--prompts {path}: larger than {MAX_PROMPTS_BYTES >> 20} MiB; is it the right file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise UsageError(f"--prompts {path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save it as "
                         "UTF-8") from exc
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise UsageError(f"{path}: no prompts in it (one per line)")
    return prompts
