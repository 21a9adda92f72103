"""Memory estimates: model weights + context (KV) cache per slot + runtime overhead, and this machine's RAM/VRAM."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

GB = 1e9
INSTANCE_OVERHEAD_GB = 0.4
"Compute buffers and runtime of one server process (measured: llama.cpp on a 0.25 GB GGUF holds ~0.4 GB RSS)."

# Bits per weight, as llama.cpp's quantizations store them (block scales included).
BITS_PER_WEIGHT = {
    "F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.56, "Q5_K_M": 5.69, "Q5_K_S": 5.54,
    "Q5_0": 5.5, "Q5_1": 6.0, "Q4_K_M": 4.85, "Q4_K_S": 4.58, "Q4_0": 4.55, "Q4_1": 5.0, "Q3_K_M": 3.91,
    "Q3_K_S": 3.5, "Q3_K_L": 4.27, "Q2_K": 3.35, "IQ4_XS": 4.25,
}
DEFAULT_QUANT = "Q4_K_M"


@dataclass(frozen=True)
class CatalogueModel:
    """A common Ollama tag with what it costs."""

    tag: str
    params_b: float
    quant: str
    kv_kib_per_token: float
    "Context cache per token: 2 (K and V) × layers × KV heads × head size × 2 bytes."
    kind: str = "general"
    note: str = ""

    @property
    def weights_gb(self) -> float:
        return self.params_b * BITS_PER_WEIGHT.get(self.quant, 4.85) / 8


# Sizes from the model cards; KV per token from each architecture's layers × KV heads × head size.
CATALOGUE: tuple[CatalogueModel, ...] = (
    CatalogueModel("qwen2.5:0.5b", 0.49, "Q4_K_M", 12, note="tiny, fast"),
    CatalogueModel("tinyllama", 1.1, "Q4_0", 22, note="tiny, weak"),
    CatalogueModel("llama3.2:1b", 1.24, "Q8_0", 32),
    CatalogueModel("qwen2.5:1.5b", 1.54, "Q4_K_M", 28),
    CatalogueModel("deepseek-coder", 1.3, "Q4_0", 48, kind="code"),
    CatalogueModel("gemma2:2b", 2.6, "Q4_0", 104),
    CatalogueModel("phi", 2.7, "Q4_0", 320, note="phi-2"),
    CatalogueModel("llama3.2:3b", 3.2, "Q4_K_M", 112),
    CatalogueModel("qwen2.5:3b", 3.1, "Q4_K_M", 36),
    CatalogueModel("phi3:mini", 3.8, "Q4_0", 384),
    CatalogueModel("deepseek-coder:6.7b", 6.7, "Q4_0", 512, kind="code"),
    CatalogueModel("mistral", 7.2, "Q4_0", 128),
    CatalogueModel("qwen2.5:7b", 7.6, "Q4_K_M", 56),
    CatalogueModel("llama3.1:8b", 8.0, "Q4_K_M", 128),
    CatalogueModel("gemma2:9b", 9.2, "Q4_0", 336),
    CatalogueModel("qwen2.5:14b", 14.8, "Q4_K_M", 192),
    CatalogueModel("phi3:medium", 14.0, "Q4_0", 400),
    CatalogueModel("gemma2:27b", 27.2, "Q4_0", 368),
    CatalogueModel("qwen2.5:32b", 32.8, "Q4_K_M", 256),
    CatalogueModel("mixtral:8x7b", 46.7, "Q4_0", 128),
    CatalogueModel("llama3.1:70b", 70.6, "Q4_K_M", 320),
    CatalogueModel("qwen2.5:72b", 72.7, "Q4_K_M", 320),
)
ALIASES = {"llama3:8b": "llama3.1:8b", "llama3": "llama3.1:8b", "llama3:70b": "llama3.1:70b",
           "llama3.1": "llama3.1:8b", "qwen2.5": "qwen2.5:7b", "phi3": "phi3:mini", "gemma2": "gemma2:9b",
           "llama3.2": "llama3.2:3b", "mistral:7b": "mistral", "mistral:latest": "mistral", "gemma:2b": "gemma2:2b"}


def catalogue_entry(model: str) -> CatalogueModel | None:
    name = model.removesuffix(":latest")
    name = ALIASES.get(name, name)
    return next((m for m in CATALOGUE if m.tag == name), None)


@dataclass(frozen=True)
class ModelEstimate:
    """Memory one model needs on one server: weights once, context cache per slot."""

    model: str
    weights_gb: float
    kv_gb_per_slot: float
    source: str
    "Where the numbers came from: `server (/api/ps)`, `server (/api/show)`, `GGUF file`, `catalogue`, `name`."
    params_b: float | None = None
    quant: str | None = None
    context: int = 4096

    def total_gb(self, slots: int) -> float:
        return self.weights_gb + self.kv_gb_per_slot * slots


def kv_kib_guess(params_b: float) -> float:
    for limit, kib in ((2, 32), (4, 112), (9, 128), (15, 192), (35, 256)):
        if params_b <= limit:
            return kib
    return 320


def params_from_text(text: str) -> float | None:
    """`8.0B` → 8.0, `270M` → 0.27, `llama3:70b` → 70; `8x7b` → 56 (experts counted in memory)."""
    m = re.search(r"(\d+)x(\d+(?:\.\d+)?)\s*[bB]\b", text)
    if m:
        return float(m.group(1)) * float(m.group(2))
    m = re.search(r"(\d+(?:\.\d+)?)\s*([bBmM])(?![a-zA-Z])", text)
    if not m:
        return None
    value = float(m.group(1))
    return value / 1000 if m.group(2) in "mM" else value


def estimate_from_show(model: str, show: dict[str, Any], context: int) -> ModelEstimate | None:
    """From Ollama's /api/show: parameter count and quantization, and the exact KV size from model_info."""
    details = show.get("details") or {}
    info = show.get("model_info") or {}
    params = _positive(info.get("general.parameter_count"))
    params_b = params / 1e9 if params else params_from_text(str(details.get("parameter_size", "")))
    if not params_b:
        return None
    quant = str(details.get("quantization_level") or DEFAULT_QUANT).upper()
    arch = info.get("general.architecture", "")
    layers = _positive(info.get(f"{arch}.block_count"))
    heads = _positive(info.get(f"{arch}.attention.head_count"))
    kv_heads = _positive(info.get(f"{arch}.attention.head_count_kv")) or heads
    width = _positive(info.get(f"{arch}.embedding_length"))
    if layers and heads and kv_heads and width:
        kv_kib = 2 * layers * kv_heads * (width / heads) * 2 / 1024
    else:
        kv_kib = kv_kib_guess(params_b)
    return ModelEstimate(model, params_b * BITS_PER_WEIGHT.get(quant, 4.85) / 8, kv_kib * 1024 * context / GB,
                         "server (/api/show)", params_b, quant, context)


