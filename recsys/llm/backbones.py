"""Backbones: a name, hub id or local directory -> a transformers model and its tokenizer.

Resolution order for ``load_backbone(name)``:

1. a registered name (``register_backbones``): its packaged offline copy when installed
   (a GGUF file is converted once to a cached safetensors directory), else a randomly
   initialised model when it is a ``build=`` backbone, else its hub id;
2. an existing local directory;
3. a Hugging Face hub id: the local HF cache first; the network only when it answers.
   Offline and uncached, loading fails at once with what to install.

``Backbone.source`` says which of these was used; models record it in their hparams.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

Head = Literal["auto", "causal-lm", "base"]


class BackboneUnavailable(RuntimeError):
    """A backbone cannot be loaded here (no offline copy, no network); the message says what to do."""


@dataclass
class Backbone:
    """A loaded backbone: ``model`` (a transformers ``PreTrainedModel``), its ``tokenizer``
    (pad token always set) and ``source`` (JSON-able: name, kind, location, revision, pretrained)."""

    model: Any
    tokenizer: Any
    source: dict = field(default_factory=dict)

    @property
    def is_causal(self) -> bool:
        return is_causal_config(self.model.config)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def base_model(self):
        """The transformer without its language-model head (what text encoders run)."""
        return self.model.base_model


def is_causal_config(config) -> bool:
    return any(a.endswith("ForCausalLM") for a in (getattr(config, "architectures", None) or []))


# ---- resolution --------------------------------------------------------------------------


@dataclass
class Resolved:
    """Where a backbone's files are: ``path`` (a local directory), ``gguf`` (a packaged GGUF file
    to convert first: directory, file name, cache name) or ``build`` (random init)."""

    source: dict
    path: str | None = None
    build: Any = None
    gguf: tuple[str, str, str] | None = None


def resolve_backbone(name: str, revision: str | None = None) -> Resolved:
    """Find a backbone's files without loading it (fast: no model is read)."""
    from recsys.plugins import get_backbones

    entry = get_backbones().get(name)
    if entry is not None:
        if entry.build is not None:
            return Resolved({"name": name, "kind": "random", "location": f"{entry.plugin}:{name}",
                             "revision": "built-in"}, build=entry.build)
        kwargs = entry.local() if entry.local is not None else None
        if kwargs is not None:
            return _packaged(name, kwargs)
        assert entry.hub_id is not None  # register_backbones requires a hub id when there is no build=
        return _from_hub(name, entry.hub_id, revision, install=entry.install)
    if os.path.isdir(name):
        return Resolved({"name": name, "kind": "local", "location": str(Path(name).resolve()),
                         "revision": _dir_revision(Path(name))}, path=name)
    if name.count("/") != 1 or name.startswith((".", "/")):
        raise BackboneUnavailable(
            f"backbone {name!r} is neither a registered name ({sorted(get_backbones())}), "
            "an existing directory, nor a Hugging Face hub id (owner/name)")
    return _from_hub(name, name, revision, install=None)


def _dir_revision(path: Path) -> str:
    """Weight files' names and sizes: changes when the weights are replaced."""
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf"))
    return hashlib.sha256(repr([(p.name, p.stat().st_size) for p in files]).encode()).hexdigest()[:16]


def _packaged(name: str, kwargs: dict) -> Resolved:
    path = Path(kwargs["pretrained_model_name_or_path"])
    gguf = kwargs.get("gguf_file")
    if gguf is None:
        return Resolved({"name": name, "kind": "packaged", "location": str(path),
                         "revision": _dir_revision(path)}, path=str(path))
    gguf_path = path / gguf
    with open(gguf_path, "rb") as f:
        head = f.read(1 << 20)
    revision = hashlib.sha256(head + str(gguf_path.stat().st_size).encode()).hexdigest()[:16]
    return Resolved({"name": name, "kind": "packaged-gguf", "location": str(gguf_path), "revision": revision},
                    gguf=(str(path), gguf, f"backbones/{name}-{revision}"))


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get("TRANSFORMERS_OFFLINE", "") not in ("", "0"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_hub(name: str, hub_id: str, revision: str | None, install: str | None) -> Resolved:
    from huggingface_hub import snapshot_download

    def resolved(path: str) -> Resolved:
        return Resolved({"name": name, "kind": "hub", "location": hub_id, "revision": Path(path).name}, path=path)

    try:  # the local Hugging Face cache needs no network
        return resolved(snapshot_download(hub_id, revision=revision, local_files_only=True))
    except Exception:
        pass
    if not _hub_reachable():
        hint = f"install its packaged copy ({install}), or " if install else ""
        raise BackboneUnavailable(
            f"backbone {name!r}: no offline copy is installed, {hub_id!r} is not in the Hugging Face cache, "
            f"and the hub cannot be reached. To fix: {hint}download it where there is network "
            f"(huggingface-cli download {hub_id}) and copy the cache, or pass a local directory.")
    return resolved(snapshot_download(hub_id, revision=revision))


# ---- loading ------------------------------------------------------------------------------


def load_backbone(
    name: str,
    head: Head = "auto",
    pretrained: bool = True,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> Backbone:
    """Load a backbone by registered name, local directory or hub id.

    head: ``causal-lm`` (with the LM head, for generation), ``base`` (the bare transformer,
    for encoders) or ``auto`` (causal-lm when the checkpoint is a causal LM).
    pretrained=False builds the same architecture with random weights (the "no prior"
    ablation). dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto`` (the checkpoint's).
    """
    import torch
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    resolved = resolve_backbone(name, revision)
    if resolved.gguf is not None:  # a packaged GGUF file: convert once, then load the copy
        resolved.path = str(_convert_gguf(*resolved.gguf))
    if resolved.build is not None:
        config, tokenizer = resolved.build()
    else:
        assert resolved.path is not None  # every Resolved without build= has a path (a GGUF one since above)
        config = AutoConfig.from_pretrained(resolved.path, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, trust_remote_code=trust_remote_code)
    causal = head == "causal-lm" or (head == "auto" and is_causal_config(config))
    auto_cls = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
    torch_dtype = None if dtype == "auto" else getattr(torch, dtype)
    if pretrained and resolved.path is not None:
        model = auto_cls.from_pretrained(resolved.path, dtype=torch_dtype or "auto",
                                         trust_remote_code=trust_remote_code)
    else:
        model = auto_cls.from_config(config, trust_remote_code=trust_remote_code)
        if torch_dtype is not None:
            model = model.to(torch_dtype)
    if getattr(model, "pooler", None) is not None:  # BERT's pooler is never used: no dead parameters
        model.pooler = None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    source = dict(resolved.source, pretrained=bool(pretrained and resolved.path is not None))
    return Backbone(model=model.eval(), tokenizer=tokenizer, source=source)  # eval, as from_pretrained does


def _convert_gguf(directory: str, gguf_file: str, cache_name: str) -> Path:
    """De-quantize a GGUF checkpoint once into a cached safetensors directory.

    A GGUF-loaded model refuses ``save_pretrained``; rebuilding it from its config without
    the quantization entry and copying the weights gives an ordinary fp32 checkpoint.
    """
    from recsys.llm.cache import cached_directory

    def build(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if importlib.util.find_spec("gguf") is None:
            raise BackboneUnavailable("loading a GGUF backbone needs the gguf package: pip install gguf")
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
        loaded = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(loaded.state_dict(), strict=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return cached_directory(cache_name, build)
