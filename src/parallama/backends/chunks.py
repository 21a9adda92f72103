"""What model servers stream, typed at the edge: the fields of an Ollama NDJSON line and of an OpenAI-compatible SSE
`data:` line that parallama reads, each with the one type it may have. Anything else a chunk carries is ignored.

The types are strict: `"12"` is not a token count, `123` is not text, `"hello"` is not a message. A chunk that breaks
them fails its own agent as a `Malformed` stream error naming the field; nothing deeper ever sees a wrong type.
They are TypedDicts validated by pydantic from the raw line (its Rust JSON parser, bounded in depth): measured on
the streaming benchmark, that is cheaper than `json.loads` and reading the dict by hand, and builds no model
object per chunk.
"""

from __future__ import annotations

import gc
import json
from typing import Any, List, Optional

from pydantic import ConfigDict, Field, TypeAdapter
from typing_extensions import Annotated, Required, TypedDict

_STRICT = ConfigDict(strict=True)
Count = Annotated[int, Field(ge=0)]
"A number of tokens or nanoseconds: a whole number, never below 0."


class OllamaMessage(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]

    content: Optional[str]
    "A piece of the answer."
    thinking: Optional[str]
    "A piece of what a reasoning model thought (when `think` is on)."
    tool_calls: Any
    "Whole tool calls; their shape is checked where they are read (`tools.ToolCallParts`)."


class TopLogprob(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]

    token: Required[str]
    logprob: Required[float]


class TokenLogprobs(TypedDict, total=False):
    """One generated token's logprob, as both protocols send it (they also send `bytes`, and llama.cpp an `id`)."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]

    token: Required[str]
    logprob: Required[float]
    "Natural log of the token's probability."
    top_logprobs: Optional[List[TopLogprob]]
    "The likeliest tokens at this place (when `top_logprobs` was asked)."


class OllamaChunk(TypedDict, total=False):
    """One line of Ollama's `/api/chat` stream; the last says `done: true` and carries the metrics."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]

    message: Optional[OllamaMessage]
    done: bool
    error: Any
    "The server's words when generation failed mid-stream (a string)."
    prompt_eval_count: Optional[Count]
    "Tokens of the prompt."
    eval_count: Optional[Count]
    "Tokens generated, thinking included."
    eval_duration: Optional[Count]
    "Time spent generating, in nanoseconds."
    logprobs: Optional[List[TokenLogprobs]]
    "The tokens of this chunk with their logprobs (Ollama ≥ 0.12.11, when `logprobs: true` was asked)."


class OpenAIDelta(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]

    content: Optional[str]
    "A piece of the answer."
    reasoning_content: Optional[str]
    "A piece of the thinking (vLLM, llama.cpp, DeepSeek)."
    reasoning: Optional[str]
    "A piece of the thinking (newer vLLM, OpenRouter)."
    tool_calls: Any
    "Fragments of tool calls; their shape is checked where they are read (`tools.ToolCallParts`)."


class OpenAILogprobs(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]

    content: Optional[List[TokenLogprobs]]
    "The tokens of this chunk's content with their logprobs."


class OpenAIChoice(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]

    delta: Optional[OpenAIDelta]
    logprobs: Optional[OpenAILogprobs]
    "Sent when the request asked `logprobs: true`."


class OpenAITokenDetails(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]

    reasoning_tokens: Optional[Count]
    "Tokens of thinking, counted in `completion_tokens` too."


class OpenAIUsage(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]

    prompt_tokens: Optional[Count]
    completion_tokens: Optional[Count]
    "Tokens generated, thinking included."
    completion_tokens_details: Optional[OpenAITokenDetails]


class OpenAIChunk(TypedDict, total=False):
    """One `data:` line of an OpenAI-compatible `/v1/chat/completions` stream; with `stream_options.include_usage`
    the last before `[DONE]` carries `usage` (and no choices)."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]

    choices: Optional[List[OpenAIChoice]]
    usage: Optional[OpenAIUsage]
    error: Any
    "The server's words when generation failed mid-stream (an object with `message`)."


def read_json(text: str | bytes) -> Any:
    """JSON that a model or a server wrote, read with a bound: ValueError for anything that is not JSON, nesting
    too deep to read included (`json` stops at the interpreter's recursion limit; past it, a caller that expects
    only ValueError would crash on a RecursionError)."""
    try:
        return loads_untrusted(text)
    except RecursionError as exc:
        raise ValueError("nested too deep to read") from exc


def loads_untrusted(text: str | bytes) -> Any:
    """`json.loads` with the cyclic collector paused. Deep nesting takes the parser to the interpreter's recursion
    limit; a collection started there runs other objects' finalizers with no stack left, and their own errors or
    warnings then fail to be reported (seen under load as RecursionError in the unraisable hook)."""
    paused = gc.isenabled()
    gc.disable()
    try:
        return json.loads(text)
    finally:
        if paused:
            gc.enable()


OLLAMA_CHUNK: TypeAdapter[OllamaChunk] = TypeAdapter(OllamaChunk)
OPENAI_CHUNK: TypeAdapter[OpenAIChunk] = TypeAdapter(OpenAIChunk)
