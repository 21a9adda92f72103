"""The requests `serve` accepts, as pydantic models: Ollama's `/api/chat`, `/api/generate`, `/api/show`, OpenAI's
`/v1/chat/completions`, and the web page's run. Fields a run cannot honour are accepted and listed (`ignored`), never an error, so clients
that always send them keep working. Replies are built as plain dicts where they are made: one per streamed chunk.

Sampling options (`temperature`, `top_p`, `max_tokens`, Ollama `options`, ...) are the fleet's: each agent keeps
the options its config gives it. Only a `seed` is used: it seeds the run (the council's shuffles)."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Union

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from ..backends.chunks import loads_untrusted
from ..backends.tools import ToolCall, new_call_id
from ..review import check_strategy
from .connections import BODY_TIMEOUT
from .errors import ApiError

if TYPE_CHECKING:
    from ..backends import Message, Tool

# Request fields that change what a single model would do, but not what the fleet does: reported, not used.
OPENAI_IGNORED = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "presence_penalty",
                  "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "parallel_tool_calls",
                  "functions", "function_call", "response_format", "reasoning_effort")
OLLAMA_IGNORED = ("format", "raw", "template", "suffix", "images", "context")
"""`tools` and `tool_choice` are not among them: offered tools go to the step that writes the reply (see
`Service.follower`)."""

MAX_BODY_BYTES = 16 * 2**20
"A request body's bound: a conversation of a million tokens is about 4 MB; aiohttp refuses more with a 413."
OFF_LOOP_BYTES = 256 * 2**10
"A body larger than this is parsed in a thread, so the event loop keeps answering other clients meanwhile."
_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")


def _a_name(value: str) -> str:
    """Role and option names are words (they may be named back in a header): no spaces, no line breaks."""
    if not _NAME.fullmatch(value):
        raise ValueError(f"{json.dumps(value[:70])} is not a name (letters, digits, _ . : -; at most 64)")
    return value


Name = Annotated[str, AfterValidator(_a_name)]
Options = Optional[dict[Name, Any]]


class ToolFunction(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: Name
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    "A JSON schema, passed on as it is."


class ToolDefinition(BaseModel):
    """A tool a client offers, as both APIs write it; passed on to the agent that answers."""

    model_config = ConfigDict(extra="allow")

    type: Literal["function"] = "function"
    function: ToolFunction


class OllamaCalled(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: Name
    arguments: Union[dict[str, Any], str] = Field(default_factory=dict)


class OllamaToolCall(BaseModel):
    """An earlier tool call in the conversation, as Ollama writes it: no id, arguments as an object."""

    model_config = ConfigDict(extra="allow")

    function: OllamaCalled
    id: Optional[str] = None


class OllamaMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Name
    content: Optional[str] = ""
    "Text; Ollama messages carry one string."
    images: Optional[list[Any]] = None
    "Not passed on: the workers get text."
    tool_calls: Optional[list[OllamaToolCall]] = None
    "An assistant's calls, earlier in the conversation."
    tool_name: Optional[Name] = None
    "A `tool` message: which tool's result it is."


class OllamaChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[OllamaMessage] = Field(default_factory=list)
    "Empty: the model is only loaded (answered at once with `done_reason: load`, as Ollama does)."
    stream: bool = True
    "Ollama streams unless told not to."
    think: Union[bool, str, None] = None
    "`false` leaves the progress out of this answer (no `thinking`)."
    options: Options = None
    "Only `seed` is used; the agents keep their own options."
    tools: Optional[list[ToolDefinition]] = None
    "Answered by the tools agent (or the agent a `parallama/<agent>` name asks for)."


class OllamaGenerateRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    prompt: Optional[str] = ""
    "Empty: the model is only loaded (`done_reason: load`)."
    system: Optional[str] = None
    stream: bool = True
    think: Union[bool, str, None] = None
    options: Options = None


class OllamaShowRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: Optional[str] = None
    name: Optional[str] = None
    "Older clients send `name`."


class OpenAIContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    "`text` parts are kept; others (`image_url`, `input_audio`, …) are named as ignored."
    text: Optional[str] = None


class OpenAICalled(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: Name
    arguments: str = ""
    "JSON text."


class OpenAIToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=200)
    type: Literal["function"] = "function"
    function: OpenAICalled


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Name
    content: Union[str, list[OpenAIContentPart], None] = None
    "A string, or parts of which the `text` ones are kept."
    tool_calls: Optional[list[OpenAIToolCall]] = None
    "An assistant's calls, earlier in the conversation."
    tool_call_id: Optional[str] = Field(default=None, max_length=200)
    "A `tool` message: the call whose result it is."


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class OpenAIChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[OpenAIMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    n: Optional[int] = Field(default=None, ge=1, le=1)
    "One answer per request: the fleet writes one."
    seed: Optional[int] = None
    tools: Optional[list[ToolDefinition]] = None
    "Answered by the tools agent (or the agent a `parallama/<agent>` name asks for)."


class PageTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class PageRunRequest(BaseModel):
    """What the web page sends to start a run."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    strategy: Optional[Annotated[str, AfterValidator(check_strategy)]] = None
    "None: the config's."
    context: list[PageTurn] = Field(default_factory=list)
    "The conversation so far (a follow-up question continues it), oldest first."


