"""What every command shares: the error handler, where the config is found, and JSON on stdout."""

from __future__ import annotations

import json
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterator

import click

if TYPE_CHECKING:
    from ..fleet import Fleet

CONFIG_ENV = "PARALLAMA_CONFIG"
DEFAULT_CONFIG = "parallama.json"


class Number(click.FloatRange):
    """A number in a range that is also finite: `nan` passes every range check (each comparison is false), and
    `inf` RAM or seconds means nothing."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class ListenAddress(click.ParamType):
    """`PORT` or `HOST:PORT` (an IPv6 host in brackets, `[::]:9464`), as (host, port); the host is 127.0.0.1 when
    left out."""

    name = "[host:]port"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        host, colon, port = text.rpartition(":")
        host = host.strip("[]") if colon else "127.0.0.1"
        if not port.isdigit() or not 0 <= int(port) <= 65535 or (colon and not host):
            self.fail(f"{value!r} is not a port (0 to 65535, 0: any free one) or HOST:PORT.", param, ctx)
        return host, int(port)


METRICS_PORT_HELP = ("Serve Prometheus metrics at http://127.0.0.1:PORT/metrics while it runs (0: any free port, "
                     "printed on stderr); HOST:PORT listens elsewhere (with a warning beyond loopback).")


def find_config(given: str | None) -> Path | None:
    """--config, then $PARALLAMA_CONFIG, then ./parallama.json; None means: use the embedded demo fleet."""
    if given:
        return Path(given)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    if Path(DEFAULT_CONFIG).is_file():
        return Path(DEFAULT_CONFIG)
    return None


def load_fleet(config_path: str | None) -> "Fleet":
    """The fleet a command looks at; without any config that is a usage error (only `run` has a default)."""
    from ..config import load_config
    from ..errors import UsageError

    path = find_config(config_path)
    if path is None:
        raise UsageError("no config to look at: pass --config FILE (or write one with `parallama recommend --write`)")
    return load_config(path)


def check_writable(path: str, option: str, *, force: bool = True) -> None:
    """Fail now (exit 2), before anything is started or run, when the file `option` names cannot be written: not
    a regular file (a FIFO would hang the write for ever), already there and not `force`d, or a folder that takes
    no new file."""
    import os
    import stat
    import tempfile

    from ..errors import UsageError

    target = Path(path)
    try:
        mode: int | None = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write there ({exc.strerror or exc})") from exc
    if mode is not None and not stat.S_ISREG(mode):
        raise UsageError(f"{option} {path}: not a regular file (a pipe, device or folder); name a file")
    if (mode is not None or target.is_symlink()) and not force:
        raise UsageError(f"{option} {path}: the file exists; pass --force to replace it")
    try:
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        os.close(fd)
        os.unlink(temp)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write there ({exc.strerror or exc})") from exc


def write_file(path: str, text: str, option: str, *, force: bool = False) -> None:
    """Write a file the user asked for, whole or not at all (a temporary file renamed into place): a file already
    there is replaced only when `force`d; a refusal is a one-line error (exit 2), not a traceback."""
    import os
    import tempfile

    from ..errors import UsageError

    check_writable(path, option, force=force)
    target = Path(path)
    temp = None
    try:
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, target)  # a symlink there is replaced, never the file it points to
        temp = None
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write there ({exc.strerror or exc})") from exc
    finally:
        if temp is not None:
            Path(temp).unlink(missing_ok=True)


def echo_json(data: Any) -> None:
    """Data for programs: indented JSON on stdout, non-ASCII kept as is."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn parallama's own errors into `error: ...` lines and exit codes; Ctrl-C into exit 130."""
    from ..errors import ConfigErrors, InputErrors, ParallamaError

    try:
        yield
    except ParallamaError as exc:
        if isinstance(exc, (ConfigErrors, InputErrors)):
            text = "\n".join(f"error: {e}" for e in exc.errors)
        else:
            text = f"error: {exc}"
        click.echo(text, err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


async def until_stopped(main: Callable[[], Awaitable[object]], beside: Callable[[], Awaitable[None]]) -> bool:
    """Run `main` with `beside` (a view's refresh) going on; Ctrl-C or SIGTERM cancel it cleanly.

    Whether a signal stopped it. Cancelled from outside (not by a signal), the cancellation goes on up."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main())
    stopped: list[int] = []

    def stop(signum: int) -> None:
        stopped.append(signum)
        task.cancel()

    handled = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop, signum)
            handled.append(signum)
        except (NotImplementedError, RuntimeError):  # Windows, or not the main thread: Ctrl-C raises instead
            pass
    watcher = asyncio.ensure_future(beside())
    try:
        await task
    except asyncio.CancelledError:
        if not stopped:
            raise  # cancelled from outside, not by a signal
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        for signum in handled:
            loop.remove_signal_handler(signum)
    return bool(stopped)
