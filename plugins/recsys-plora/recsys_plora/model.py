"""RecLoRA: an LLM answers "will this user like this item?", adapted per sample by a bank of
LoRAs whose mixture a frozen CRM's user representation chooses.

Per sample: the CRM (:class:`~recsys_plora.crm.DIN`, trained first on every training sample)
reads the long history (the batch's L items) and gives h_u; the LLM reads the ReLLa prompt
with the K history items most similar to the target (then in time order) and their ratings;
every adapted linear layer adds its gate(h_u)-mixed LoRA bank (:mod:`recsys_plora.lora`).
P(like) is the answer head at the prompt's last position: ``logit(" Yes") - logit(" No")``
from the LM head (causal backbones, RecLoRA's ``head='lm'``), or a linear head on the pooled
vector (encoders; or a causal LM's last state, initialised to the Yes-No direction).

Only the top ``adapted_layers`` blocks are adapted; the frozen blocks below compute the same
states for a sample every epoch, so their output is computed once per sample and kept in a
process-wide cache (keyed by backbone, prompt settings and data), and a step runs only the
adapted blocks. ``adapter``: ``personalized`` (RecLoRA), ``shared`` (one LoRA, peft: the
TALLRec/ReLLa baseline) or ``none`` (frozen LLM, only the head trains).

The pieces, each in its own module, wired by :class:`RecLoRA`:

- :class:`~recsys_plora.prompts.ReLLaPrompter` (``model.prompter``): CTR batch -> B prompt texts;
- :class:`~recsys_plora.state_cache.FrozenStateCache` (``model.state_cache``): per-sample token
  ids and frozen-block states;
- :class:`~recsys_plora.crm.CRMGate` (``model.crm_gate``): CTR batch -> (B, H) gate input;
- :mod:`recsys_plora.answer_head`: the answer tokens and the (B, d) -> (B,) head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

import recsys
from recsys import CTRBatch
from recsys_plora.answer_head import answer_token_ids, linear_answer_head, yes_no_direction, yes_no_logits
from recsys_plora.crm import DIN, PROTOCOL_FIELDS, CRMGate, load_frozen_crm
from recsys_plora.lora import GateInput, Mixing, add_personalized_lora
from recsys_plora.prompts import PROMPTS, ReLLaPrompter, Retrieval
from recsys_plora.state_cache import CACHE_SECONDS, FrozenStateCache, cached_inputs, fingerprint

__all__ = ["CACHE_SECONDS", "PROTOCOL_FIELDS", "RecLoRA"]


class RecLoRA(recsys.TrainableOnlyCheckpoint, recsys.CTRModule):
    """RecLoRA (Zhu et al., 2024) under the CTR protocol (``data: CTRDataModule``).

    Args:
        num_items: linked from the data module.
        backbone: any registered backbone, hub id or directory (``recsys backbones``).
        pretrained: False = the same architecture with random weights (tests, ablations).
        dtype: the frozen backbone's dtype (``bfloat16`` on GPUs); adapters and heads stay float32.
        head: ``yes-no`` (causal LMs: LM-head logit of Yes minus No, nothing to train),
            ``linear`` (Linear(d, 1) on the pooled vector, trainable), ``auto`` (yes-no for causal
            LMs, linear for encoders).
        pooling: ``last`` (causal), ``mean``/``cls`` (encoders); ``auto`` picks by backbone kind.
        adapter: ``personalized``, ``shared`` (peft LoRA) or ``none`` (frozen backbone).
        num_loras: K, LoRA pairs per adapted layer (personalized).
        rank, lora_alpha, lora_dropout: LoRA rank r, scaling alpha / r, input dropout.
        temperature: softmax temperature of the gate.
        gate_hidden, gate_dropout: the gate MLP (LayerNorm -> Linear(H, gate_hidden) -> ReLU ->
            Dropout -> Linear(gate_hidden, K)).
        gate_input: ``target-aware`` (the CRM's last hidden layer, which depends on the target
            item, as RecLoRA's code) or ``target-agnostic`` (user fields + mean history).
        mixing: ``products`` (sum_k a_k A_k B_k, the paper) or ``code`` (mixed A times mixed B).
        targets: names of the linear layers to adapt (default: the family's q/v projections,
            ``recsys.llm.LORA_TARGETS``).
        adapted_layers: adapt only the top n transformer blocks (the frozen ones below are
            cached); None = every block (no cache).
        crm_checkpoint: a trained CRM (``DIN``) checkpoint, loaded frozen; required by
            ``personalized``, unused otherwise.
        prompt_items: K history items shown in the prompt.
        prompt: ``rella`` (ReLLa's sequential template, as RecLoRA) or ``compact`` (the same facts
            in about half the tokens, no instruction: for encoders with a trained head).
        retrieval: ``similar`` (top-K by cosine of the items' text embeddings to the target,
            then in time order) or ``recent`` (the last K).
        retrieval_backbone: text encoder of the retrieval embeddings (cached on disk; item text
            is the ``rella`` template).
        item_template: how items are named in the prompt (``recsys.llm.templates``).
        item_noun: what the prompt calls items (``movie``, ``book`` ...); None = ``movie`` for
            MovieLens data (dataset name ``ml-*``), else ``item``.
        max_length: prompt tokens kept (the start is cut when longer, never the question).
        chat_template: wrap the prompt in the tokenizer's chat template when it has one.
        cache_states: cache the frozen blocks' outputs per sample (and prompt token ids), in
            ``model.state_cache`` (shared by the process's models unless set to another before
            ``attach``; random-weight backbones keep theirs to the model).
    """

    def __init__(
        self,
        num_items: int,
        backbone: str = "smollm2-135m-instruct",
        pretrained: bool = True,
        dtype: str = "float32",
        head: Literal["auto", "yes-no", "linear"] = "auto",
        pooling: Literal["auto", "last", "mean", "cls"] = "auto",
        adapter: Literal["personalized", "shared", "none"] = "personalized",
        num_loras: int = 8,
        rank: int = 8,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.0,
        temperature: float = 1.0,
        gate_hidden: int = 60,
        gate_dropout: float = 0.1,
        gate_input: Literal["target-aware", "target-agnostic"] = "target-aware",
        mixing: Mixing = "products",
        targets: list[str] | None = None,
        adapted_layers: int | None = 2,
        crm_checkpoint: str | None = None,
        prompt_items: int = 5,
        prompt: Literal["rella", "compact"] = "rella",
        retrieval: Retrieval = "similar",
        retrieval_backbone: str = "all-minilm-l6-v2",
        item_template: str = "title",
        max_length: int = 256,
        chat_template: bool = True,
        cache_states: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        item_noun: str | None = None,
    ):
        super().__init__(num_items, lr=lr, weight_decay=weight_decay)
        choices = {"head": (head, ("auto", "yes-no", "linear")), "pooling": (pooling, ("auto", "last", "mean", "cls")),
                   "adapter": (adapter, ("personalized", "shared", "none")),
                   "gate_input": (gate_input, ("target-aware", "target-agnostic")),
                   "retrieval": (retrieval, ("similar", "recent")), "prompt": (prompt, tuple(PROMPTS)),
                   "mixing": (mixing, ("products", "code"))}
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"model.{name} must be one of {list(allowed)}, got {value!r}")
        if prompt_items < 1:
            raise ValueError(f"model.prompt_items must be >= 1, got {prompt_items}")
        self.save_hyperparameters()
        from recsys.llm import transformer_layers

        bb = recsys.load_backbone(backbone, pretrained=pretrained, dtype=dtype)
        self.causal = bb.is_causal
        self.head_kind = ("yes-no" if self.causal else "linear") if head == "auto" else head
        pooling = ("last" if self.causal else "mean") if pooling == "auto" else pooling
        if self.head_kind == "yes-no" and (not self.causal or pooling != "last"):
            raise ValueError(f"model.head 'yes-no' reads the LM head at the last position: it needs a causal "
                             f"backbone and pooling 'last' ({backbone!r} is {'causal' if self.causal else 'an encoder'}, "
                             f"pooling {pooling!r})")
        self.tokenizer = bb.tokenizer
        self.tokenizer.truncation_side = "left"  # a long prompt loses its start, never the question
        self.prompter = ReLLaPrompter(self.tokenizer, self.causal, chat_template=chat_template, prompt=prompt,
                                      prompt_items=prompt_items, retrieval=retrieval,
                                      retrieval_backbone=retrieval_backbone, item_template=item_template,
                                      item_noun=item_noun)
        direction = None
        if self.causal:
            self.answer_ids = answer_token_ids(self.tokenizer, self.prompter.wrap, self.use_chat)
            direction, bias = yes_no_direction(bb.model.get_output_embeddings(), self.answer_ids)
        n_layers = len(transformer_layers(bb.base_model))
        adapted = n_layers if adapted_layers is None else adapted_layers
        if not 1 <= adapted <= n_layers:
            raise ValueError(f"model.adapted_layers must be in 1..{n_layers} (the backbone's blocks) or null, got {adapted}")
        # The top `adapted` blocks run every step (also for adapter none, so every variant shares
        # one cache of the blocks below); the rest are cached per sample.
        self.encoder = recsys.TextEncoder(bb, pooling=pooling, max_length=max_length,
                                          trainable_layers=adapted if cache_states and adapted < n_layers else None)
        self.encoder.transformer.requires_grad_(False)  # only adapters and the head train
        self.track_backbone(bb.source, "encoder.transformer.")
        del bb
        self.state_cache = FrozenStateCache.shared()

        # Built in this order (CRM, adapters, head): each draws from the seeded RNG.
        self.crm: DIN | None = None
        self.crm_gate: CRMGate | None = None
        if crm_checkpoint is not None:
            self.crm = load_frozen_crm(crm_checkpoint, num_items)
            self.crm_gate = CRMGate(self.crm, crm_checkpoint, target_aware=gate_input == "target-aware")
        self.gate = GateInput()
        if adapter == "personalized":
            if self.crm_gate is None:
                raise ValueError("model.adapter 'personalized' needs model.crm_checkpoint: the gate reads the CRM's user "
                                 "representation (train one with plugins/recsys-plora/configs/ml-100k/ctr-din.yaml)")
            add_personalized_lora(self.encoder.transformer, self._target_names(targets, adapted), self.gate,
                                  self.crm_gate.dim, num_loras=num_loras, rank=rank, alpha=lora_alpha,
                                  dropout=lora_dropout, temperature=temperature, gate_hidden=gate_hidden,
                                  gate_dropout=gate_dropout, mixing=mixing)
        elif adapter == "shared":
            from recsys.llm import add_lora

            add_lora(self.encoder.transformer, r=rank, alpha=int(lora_alpha), dropout=lora_dropout,
                     targets=self._target_names(targets, adapted))  # peft wraps the layers in place
        # Checkpoint keys: `answer_direction`/`answer_bias` (yes-no) or `head.*` (linear).
        if self.head_kind == "yes-no":
            self.register_buffer("answer_direction", direction)
            self.register_buffer("answer_bias", torch.tensor(bias))
        else:
            self.head = linear_answer_head(self.encoder.dim, direction)
        self._setup_done = False

    @property
    def use_chat(self) -> bool:
        """The prompt is wrapped in the tokenizer's chat template."""
        return self.prompter.use_chat

    def _target_names(self, targets: Sequence[str] | None, adapted: int) -> list[str]:
        """Full names of the target linears inside the top ``adapted`` blocks."""
        from recsys.llm import lora_targets, transformer_layers

        transformer = self.encoder.transformer
        suffixes = list(targets) if targets else lora_targets(transformer)
        layers = transformer_layers(transformer)
        top = {id(m) for layer in layers[len(layers) - adapted:] for m in layer.modules()}
        names = [name for name, m in transformer.named_modules()
                 if isinstance(m, nn.Linear) and id(m) in top and name.rsplit(".", 1)[-1] in suffixes]
        if not names:
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in transformer.named_modules() if isinstance(m, nn.Linear)})
            raise ValueError(f"model.targets {suffixes} match no linear layer in the top {adapted} blocks; "
                             f"choose from {linear}")
        return names

    def train(self, mode: bool = True):
        super().train(mode)
        if self.crm is not None:
            self.crm.eval()  # frozen: its representation must not change with dropout
        return self

    # ---- data ------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        self.attach(getattr(self.trainer, "datamodule", None))
        super().setup(stage)  # the base takes (and length-checks) the data module's catalog

    def attach(self, dm) -> None:
        """Read what prompts need from a ``CTRDataModule`` (titles, user fields, retrieval
        vectors) and pick the cached states of this data; ``setup`` calls it with the trainer's
        data module."""
        data = getattr(dm, "data", None)
        if data is None or not hasattr(data, "samples") or not hasattr(data, "label"):
            raise ValueError("RecLoRA trains under the CTR protocol: use `data: CTRDataModule`")
        if self.crm_gate is not None:
            self.crm_gate.check_protocol(dm.hparams)
        self._data = data
        self.prompter.attach(data)
        protocol = {k: v for k, v in dict(dm.hparams).items() if k in PROTOCOL_FIELDS + ("max_len",)}
        key = fingerprint({"backbone": self.encoder.source, "frozen": self.encoder.num_frozen_layers,
                           "pooling": self.encoder.pooling, "max_length": self.encoder.max_length,
                           "chat": self.use_chat, "data": protocol,
                           **{k: self.hparams[k] for k in ("prompt_items", "prompt", "retrieval", "retrieval_backbone",
                                                           "item_template")},
                           "item_noun": self.prompter.noun})
        if not self.hparams.cache_states:
            self._states = None
        elif self.encoder.source.get("pretrained"):
            self._states = self.state_cache.store(key)
        else:  # random weights differ per instance: their states are this model's alone
            self._states = {}

    def prompts(self, batch: CTRBatch) -> list[str]:
        """The (wrapped) prompt of every sample in the batch."""
        return self.prompter(batch)

    def _encode(self, batch: CTRBatch, rows: list[int]) -> tuple[Tensor, Tensor, Tensor | None]:
        """Batch rows -> right-padded ids (M, T), mask (M, T), frozen-block states (M, T, d) or None."""
        texts = self.prompts(batch)
        tok = self.encoder.tokenize([texts[i] for i in rows])
        if self.encoder.num_frozen_layers == 0:
            return tok["input_ids"], tok["attention_mask"], None
        was_training = self.encoder.transformer.training
        self.encoder.transformer.eval()  # cached states must not depend on dropout
        states = self.encoder.frozen_states(tok["input_ids"], tok["attention_mask"]).cpu()
        self.encoder.transformer.train(was_training)
        return tok["input_ids"], tok["attention_mask"], states

    # ---- model -----------------------------------------------------------------------------

    def gate_vector(self, batch: CTRBatch) -> Tensor | None:
        """(B, H) the CRM's user representation the gates read (None without a personalized adapter)."""
        if self.hparams.adapter != "personalized":
            return None
        if self.crm_gate is None:
            raise RuntimeError("a personalized adapter needs crm_checkpoint (the CRM its gates read)")
        return self.crm_gate(batch)

    def pooled(self, batch: CTRBatch) -> Tensor:
        """(B, d) the backbone's vector at the answer position (causal) or pooled (encoders)."""
        ids, mask, states = cached_inputs(batch.sample.tolist(), self._states, lambda rows: self._encode(batch, rows),
                                          self.tokenizer.pad_token_id, self.encoder.dim)
        self.gate.value = self.gate_vector(batch)
        try:
            return self.encoder(ids, mask, frozen_states=states)
        finally:
            self.gate.value = None

    def logits(self, batch: CTRBatch) -> Tensor:
        """(B,) the logit of P(like)."""
        pooled = self.pooled(batch)
        if self.head_kind == "yes-no":
            return yes_no_logits(pooled, self.answer_direction, self.answer_bias)
        return self.head(pooled).squeeze(-1)