async def parse(request: web.Request, model: type[BaseModel]) -> Any:
    """The request body as `model`, or a 400 ApiError saying what is wrong and where. A large body is parsed in a
    thread (the event loop goes on serving); aiohttp has refused one over MAX_BODY_BYTES with a 413 already."""
    raw = await read_body(request)
    if len(raw) > OFF_LOOP_BYTES:
        return await asyncio.to_thread(_parse, raw, model)
    return _parse(raw, model)


async def read_body(request: web.Request) -> bytes:
    """The whole body: at most MAX_BODY_BYTES (413), and never `body_timeout_s` without a byte (408)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=request.content_length)
    timeout = request.app[BODY_TIMEOUT]
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = await asyncio.wait_for(request.content.readany(), timeout)
        except asyncio.TimeoutError as exc:
            raise ApiError(408, f"the request body stopped coming: nothing for {timeout:g} s") from exc
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=size)
        chunks.append(chunk)


def _parse(raw: bytes, model: type[BaseModel]) -> Any:
    try:
        data = loads_untrusted(raw)
    except ValueError as exc:
        raise ApiError(400, f"the body is not JSON: {exc}") from exc
    except RecursionError as exc:  # the parser's own bound, near 1,000 levels
        raise ApiError(400, "the body is nested too deep to read (a chat request needs a few levels)") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # A union (OpenAI's content: a string or parts) reports each member: the deepest error is the telling one.
        first = max(exc.errors(), key=lambda err: len(err["loc"]))
        where = ".".join(str(part) for part in first["loc"] if not _union_tag(part)) or "body"
        message = str(first["ctx"]["error"]) if first["type"] == "value_error" else first["msg"]
        raise ApiError(400, f"{where}: {message}", param=where) from exc
    except RecursionError as exc:
        raise ApiError(400, "the body is nested too deep to read (a chat request needs a few levels)") from exc


def _union_tag(part: object) -> bool:
    """pydantic names the member of a union in an error's place (`str`, `list[OpenAIContentPart]`)."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool", "none") or "[" in part
                                      or part[:1].isupper())


def openai_text(content: Union[str, list[OpenAIContentPart], None]) -> tuple[str, bool]:
    """(the text of an OpenAI message's content, whether it had parts that are not text, such as images)."""
    if content is None or isinstance(content, str):
        return content or "", False
    texts = [part.text or "" for part in content if part.type == "text"]
    return "\n".join(texts), len(texts) < len(content)


def ignored_fields(body: BaseModel, names: tuple[str, ...]) -> list[str]:
    """The request fields in `names` the client set (they are not used: the fleet's config rules)."""
    extra = body.model_extra or {}
    return [name for name in names if extra.get(name) is not None]


def seed_of(options: Optional[dict[str, Any]]) -> int | None:
    seed = (options or {}).get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


ProgressMode = Literal["thinking", "think-tags", "none"]


# ---------------------------------------------------------------- each API's body as one intent

