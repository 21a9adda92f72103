"""`parallama doctor`: one check per line — servers reachable, models present, memory, settings that mislead."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Literal
from urllib.parse import urlsplit

from .fleet import Fleet
from .memory import Machine
from .backends import backend_for
from .plan import FleetPlan, make_plan

Status = Literal["pass", "warn", "fail"]
MARKS = {"pass": "✓", "warn": "⚠", "fail": "✗"}


@dataclass(frozen=True)
class Check:
    check: str
    status: Status
    message: str
    fix: str | None = None

    def line(self) -> str:
        return f"{MARKS[self.status]} {self.message}" + (f"\n    fix: {self.fix}" if self.fix else "")


@dataclass
class Diagnosis:
    checks: list[Check]
    plan: FleetPlan

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}


async def diagnose(fleet: Fleet, *, machine: Machine | None = None) -> Diagnosis:
    """Run every check on the fleet and this machine."""
    plan = await make_plan(fleet, machine=machine)
    checks: list[Check] = []
    for server in plan.servers:
        checks.append(_server_check(server))
        for note in server.probe.notes if server.probe else ():
            checks.append(Check("server", "warn", f"{server.url}: {note}; memory is estimated without it"))
    for agent in (each.on(r) for each in fleet.agents for r in each.pool):  # a pool: every replica needs the model
        server = next(s for s in plan.servers if s.url == agent.server)
        probe = server.probe
        if not probe or not probe.reachable or probe.error:
            continue
        if probe.has_model(agent.model):
            checks.append(Check("model", "pass", f"{agent.name}: {agent.model} is on {server.url}"))
        else:
            checks.append(Check("model", "fail", f"{agent.name}: {agent.model} is not on {server.url}",
                                backend_for(agent.protocol).missing_model_fix(server.url, agent.model,
                                                                              probe.models)))
    verdicts: dict[bool | None, Status] = {True: "pass", False: "fail", None: "warn"}
    status = verdicts[plan.fits]
    checks.append(Check("memory", status, plan.memory.text, plan.memory.fix))
    layers = os.environ.get("OLLAMA_NUM_GPU_LAYERS")
    if layers is not None:
        checks.append(Check(
            "gpu_layers", "warn",
            f"OLLAMA_NUM_GPU_LAYERS={layers} is set, but Ollama does not read it: it limits nothing",
            f"limit GPU layers per model with the num_gpu option: \"options\": {{\"num_gpu\": {layers}}} on the agent "
            "(or PARAMETER num_gpu in a Modelfile)"))
    for finding in plan.timeouts:
        checks.append(Check("timeout", "warn", finding.text, finding.fix))
    for finding in plan.parallel:
        checks.append(Check("parallel", "pass" if plan.truly_parallel and not finding.fix else "warn",
                            finding.text, finding.fix))
    return Diagnosis(checks, plan)


def _server_check(server) -> Check:
    probe = server.probe
    parts = urlsplit(server.url)
    if probe is None or not probe.reachable:
        port = parts.port
        start = backend_for(server.protocol).start_command(server.url) if server.local else None
        fix = (f"`parallama up` or {start}" if start
               else "check the URL, and that the server runs and is reachable")
        cause = probe.error if probe else "not probed"
        if server.local and probe and probe.error and "refused" in probe.error:
            cause = f"nothing listens on {port}"
        return Check("server", "fail", f"{server.url}: {cause}", probe.hint if probe and probe.hint else fix)
    if probe.error:
        return Check("server", "fail", f"{server.url}: {probe.error}",
                     probe.hint or f"is this an {backend_for(server.protocol).label} server? check the api_url path")
    held = ""
    if server.local and parts.port:
        from .engines.ports import port_holder

        holder = port_holder(parts.port)
        if holder.pid is not None:
            held = f"; served by {holder}"
    return Check("server", "pass", f"{server.url}: {probe.version} answers in {probe.latency_ms:.0f} ms{held}")
