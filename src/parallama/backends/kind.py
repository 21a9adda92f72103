"""What every backend kind is: one class per wire protocol carrying every fact of it (the registry of them is
`parallama.backends`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Mapping, Protocol, Sequence

from .base import DeltaSink

if TYPE_CHECKING:
    import aiohttp

    from ..fleet import Agent
    from .base import Completion
    from .messages import Message
    from .probing import ServerProbe
    from .tools import Tool

class Backend(Protocol):
    """One wire protocol: how to reach it, what to send, how to read its answer, and what to tell its users."""

    name: str
    "What `Agent.protocol`, `--json` and history call it (`ollama`, `openai`)."
    label: str
    "Its name for people (`Ollama`, `OpenAI-compatible`)."
    api_path: str
    "The path an api_url of this protocol ends in, as the config's examples write it (`/api/chat`, `/v1`)."
    default_context: int
    "Tokens of context a server gives a request when the agent's options name none."

    def endpoint_for(self, base: str, path: str) -> str | None:
        """The chat endpoint for an api_url of `base` (`scheme://host:port`) and `path` (no trailing `/`), or None
        when that path is not this protocol's."""

    def probe_base(self, endpoint: str) -> str:
        """The URL the server's own endpoints hang from, given the chat endpoint."""

    def unsent_options(self, options: Mapping[str, Any]) -> list[str]:
        """The agent's options (Ollama's names) this protocol has no field for: not sent."""

    def structured_output(self, schema: Mapping[str, Any], name: str) -> dict[str, Any]:
        """Request fields asking for a reply of JSON `schema` (bound by the server's grammar where it has one)."""

    def request_body(self, agent: "Agent", messages: "list[Message]", tools: "Sequence[Tool]" = (),
                     logprobs: int | None = None) -> dict[str, Any]:
        """The chat request. `logprobs`: None, none asked; 0, each token's own; N, also its N likeliest rivals."""

    def chat(
        self, session: "aiohttp.ClientSession", agent: "Agent", messages: "list[Message]", on_delta: DeltaSink,
        on_thinking: DeltaSink, *, tools: "Sequence[Tool]" = (), logprobs: int | None = None,
    ) -> "Awaitable[Completion]":
        """Stream one chat; the Completion carries the token logprobs when asked and the server sent them."""

    def probe(self, session: "aiohttp.ClientSession", base: str, headers: Mapping[str, str],
              probe: "ServerProbe", models: list[str]) -> Awaitable[None]:
        """Fill `probe` from the server at `base` (version, latency, models; details for `models` where it has
        them). Raises BackendError or ValueError; `parallama.probe` makes those data."""

    def loaded_models(self, session: "aiohttp.ClientSession", agent: "Agent",
                      timeout_s: float = 2.0) -> Awaitable[list[str] | None]:
        """The models the agent's server holds in memory now (a pool prefers a warm replica); None: unknown."""

    def start_command(self, endpoint: str) -> str | None:
        """The command that starts the server when nothing answers at `endpoint` (None: nothing to say)."""

    def pull_command(self, endpoint: str, model: str) -> str | None:
        """The command that gets `model` onto the server at `endpoint` (None: nothing to say)."""

    def missing_model_fix(self, server: str, model: str, served: list[str]) -> str:
        """What to do when `model` is not among those the server has (`served`)."""

    def more_slots_fix(self, server: str, workers: int) -> str:
        """How `workers` agents sharing `server` can run at once."""

    def several_models_note(self, models: int) -> str | None:
        """What a server with `models` different models in use at once needs (None: nothing)."""
