"""The one error tree of parallama: what the CLI turns into a one-line message and an exit code."""

from __future__ import annotations


class ParallamaError(Exception):
    """Base of every error meant for a user; anything else is a bug."""

    exit_code = 1


class UsageError(ParallamaError):
    """The command line or its environment is wrong (exit 2)."""

    exit_code = 2


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
        path: str | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.line = line
        self.column = column
        self.path = path
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = self.source or "config"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.path:
            where += f": {self.path}"
        return f"{where}: {self.message}"


class ConfigErrors(ConfigError):
    """Several config problems found at once; each is shown on its own line."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__(errors[0].message, source=errors[0].source, path=errors[0].path)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class BackendError(ParallamaError):
    """A request to one agent's server failed; names the agent, the URL and the cause."""

    status = "error"

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

    @property
    def kind(self) -> str:
        """Short machine-readable name of the failure (`unreachable`, `model_not_found`, ...)."""
        return _KIND_NAMES.get(type(self), "error")


class Unreachable(BackendError):
    """Nothing answers at the server's address (connection refused, DNS failure)."""


class HTTPStatus(BackendError):
    """The server answered with a 4xx/5xx status."""

    def __init__(self, cause: str, *, status_code: int, **kwargs) -> None:
        self.status_code = status_code
        super().__init__(cause, **kwargs)


class ModelNotFound(HTTPStatus):
    """The server does not have the model (Ollama's 404)."""


class ServerBusy(HTTPStatus):
    """The server refused the request because it is overloaded (503)."""


class StreamBroken(BackendError):
    """The stream ended before its final chunk, or carried a line that is not the protocol."""


class AgentTimeout(BackendError):
    """The agent's own timeout, or the run's deadline, ran out."""

    status = "timeout"


_KIND_NAMES = {
    BackendError: "error",
    Unreachable: "unreachable",
    HTTPStatus: "http_status",
    ModelNotFound: "model_not_found",
    ServerBusy: "server_busy",
    StreamBroken: "stream_broken",
    AgentTimeout: "timeout",
}