@dataclass(frozen=True)
class Intent:
    """What one chat request asks, whichever API it came by: the conversation as an agent takes it (OpenAI's shape,
    tool calls and results kept), the tools it offers, and how to answer. `Service.follower` picks who answers."""

    model: str
    "The name as the client wrote it (echoed back)."
    messages: "tuple[Message, ...]"
    tools: "tuple[Tool, ...]" = ()
    tool_choice: object = None
    "OpenAI's `tool_choice` (`required` or a named function demands a call); None when not sent."
    stream: bool = True
    think: bool = True
    "False: the request asked for no thinking (Ollama's `think: false`): no progress, no agent thinking."
    seed: int | None = None
    ignored: tuple[str, ...] = ()
    "The request's settings the fleet does not use: named in a header and, once, in the progress."

    @property
    def empty(self) -> bool:
        """Nothing to answer: the model is only loaded (`ollama run` sends one before the chat)."""
        return not self.messages

    @property
    def demands_a_tool(self) -> bool:
        choice = self.tool_choice
        return choice == "required" or (isinstance(choice, dict) and choice.get("type") == "function")


def openai_intent(body: OpenAIChatRequest) -> Intent:
    messages: list[Message] = []
    not_text = False
    for m in body.messages:
        text, other = openai_text(m.content)
        not_text = not_text or other
        message: Message = {"role": m.role, "content": text}
        if m.tool_calls:
            message["tool_calls"] = [ToolCall(c.id, c.function.name, c.function.arguments).openai()
                                     for c in m.tool_calls]
        if m.tool_call_id:
            message["tool_call_id"] = m.tool_call_id
        name = (m.model_extra or {}).get("name")
        if m.role == "tool" and isinstance(name, str):
            message["name"] = name
        messages.append(message)
    ignored = ignored_fields(body, OPENAI_IGNORED) + (["content parts that are not text"] if not_text else [])
    return Intent(body.model, tuple(messages), _tools(body.tools), (body.model_extra or {}).get("tool_choice"),
                  body.stream, True, body.seed, tuple(ignored))


def ollama_chat_intent(body: OllamaChatRequest) -> Intent:
    """Ollama's messages as one agent takes them (OpenAI's shape, see `backends.tools`): each earlier call gets an
    id (Ollama's have none), and a tool's result answers the first call of its tool not yet answered."""
    messages: list[Message] = []
    waiting: list[tuple[str, str]] = []  # (id, tool) of calls not yet answered
    for m in body.messages:
        message: Message = {"role": m.role, "content": m.content or ""}
        if m.tool_calls:
            calls = [ToolCall(c.id or new_call_id(), c.function.name, c.function.arguments
                              if isinstance(c.function.arguments, str) else json.dumps(c.function.arguments))
                     for c in m.tool_calls]
            message["tool_calls"] = [call.openai() for call in calls]
            waiting = [(call.id, call.name) for call in calls]
        elif m.role == "tool":
            answered = next((w for w in waiting if w[1] == m.tool_name), waiting[0] if waiting else None)
            if answered is not None:
                waiting.remove(answered)
            message["tool_call_id"] = answered[0] if answered else new_call_id()
            name = m.tool_name or (answered[1] if answered else None)
            if name:
                message["name"] = name
        messages.append(message)
    ignored = (ignored_fields(body, OLLAMA_IGNORED) + _ignored_options(body.options)
               + (["images"] if any(m.images for m in body.messages) else []))
    return Intent(body.model, tuple(messages), _tools(body.tools), None, body.stream, body.think is not False,
                  seed_of(body.options), tuple(ignored))


def ollama_generate_intent(body: OllamaGenerateRequest) -> Intent:
    turns = ([("system", body.system)] if body.system else []) + [("user", body.prompt or "")]
    messages: tuple[Message, ...] = tuple({"role": role, "content": text} for role, text in turns) \
        if (body.prompt or "").strip() else ()
    ignored = ignored_fields(body, OLLAMA_IGNORED) + _ignored_options(body.options)
    return Intent(body.model, messages, (), None, body.stream, body.think is not False, seed_of(body.options),
                  tuple(ignored))


def _tools(tools: Optional[list[ToolDefinition]]) -> "tuple[Tool, ...]":
    return tuple(t.model_dump(exclude_none=True) for t in tools or ())


def _ignored_options(options: Optional[dict[str, Any]]) -> list[str]:
    return [f"options.{key}" for key in (options or {}) if key != "seed"]
