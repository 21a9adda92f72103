"""A guide-format config whose workers point at instances parallama started."""

from __future__ import annotations

from pathlib import Path

from .state import Instance


def fleet_config(instances: list[Instance], *, reviewer: bool = True) -> dict:
    """One worker per instance; the reviewer on the first one; slots recorded when an instance has several."""
    def agent(instance: Instance, name: str) -> dict:
        model = Path(instance.model).stem if instance.engine == "llama-cpp" else instance.model
        return {"name": name, "api_url": instance.api_url, "model": model}

    config: dict = {}
    if reviewer and instances:
        config["reviewer_agent"] = agent(instances[0], "Reviewer") | {"timeout": 120}
    config["worker_agents"] = [agent(inst, f"Worker {chr(ord('A') + i)}") for i, inst in enumerate(instances)]
    slots = {inst.url: {"parallel": inst.parallel} for inst in instances if inst.parallel > 1}
    if slots:
        config["servers"] = slots
    return config
