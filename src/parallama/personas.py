"""What makes workers of one model differ: a persona each (a system prompt, a temperature, a seed) and a token cap.

Copies of one model with one prompt, no temperature and no seed answer alike, word for word: the ensemble then
costs N times as much and adds nothing. Different system prompts push the answers apart in approach, different
temperatures in wording, and a seed per worker keeps each one repeatable on the same build. The demo fleet's
personas (`embedded`) are tuned for its tiny model; these are for any instruction-tuned model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Persona:
    """One worker's character: its name, its system prompt, its sampling temperature and its seed."""

    name: str
    system: str
    temperature: float
    seed: int


WORKER_PERSONAS = (
    Persona("careful", "You are a careful expert. Check your reasoning, then give a short, direct answer.", 0.3, 2),
    Persona("plain", "You explain things simply and clearly, without jargon. Keep it short.", 0.5, 8),
    Persona("example", "You are a practical assistant. Answer briefly and give one concrete example.", 0.7, 6),
    Persona("sceptic", "You are a sceptical reviewer of common answers. Say what is actually true, briefly.", 0.4, 5),
)
WORKER_MAX_TOKENS = 512
"The token cap written for each worker (`num_predict`): a worker that rambles holds its slot and the review up."
REVIEWER_MAX_TOKENS = 1024


def persona_for(index: int) -> Persona:
    """The `index`-th worker's persona; past the list, the personas again with other seeds."""
    base = WORKER_PERSONAS[index % len(WORKER_PERSONAS)]
    lap = index // len(WORKER_PERSONAS)
    return base if not lap else Persona(f"{base.name} {lap + 1}", base.system, base.temperature, base.seed + 10 * lap)


def persona_options(persona: Persona, max_tokens: int, *, seeded: bool = True) -> dict[str, Any]:
    """Ollama options for a persona (mapped to OpenAI-compatible fields where a server speaks that)."""
    options: dict[str, Any] = {"temperature": persona.temperature, "num_predict": max_tokens}
    if seeded:
        options["seed"] = persona.seed
    return options


SMALL_MODEL_REVIEW = {"system": "Use these notes if they help:\n\n{answer_list}\n\nAnswer in two or three sentences.",
                      "prompt": "{task}"}
"""The review a tiny model can follow (the demo's SmolLM2): the answers as numbered notes with no authors, the task
as the question. With the default template it copies the `### Answer from Worker A` headers into its answer."""
