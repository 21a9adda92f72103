"""The `parallama` command line: each module parses one group of commands' arguments and calls the library.

`run` (run.py); `batch` (batch.py); `serve` (serve.py); `plan`, `doctor`, `recommend`, `bench` (fleet.py); `up`,
`status`, `down`, `pull`, `compose` (servers.py); `history` (history.py). `common.py` holds the error handler and
config lookup they share. Heavy libraries are imported inside the commands, so `parallama --help` stays instant.
"""

from __future__ import annotations

import click

from . import batch, fleet, history, run, serve, servers


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="parallama")
def cli() -> None:
    """Run several LLM agents in parallel on local model servers; a reviewer merges their answers."""


for _command in (run.run, batch.batch, serve.serve, fleet.plan, fleet.doctor, fleet.recommend, fleet.bench,
                 servers.up, servers.status, servers.down, servers.pull, servers.compose, history.history):
    cli.add_command(_command)


def main() -> None:
    cli()


__all__ = ["cli", "main"]
