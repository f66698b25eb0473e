"""LoRA over peft, and checkpoints that hold only what training changed.

``add_lora`` picks target modules by backbone family (the papers adapt the attention query
and value projections), ``merge_lora`` folds adapters into the base weights for serving.
:class:`TrainableOnlyCheckpoint` keeps frozen backbone weights out of Lightning checkpoints
(a SmolLM2 checkpoint drops from ~540 MB to the adapters' ~2 MB); they are reloaded from
the backbone's source when the model is built, and filled back in before loading.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from torch import nn

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule as _MixinBase  # what the mixin is mixed into
else:
    _MixinBase = object

#: Attention query/value projections by ``config.model_type`` (LoRA's default targets).
LORA_TARGETS: dict[str, list[str]] = {
    "llama": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "qwen3": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
    "gemma2": ["q_proj", "v_proj"],
    "phi3": ["qkv_proj"],
    "gpt2": ["c_attn"],
    "bert": ["query", "value"],
    "t5": ["q", "v"],
}


def lora_targets(model: nn.Module) -> list[str]:
    """The LoRA target module names for a model's family; an error lists the linear layers
    to choose from when the family is unknown."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in LORA_TARGETS:
        return list(LORA_TARGETS[model_type])
    linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})
    raise ValueError(f"no default LoRA targets for model type {model_type!r}; pass targets= from {linear}")


def add_lora(
    model: nn.Module,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    targets: Sequence[str] | None = None,
    **peft_kwargs,
):
    """Wrap a transformers model with fresh LoRA adapters (peft); only they train.

    B starts at zero, so the wrapped model first computes exactly what the base model does.
    ``peft_kwargs`` go to ``peft.LoraConfig`` as they are (e.g. ``trainable_token_indices``
    to train the embeddings of added tokens, ``modules_to_save``).
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=list(targets) if targets else lora_targets(model), **peft_kwargs)
    return get_peft_model(model, config)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold LoRA adapters into the base weights and return the plain model (for serving)."""
    if hasattr(model, "merge_and_unload"):
        merged: nn.Module = getattr(model, "merge_and_unload")()  # a peft model's method
        return merged
    return model


class TrainableOnlyCheckpoint(_MixinBase):
    """LightningModule mixin: records where each backbone came from, and keeps the frozen
    weights of pretrained backbones out of checkpoints (``__init__`` reloads them anyway).

    In ``__init__`` call ``self.track_backbone(source, "encoder.transformer.")`` for each
    backbone. The sources are logged with the run's hyper-parameters (the logger's
    ``hparams.yaml``) and stored in checkpoints under ``recsys_backbone_sources`` -- not in
    ``self.hparams``, which must stay exactly the ``__init__`` arguments for
    ``load_from_checkpoint``. When a backbone's weights are pretrained (reproducible from its
    source), its frozen parameters under the prefix are dropped on save; Lightning calls
    ``on_load_checkpoint`` before ``load_state_dict``, so they are filled back from the
    freshly built module and strict loading still holds.
    """

    frozen_prefixes: tuple[str, ...] = ()

    def track_backbone(self, source: dict, prefix: str) -> None:
        sources = dict(getattr(self, "backbone_sources", {}))
        sources[prefix.rstrip(".")] = dict(source)
        self.backbone_sources = sources
        if source.get("pretrained"):
            self.frozen_prefixes = tuple(self.frozen_prefixes) + (prefix,)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        for logger in self.loggers:
            logger.log_hyperparams({"backbone_sources": getattr(self, "backbone_sources", {})})

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["recsys_backbone_sources"] = getattr(self, "backbone_sources", {})
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        state = checkpoint["state_dict"]
        dropped = [k for k in state if self.frozen_prefixes and k.startswith(self.frozen_prefixes)
                   and k not in trainable]
        for key in dropped:
            del state[key]
        checkpoint["recsys_frozen_keys"] = len(dropped)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if checkpoint.get("recsys_frozen_keys"):
            state = checkpoint["state_dict"]
            for key, value in self.state_dict().items():
                if key.startswith(self.frozen_prefixes):
                    state.setdefault(key, value)
