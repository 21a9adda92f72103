"""The one error tree of parallama: what the CLI turns into a one-line message and an exit code.

    ParallamaError                 anything meant for a user; any other exception is a bug
    ├── UsageError            (2)  the command line is wrong; raised by the CLI only, never by the library
    ├── ConfigError           (2)  file:line:col or the JSON path, and what is wrong there
    │   └── ConfigErrors      (2)  several at once, one line each
    ├── InputError            (2)  a batch's input, or its output file, is wrong at file:line (or unwritable)
    │   └── InputErrors       (2)  several at once, one line each
    ├── SetupError            (2)  this machine lacks something: an engine, a free port, a model file, an extra
    │   └── NothingFits       (2)  no fleet fits the memory `recommend` was given
    ├── OutputError           (1)  a batch's output file could not be written mid-run (a full disk); names it
    ├── SearchError           (2)  a history search the store will not run (too many words)
    ├── StartError            (1)  an instance did not come up; names its log
    ├── HistoryError          (1)  the run history cannot be opened or written; names the database file
    └── BackendError          (1)  one agent's request failed; names the agent, the URL and the cause
        ├── Unreachable            nothing answers at the server's address
        ├── HTTPStatus             a 4xx/5xx answer (`status_code`)
        │   ├── ModelNotFound      the server lacks the model; the hint is the `ollama pull` to run
        │   └── ServerBusy         503
        ├── StreamBroken           the stream was cut, or ended before its last chunk
        │   └── Malformed          a line that is not the protocol: not JSON, or a field of the wrong type
        ├── AnswerTooLong          the answer ran past the agent's `max_answer_chars`; its request closed there
        └── AgentTimeout           the agent's timeout or the run's deadline ran out

Every error is complete when raised: the agent, URL and hint are given to the constructor, never patched on later,
and raised `from` what caused it. Each `BackendError` class has a `status` (the agent's, in a result) and a `kind`
(`error_kind` in results and JSON). Transport failures (aiohttp's and the OS's) become these errors in one place,
`backends.transport.TransportErrors`, for chats, probes and pulls alike.
URLs in errors carry no `user:password@`, and a server's words quoted in one have the agent's key and URL password
masked (`backends.base.server_words`); results mask the whole fleet's again as they are built.
"""

from __future__ import annotations

import os


class ParallamaError(Exception):
    """Base of every error meant for a user; anything else is a bug."""

    exit_code = 1


class UsageError(ParallamaError):
    """The command line is wrong (exit 2). Raised by the CLI only: the library raises the errors below."""

    exit_code = 2


class SetupError(ParallamaError):
    """This machine lacks what the command needs (an engine, a free port, a model file, an optional library)."""

    exit_code = 2


class NothingFits(SetupError):
    """No fleet fits the memory budget `recommend` was given."""


class OutputError(ParallamaError):
    """A batch's output file could not be written once the batch was under way (a full disk, a quota); names the
    file. What was written before stays, and a resume goes on from it."""

    def __init__(self, message: str, *, file: "os.PathLike[str] | str") -> None:
        self.message = message
        self.file = str(file)
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


class SearchError(ParallamaError):
    """A history search the store will not run, such as one of too many words (exit 2; a 400 on serve's page)."""

    exit_code = 2


class StartError(ParallamaError):
    """An instance did not come up; names its log file."""


class HistoryError(ParallamaError):
    """The history database cannot be opened or written (not a database, a directory, disk full, locked too
    long); names its path. A run goes on without history: the CLI warns, `FleetClient` adds a warning."""

    def __init__(self, message: str, *, file: "os.PathLike[str] | str") -> None:
        self.message = message
        self.file = str(file)
        "The database file."
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"history database {self.file}: {self.message}"


def place(source: str, line: int | None, column: int | None) -> str:
    """`file`, `file:line` or `file:line:col`, as compilers name a place."""
    if line is None:
        return source
    return f"{source}:{line}" if column is None else f"{source}:{line}:{column}"


class ConfigError(ParallamaError):
    """The config file is broken or holds a wrong value; names the file, place and JSON path."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        column: int | None = None,
        json_path: str | None = None,
    ) -> None:
        self.message = message
        self.source = source
        "The config file."
        self.line = line
        self.column = column
        self.json_path = json_path
        "Where in the config's JSON the wrong value is (`worker_agents[1].timeout`)."
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = place(self.source or "config", self.line, self.column)
        if self.json_path:
            where += f": {self.json_path}"
        return f"{where}: {self.message}"


class ConfigErrors(ConfigError):
    """Several config problems found at once; each is shown on its own line."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__(errors[0].message, source=errors[0].source, json_path=errors[0].json_path)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class InputError(ParallamaError):
    """A line of a batch's input, or of the output file it resumes, is wrong; names the file and line."""

    exit_code = 2

    def __init__(self, message: str, *, source: str, line: int | None = None, column: int | None = None) -> None:
        self.message = message
        self.source = source
        self.line = line
        self.column = column
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{place(self.source, self.line, self.column)}: {self.message}"


class InputErrors(InputError):
    """Several input problems found at once; each is shown on its own line."""

    def __init__(self, errors: list[InputError]) -> None:
        self.errors = errors
        first = errors[0]
        super().__init__(first.message, source=first.source, line=first.line, column=first.column)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class BackendError(ParallamaError):
    """A request to one agent's server failed; names the agent, the URL and the cause."""

    status = "error"
    "The agent's status in a result: `error`, or `timeout`."
    kind = "error"
    "Short machine-readable name of the failure (`unreachable`, `model_not_found`, ...), as results report it."

    def __init__(self, cause: str, *, agent: str = "", url: str = "", hint: str | None = None) -> None:
        self.cause = cause
        self.agent = agent
        self.url = url
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.agent} ({self.url}): {self.cause}" if self.agent else f"{self.url}: {self.cause}"
        if self.hint:
            text += f" — {self.hint}"
        return text


class Unreachable(BackendError):
    """Nothing answers at the server's address (connection refused, DNS failure)."""

    kind = "unreachable"


class HTTPStatus(BackendError):
    """The server answered with a 4xx/5xx status."""

    kind = "http_status"

    def __init__(self, cause: str, *, status_code: int, **kwargs) -> None:
        self.status_code = status_code
        super().__init__(cause, **kwargs)


class ModelNotFound(HTTPStatus):
    """The server does not have the model (Ollama's 404)."""

    kind = "model_not_found"


class ServerBusy(HTTPStatus):
    """The server refused the request because it is overloaded (503)."""

    kind = "server_busy"


class StreamBroken(BackendError):
    """The stream ended before its final chunk, or carried a line that is not the protocol."""

    kind = "stream_broken"


class Malformed(StreamBroken):
    """A line of the stream is not the protocol: not JSON, or a field of the wrong type (`message.content: 123`)."""

    kind = "malformed"


class AnswerTooLong(BackendError):
    """The answer (with its thinking) ran past the agent's `max_answer_chars`; the request is closed there."""

    kind = "too_long"


class AgentTimeout(BackendError):
    """The agent's own timeout, or the run's deadline, ran out."""

    status = "timeout"
    kind = "timeout"
