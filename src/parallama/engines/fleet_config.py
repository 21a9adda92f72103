"""A guide-format config whose workers point at instances parallama started."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..personas import REVIEWER_MAX_TOKENS, SMALL_MODEL_REVIEW, WORKER_MAX_TOKENS, persona_for, persona_options
from .state import Instance

CPU_TIMEOUTS_S = {"worker": 300, "reviewer": 600}
"""The timeouts written for agents on llama.cpp instances (which run on the CPU here): a whole capped answer (512
worker tokens, 1,024 reviewer tokens) at about two tokens a second, where the defaults (60 s, 120 s) would fail a
small model's long answer on a busy laptop. The timeout only has to catch a server that hangs."""


def fleet_config(instances: list[Instance], *, reviewer: bool = True, plain: bool = False,
                 pool: bool = False) -> dict:
    """One worker per slot of the instances (an instance with 3 slots takes 3), each with its own persona (system
    prompt, temperature, seed) and a token cap, or plain copies of the model (`plain`); the reviewer on the first
    instance; slots recorded in `servers` when an instance has several. With `pool`, every agent's api_url lists
    every instance: one pool, each request to a free one."""
    urls = [inst.api_url for inst in instances]

    def agent(instance: Instance, name: str, role: str = "worker") -> dict:
        model = Path(instance.model).stem if instance.engine == "llama-cpp" else instance.model
        written: dict[str, Any] = {"name": name, "api_url": list(urls) if pool and len(urls) > 1 else instance.api_url,
                                   "model": model}
        if instance.engine == "llama-cpp":
            written["timeout"] = CPU_TIMEOUTS_S[role]
        return written

    def worker(i: int, instance: Instance) -> dict:
        name = f"Worker {chr(ord('A') + i)}" if i < 26 else f"Worker {i + 1}"
        if plain:
            return agent(instance, name)
        persona = persona_for(i)
        return agent(instance, f"{name} ({persona.name})") | {
            "system": persona.system, "options": persona_options(persona, WORKER_MAX_TOKENS)}

    config: dict = {}
    if reviewer and instances:
        config["reviewer_agent"] = agent(instances[0], "Reviewer", "reviewer")
        config["reviewer_agent"].setdefault("timeout", 120)
        if not plain:
            config["reviewer_agent"]["options"] = {"temperature": 0.2, "num_predict": REVIEWER_MAX_TOKENS}
    slots = [inst for inst in instances for _ in range(max(1, inst.parallel))]
    config["worker_agents"] = [worker(i, inst) for i, inst in enumerate(slots)]
    if reviewer and instances and not plain and instances[0].engine == "llama-cpp":
        # The demo's tiny model copies the default template's `### Answer from …` headers: numbered notes instead.
        config["review"] = dict(SMALL_MODEL_REVIEW)
    servers = {inst.url: {"parallel": inst.parallel} for inst in instances if inst.parallel > 1}
    if servers:
        config["servers"] = servers
    return config
