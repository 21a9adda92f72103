"""`parallama history`: the runs kept in SQLite — list, show one whole, export as JSON lines."""

from __future__ import annotations

import json
import sys
import time

import click

from .common import echo_json, user_errors


class HistoryGroup(click.Group):
    """`history --search sky blue` searches for both words: what follows `--search`, up to the next option or
    command, is one search (quoting it works too)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(args):
            out.append(args[i])
            if args[i] == "--search":
                words = []
                while i + 1 < len(args) and not args[i + 1].startswith("-") and args[i + 1] not in self.commands:
                    words.append(args[i + 1])
                    i += 1
                if words:
                    out.append(" ".join(words))
            i += 1
        return super().parse_args(ctx, out)


@click.group(cls=HistoryGroup, invoke_without_command=True)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many runs, newest first.")
@click.option("--search", metavar="WORDS", help="Only runs whose prompt holds every one of these words "
                                                "(`--search sky blue`).")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
@click.pass_context
def history(ctx: click.Context, limit: int, search: str | None, as_json: bool) -> None:
    """List past runs (newest first). `history show ID`, `history export`."""
    if ctx.invoked_subcommand is not None:
        return
    with user_errors():
        from ..history import History
        from ..paths import history_db

        if not history_db().exists():
            runs = []
        else:
            with History() as store:
                runs = store.runs(limit, search=search)
        if as_json:
            echo_json(runs)
            return
        if not runs:
            click.echo(f"no run's prompt holds {search!r}" if search else "no runs yet", err=True)
        for run in runs:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run["started_at"]))
            status = "" if run["status"] == "complete" else f"  [{run['status']}]"
            status += f"  ({run['origin']})" if run.get("origin") else ""
            prompt = " ".join(run["prompt"].split())[:60]
            wall = f"{run['wall_s']:.1f} s" if run["wall_s"] is not None else "—"
            click.echo(f"{run['id']}  {when}  {run['workers_ok']}/{run['workers']} workers  {run['strategy']:<10}"
                       f"  {wall:>7}  {prompt}{status}")


@history.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
def show(run_id: str, as_json: bool) -> None:
    """Show one run whole: every agent's settings, answer, timings, and the final answer."""
    with user_errors():
        from ..errors import UsageError
        from ..history import History
        from ..review import summary

        with History() as store:
            run = store.run(run_id)
        if run is None:
            raise UsageError(f"no run {run_id!r} (or the prefix matches several): see `parallama history`")
        if as_json:
            echo_json(run)
            return
        click.echo(f"run {run['id']}  {run['status']}  strategy {run['strategy']}  "
                   f"{run['wall_s'] if run['wall_s'] is not None else '—'} s"
                   + (f"  (via {run['origin']})" if run.get("origin") else ""))
        details = run["details"]
        if details.get("cut"):
            click.echo(f"partial: {', '.join(details['cut'])} cut (the answer was made without them)")
        for turn in run["context"]:
            click.echo(f"{turn['role']}: {turn['content']}")
        click.echo(f"prompt: {run['prompt']}\n")
        for agent in run["agents"]:
            head = f"[{agent['stage']}] {agent['name']} ({agent['model']} @ {agent['api_url']}) — {agent['status']}"
            timing = f"queued {agent['queued_s']} s, elapsed {agent['elapsed_s']} s, {agent['completion_tokens']} tok"
            click.echo(f"{head}; {timing}")
            if agent["error"]:
                click.echo(f"  error: {agent['error']}")
            if agent["content"]:
                click.echo("  " + agent["content"].strip().replace("\n", "\n  "))
            click.echo("")
        for warning in run["warnings"]:
            click.echo(f"warning: {warning}")
        for line in summary(run["strategy"], details):
            click.echo(line)
        if details.get("sampling"):
            from ..sampling import sampling_line
            click.echo(sampling_line(details["sampling"]))
        click.echo(f"final ({run['final_source']}):\n{run['final'] if run['final'] is not None else '—'}")


@history.command()
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
def export(fmt: str) -> None:  # noqa: ARG001 - jsonl is the only format yet; the option keeps the command's shape
    """Every run, oldest first, one JSON object per line on stdout."""
    with user_errors():
        from ..history import History
        from ..paths import history_db

        if not history_db().exists():
            return
        with History() as store:
            for run in store.export():
                sys.stdout.write(json.dumps(run, ensure_ascii=False) + "\n")