def _positive(value: Any) -> float | None:
    """A number the server reported, or None for anything else (a server's `model_info` is not ours to trust)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        return None
    return value


def estimate_from_catalogue(model: str, context: int) -> ModelEstimate | None:
    entry = catalogue_entry(model)
    if entry:
        return ModelEstimate(model, entry.weights_gb, entry.kv_kib_per_token * 1024 * context / GB, "catalogue",
                             entry.params_b, entry.quant, context)
    params_b = params_from_text(model.split(":")[-1]) if ":" in model else None
    if params_b:
        return ModelEstimate(model, params_b * BITS_PER_WEIGHT[DEFAULT_QUANT] / 8,
                             kv_kib_guess(params_b) * 1024 * context / GB, "size in the name", params_b,
                             DEFAULT_QUANT, context)
    return None


def estimate_from_gguf(model: str, size_bytes: int, context: int) -> ModelEstimate:
    params_guess = size_bytes / GB * 8 / BITS_PER_WEIGHT[DEFAULT_QUANT]
    return ModelEstimate(model, size_bytes / GB, kv_kib_guess(params_guess) * 1024 * context / GB, "GGUF file",
                         None, None, context)


@dataclass(frozen=True)
class Machine:
    """Memory this machine has (GB); injected figures win over what psutil and nvidia-smi say."""

    ram_gb: float
    ram_available_gb: float
    vram_gb: float = 0.0
    gpu: str | None = None

    @property
    def usable_gb(self) -> float:
        """What models may take: VRAM when there is a GPU, else RAM less ~2 GB for the system."""
        return self.vram_gb if self.vram_gb else max(0.0, self.ram_gb - 2.0)


def this_machine(ram_gb: float | None = None, vram_gb: float | None = None) -> Machine:
    import psutil

    vm = psutil.virtual_memory()
    gpu = None
    if vram_gb is None:
        vram_gb, gpu = _nvidia_vram()
    return Machine(ram_gb=ram_gb if ram_gb is not None else vm.total / GB,
                   ram_available_gb=ram_gb if ram_gb is not None else vm.available / GB,
                   vram_gb=vram_gb or 0.0, gpu=gpu)


def _nvidia_vram() -> tuple[float, str | None]:
    if not shutil.which("nvidia-smi"):
        return 0.0, None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0.0, None
    total, names = 0.0, []
    for line in out.strip().splitlines():
        name, _, mib = line.rpartition(",")
        try:
            total += float(mib) * 2**20 / GB
            names.append(name.strip())
        except ValueError:
            continue
    return total, ", ".join(names) or None
