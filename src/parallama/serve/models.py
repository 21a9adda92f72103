"""The fleet as models a chat client can pick: `parallama:latest` (the config's strategy) and one name per review
strategy, described the way Ollama's `/api/tags`, `/api/show`, `/api/ps` and OpenAI's `/v1/models` describe a model."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..strategies import STRATEGIES

if TYPE_CHECKING:
    from ..fleet import Fleet

FAMILY = "parallama"
LATEST = "latest"
TEMPLATE = "{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}"
"What `/api/show` calls the prompt template: no `.Suffix`, so editors do not take the fleet for a fill-in-the-middle model."


def iso(moment: datetime) -> str:
    """RFC 3339 with the local offset, as Ollama writes times."""
    return moment.astimezone().isoformat()


class Catalogue:
    """The names the fleet answers to, and what each API says about them."""

    def __init__(self, fleet: "Fleet", *, modified_at: datetime | None = None) -> None:
        self.fleet = fleet
        self.modified_at = modified_at or datetime.now(timezone.utc)
        tags = [LATEST, *STRATEGIES] if fleet.reviewers else [LATEST]
        self._strategies = {tag: (fleet.strategy if tag == LATEST else tag) for tag in tags}
        self.names = [f"{FAMILY}:{tag}" for tag in tags]
        "Every name, `parallama:latest` first."
        described = json.dumps({"workers": [(a.name, a.model, a.api_url) for a in fleet.workers],
                                "reviewers": [(a.name, a.model, a.api_url) for a in fleet.reviewers],
                                "rounds": fleet.rounds}, sort_keys=True)
        self._digest = {name: hashlib.sha256(f"{described}\n{name}".encode()).hexdigest() for name in self.names}

    def strategy_for(self, name: str) -> str | None:
        """The review strategy a model name asks for; None when the name is not one of the fleet's. `parallama`,
        `parallama:latest`, `parallama:judge` and `parallama:judge:latest` are all accepted."""
        family, _, tag = name.strip().lower().partition(":")
        if family != FAMILY:
            return None
        tag = tag or LATEST
        if tag.endswith(":" + LATEST):
            tag = tag[: -len(LATEST) - 1]
        return self._strategies.get(tag)

    def canonical(self, name: str) -> str:
        """The listed name a requested name stands for (`parallama` → `parallama:latest`)."""
        family, _, tag = name.strip().lower().partition(":")
        tag = (tag or LATEST).removesuffix(":" + LATEST) or LATEST
        return f"{family}:{tag}"

    def unknown_model_message(self, name: str) -> str:
        return f"model {name!r} not found: this server has {', '.join(self.names)}"

    # ---------------------------------------------------------------- Ollama

    def details(self) -> dict[str, Any]:
        families = list(dict.fromkeys(a.model for a in self.fleet.agents))
        return {"parent_model": "", "format": FAMILY, "family": FAMILY, "families": families,
                "parameter_size": "", "quantization_level": ""}

    def tag_entry(self, name: str) -> dict[str, Any]:
        """One model of `/api/tags`: both `name` and `model`, as Ollama writes them."""
        return {"name": name, "model": name, "modified_at": iso(self.modified_at), "size": 0,
                "digest": self._digest[name], "details": self.details()}

    def show(self, name: str) -> dict[str, Any]:
        """`/api/show`: the workers and reviewers described in the Modelfile, what the fleet's context allows."""
        canonical = self.canonical(name)
        strategy = self.strategy_for(name)
        lines = [f"# parallama fleet served as {canonical}: {len(self.fleet.workers)} worker(s) answer in parallel"
                 + (f", then the answers are reviewed ({strategy})" if self.fleet.reviewers else "")]
        lines += [f"# worker {a.name}: {a.model}" for a in self.fleet.workers]
        lines += [f"# reviewer {a.name}: {a.model}" for a in self.fleet.reviewers]
        context = self.context_length()
        model_info: dict[str, Any] = {"general.architecture": FAMILY}
        parameters = ""
        if context:
            model_info[f"{FAMILY}.context_length"] = context
            parameters = f"num_ctx {context}"
        return {"license": "", "modelfile": "\n".join(lines) + "\n", "parameters": parameters, "template": TEMPLATE,
                "details": self.details(), "model_info": model_info, "capabilities": ["completion"],
                "modified_at": iso(self.modified_at)}

    def context_length(self) -> int | None:
        """The smallest `num_ctx` the agents are configured with, when every one of them sets it."""
        sizes = [a.options.get("num_ctx") for a in self.fleet.agents]
        if sizes and all(isinstance(n, int) and n > 0 for n in sizes):
            return min(sizes)  # type: ignore[type-var]
        return None

    def running_entry(self, name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
        """One model of `/api/ps`: a fleet name with runs in progress, and those runs."""
        entry = {"name": name, "model": name, "size": 0, "digest": self._digest[name], "details": self.details(),
                 "expires_at": iso(datetime.now(timezone.utc)), "size_vram": 0, "runs": runs}
        context = self.context_length()
        if context:
            entry["context_length"] = context
        return entry

    # ---------------------------------------------------------------- OpenAI

    def openai_entry(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": int(self.modified_at.timestamp()), "owned_by": FAMILY}
