"""The fleet as models a chat client can pick: `parallama:latest` (the config's strategy), one name per review
strategy, and each agent on its own as `parallama/<slug>` (a cheap task model for a front-end's titles and tags);
described the way Ollama's `/api/tags`, `/api/show`, `/api/ps` and OpenAI's `/v1/models` describe a model."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..review import STRATEGIES, needs_reviewer

if TYPE_CHECKING:
    from ..fleet import Agent, Fleet

FAMILY = "parallama"
LATEST = "latest"
TEMPLATE = "{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}"
"What `/api/show` calls the prompt template: no `.Suffix`, so editors do not take the fleet for a fill-in-the-middle model."


_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def agent_slugs(agents: "tuple[Agent, ...]") -> dict[str, "Agent"]:
    """Each agent's slug, in config order: its name lowercased, each run of other characters (spaces, brackets,
    accents) one `-`, no `-` at either end (`Worker A (Llama 3 8B)` → `worker-a-llama-3-8b`); a name with nothing
    left is `agent`. A name that is a slug already keeps it; a slug taken already gets `-2`, `-3`, …, never one
    that another agent's name spells (`Worker A` next to `worker-a` and `worker-a-2` is `worker-a-3`)."""
    bases = [_NOT_SLUG.sub("-", agent.name.lower()).strip("-") or "agent" for agent in agents]
    chosen: dict[int, str] = {}
    for index, (agent, base) in enumerate(zip(agents, bases)):
        if agent.name == base and base not in chosen.values():
            chosen[index] = base
    taken = set(chosen.values())
    for index, base in enumerate(bases):
        if index in chosen:
            continue
        slug, n = base, 1
        while slug in taken:
            n += 1
            slug = f"{base}-{n}"
        chosen[index] = slug
        taken.add(slug)
    return {chosen[index]: agent for index, agent in enumerate(agents)}


def iso(moment: datetime) -> str:
    """RFC 3339 with the local offset, as Ollama writes times."""
    return moment.astimezone().isoformat()


class Catalogue:
    """The names the fleet answers to, and what each API says about them."""

    def __init__(self, fleet: "Fleet", *, modified_at: datetime | None = None) -> None:
        self.fleet = fleet
        self.modified_at = modified_at or datetime.now(timezone.utc)
        tags = [LATEST, *(s for s in STRATEGIES if fleet.reviewers or not needs_reviewer(s))]
        self._strategies = {tag: (fleet.strategy if tag == LATEST else tag) for tag in tags}
        self.agents = {f"{FAMILY}/{slug}": agent for slug, agent in agent_slugs(fleet.agents).items()}
        "Each agent on its own, by its model name (`parallama/worker-a`)."
        self.names = [f"{FAMILY}:{tag}" for tag in tags] + list(self.agents)
        "Every name: `parallama:latest` first, the other ensembles, then each agent on its own."
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

    def agent_name(self, name: str) -> str | None:
        """The listed name of the agent a requested name asks for (`parallama/worker-a`, `…:latest` too), or None
        when it names no agent."""
        listed = name.strip().lower().removesuffix(":" + LATEST)
        return listed if listed in self.agents else None

    def agent_for(self, name: str) -> "Agent | None":
        listed = self.agent_name(name)
        return self.agents[listed] if listed is not None else None

    def canonical(self, name: str) -> str:
        """The listed name a requested name stands for (`parallama` → `parallama:latest`)."""
        agent = self.agent_name(name)
        if agent is not None:
            return agent
        family, _, tag = name.strip().lower().partition(":")
        tag = (tag or LATEST).removesuffix(":" + LATEST) or LATEST
        return f"{family}:{tag}"

    def unknown_model_message(self, name: str) -> str:
        return f"model {name!r} not found: this server has {', '.join(self.names)}"

    # ---------------------------------------------------------------- Ollama

    def details(self, name: str | None = None) -> dict[str, Any]:
        agent = self.agents.get(name) if name else None
        families = [agent.model] if agent else list(dict.fromkeys(a.model for a in self.fleet.agents))
        return {"parent_model": "", "format": FAMILY, "family": FAMILY, "families": families,
                "parameter_size": "", "quantization_level": ""}

    def tag_entry(self, name: str) -> dict[str, Any]:
        """One model of `/api/tags`: both `name` and `model`, as Ollama writes them."""
        return {"name": name, "model": name, "modified_at": iso(self.modified_at), "size": 0,
                "digest": self._digest[name], "details": self.details(name)}

    def capabilities(self, name: str) -> list[str]:
        """What `/api/show` says a model can do: `tools` where a request with tools has an agent to take them (a
        fleet's names: its reviewer that writes the reply, or its tools agent; the tools agent's own name)."""
        fleet = self.fleet
        agent = self.agent_for(name)
        if agent is None:
            takes = fleet.tools_mode != "ignore" and bool(fleet.reviewers or fleet.tools_agent)
        else:
            takes = fleet.tools_agent is not None and agent is fleet.tools_agent
        return ["completion", "tools"] if takes else ["completion"]

    def show(self, name: str) -> dict[str, Any]:
        """`/api/show`: the workers and reviewers described in the Modelfile, what the fleet's context allows."""
        agent = self.agent_for(name)
        if agent is not None:
            return self._show_agent(self.canonical(name), agent)
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
                "details": self.details(), "model_info": model_info, "capabilities": self.capabilities(name),
                "modified_at": iso(self.modified_at)}

    def _show_agent(self, name: str, agent: "Agent") -> dict[str, Any]:
        role = "reviewer" if agent.role == "reviewer" else "worker"
        modelfile = (f"# parallama agent served as {name}: the {role} {agent.name}, {agent.model} at {agent.api_url}, "
                     "answering alone (no review), in turn with the fleet's requests on its server\n")
        context = self.context_length((agent,))
        model_info: dict[str, Any] = {"general.architecture": FAMILY}
        if context:
            model_info[f"{FAMILY}.context_length"] = context
        return {"license": "", "modelfile": modelfile, "parameters": f"num_ctx {context}" if context else "",
                "template": TEMPLATE, "details": self.details(name), "model_info": model_info,
                "capabilities": self.capabilities(name), "modified_at": iso(self.modified_at)}

    def context_length(self, agents: "tuple[Agent, ...] | None" = None) -> int | None:
        """The smallest `num_ctx` the agents (default: all) are configured with, when every one of them sets it."""
        sizes = [a.options.get("num_ctx") for a in (self.fleet.agents if agents is None else agents)]
        if sizes and all(isinstance(n, int) and n > 0 for n in sizes):
            return min(sizes)  # type: ignore[type-var]
        return None

    def running_entry(self, name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
        """One model of `/api/ps`: a fleet name with runs in progress, and those runs."""
        entry = {"name": name, "model": name, "size": 0, "digest": self._digest[name],
                 "details": self.details(name), "expires_at": iso(datetime.now(timezone.utc)), "size_vram": 0,
                 "runs": runs}
        agent = self.agents.get(name)
        context = self.context_length((agent,) if agent else None)
        if context:
            entry["context_length"] = context
        return entry

    # ---------------------------------------------------------------- OpenAI

    def openai_entry(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": int(self.modified_at.timestamp()), "owned_by": FAMILY}
