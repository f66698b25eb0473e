"""BIGRec (Bao et al., "A Bi-Step Grounding Paradigm for LLMs in Recommendation Systems").

Step 1, language space: a causal LM with LoRA learns to write the next item's title from the
titles of the user's last ``history_items`` items (BIGRec's Alpaca prompt). Step 2,
recommendation space: the top beam of a deterministic beam search is grounded to catalog items
by distance in an embedding space (BIGRec: the *base* LM's last-token state, without LoRA),
optionally reweighted by popularity or a collaborative model's scores.

``recommend`` generates and grounds, so BIGRec is evaluated by the engine's protocols like any
model: the target's rank is read from the grounded list's scores by the rules dense models
follow (equal distances are ties, resolved by ``model.ties``, never by item id; an item not in
the list ties with every other unlisted item; a repeated target is ranked from a list that
excludes nothing).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import Tensor

import recsys
import recsys.llm
import recsys_grounding.data  # noqa: F401  (the engine imports BIGRec for `recsys fit`: so --data FewShotSeqDataModule resolves too)
from recsys_grounding.generation import generate_titles
from recsys_grounding.grounders import EmbeddingGrounder
from recsys_grounding.prompts import DOMAINS, collate_examples, encode_example, render_prompt


class BIGRec(recsys.TrainableOnlyCheckpoint, recsys.SeqRecModule):
    """Generate the next item's title with an instruction-tuned LM, then ground it to items.

    Args:
        num_items: catalog size (linked from the data).
        backbone: the causal LM: a registered name (``recsys backbones``), hub id or directory.
        pretrained: False = the same architecture with random weights (the "no prior" ablation).
        dtype: the LM's weights: ``float32`` (CPU), ``bfloat16`` (GPU).
        history_items: n, the titles of the last n items in the prompt (BIGRec: 10).
        domain: prompt wording: ``movie`` (watched movies), ``game`` (played video games), ``item``.
        item_template: how a title is written in prompts and responses (``bigrec``: "Title (Year)" in quotes).
        train_on_inputs: put the prompt's tokens in the loss too (BIGRec's README); default: response only.
        max_length: longest training example in tokens (BIGRec's cutoff_len); the prompt is cut from the left.
        lora_r, lora_alpha, lora_dropout, lora_targets: LoRA adapters (BIGRec: 8, 16, 0.05, q/v);
            ``lora_r=0`` trains the whole LM.
        num_beams, num_return_sequences, max_new_tokens: beam search (BIGRec: 4, 4, 128); ``do_sample`` is always False.
        ground_backbone: ``generator`` (BIGRec: a frozen copy of the LM's own weights before LoRA,
            random ones for a random-init LM) or a backbone name (e.g. ``all-minilm-l6-v2``).
        ground_pooling: ``last`` (BIGRec) / ``mean`` / ``cls``; None = ``last`` for the generator, else ``mean``.
        ground_metric: ``l2`` (BIGRec) or ``ip``.
        ground_max_length: tokens per title when embedding.
        exact_first: exact title matches rank first (the core's exact-title grounder as a first pass).
        grounding_threshold: an output grounds when its nearest item is within this many catalog
            median nearest-neighbour distances (logged as ``{stage}/grounding_rate``).
        reweight: ``none``, ``popularity`` (training counts) or ``cf`` (a collaborative model's scores).
        gamma: γ of D̃ = D̂ · (1 + w)^(−γ).
        cf_checkpoint: a trained dense recsys model (e.g. SASRec) whose ``score(batch)`` gives w for ``cf``.
        lr, weight_decay, warmup_steps: AdamW with linear warm-up (BIGRec: 1e-4, 0, 20).
    """

    train_windows = "every"

    def __init__(
        self,
        num_items: int,
        backbone: str = "smollm2-135m-instruct",
        pretrained: bool = True,
        dtype: str = "float32",
        history_items: int = 10,
        domain: str = "movie",
        item_template: str = "bigrec",
        train_on_inputs: bool = False,
        max_length: int = 512,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        lora_targets: list[str] | None = None,
        num_beams: int = 4,
        num_return_sequences: int = 4,
        max_new_tokens: int = 64,
        ground_backbone: str = "generator",
        ground_pooling: Literal["last", "mean", "cls"] | None = None,
        ground_metric: Literal["l2", "ip"] = "l2",
        ground_max_length: int = 64,
        exact_first: bool = True,
        grounding_threshold: float = 1.0,
        reweight: Literal["none", "popularity", "cf"] = "none",
        gamma: float = 0.0,
        cf_checkpoint: str | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 20,
        **kwargs,
    ):
        super().__init__(num_items, lr=lr, weight_decay=weight_decay, **kwargs)
        self.save_hyperparameters()
        if history_items < 1:
            raise ValueError(f"model.history_items must be >= 1, got {history_items}")
        if domain not in DOMAINS:
            raise ValueError(f"model.domain must be one of {sorted(DOMAINS)}, got {domain!r}")
        if reweight not in ("none", "popularity", "cf"):
            raise ValueError(f"model.reweight must be 'none', 'popularity' or 'cf', got {reweight!r}")
        if reweight == "cf" and not cf_checkpoint:
            raise ValueError("model.reweight='cf' needs model.cf_checkpoint (a trained dense model, e.g. SASRec)")
        if gamma < 0:
            raise ValueError(f"model.gamma must be >= 0, got {gamma}")
        if not 1 <= num_return_sequences <= num_beams:
            raise ValueError(f"model.num_return_sequences must be in 1..num_beams={num_beams}, got {num_return_sequences}")
        self.history_items, self.domain, self.item_template = history_items, domain, item_template
        self.train_on_inputs, self.max_length = train_on_inputs, max_length
        self.num_beams, self.num_return, self.max_new_tokens = num_beams, num_return_sequences, max_new_tokens
        self.reweight, self.gamma, self.cf_checkpoint = reweight, gamma, cf_checkpoint
        self.warmup_steps = warmup_steps

        loaded = recsys.load_backbone(backbone, head="causal-lm", pretrained=pretrained, dtype=dtype)
        if not loaded.is_causal:
            raise ValueError(f"model.backbone {backbone!r} is not a causal LM ({type(loaded.model).__name__})")
        self.tokenizer = loaded.tokenizer
        if ground_backbone == "generator":
            # BIGRec grounds with the base model: a frozen copy taken before LoRA is added.
            ground = recsys.Backbone(copy.deepcopy(loaded.model), loaded.tokenizer, dict(loaded.source))
            pooling = ground_pooling or "last"
        else:
            ground, pooling = ground_backbone, ground_pooling or "mean"
        self.ground_encoder = recsys.TextEncoder(ground, pooling=pooling, max_length=ground_max_length,
                                                 trainable_layers=0)
        self.track_backbone(self.ground_encoder.source, "ground_encoder.transformer.")
        self.lm = (recsys.add_lora(loaded.model, lora_r, lora_alpha, lora_dropout, lora_targets)
                   if lora_r > 0 else loaded.model)
        self.lm.train()
        self.track_backbone(loaded.source, "lm.")
        self.grounder = EmbeddingGrounder(self.ground_encoder, metric=ground_metric, exact_first=exact_first,
                                          template="title", threshold=grounding_threshold)

    # ---- catalog ------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        super().setup(stage)  # takes the data module's catalog: set_catalog -> on_catalog
        if self.catalog is None:
            raise RuntimeError("BIGRec reads item titles from the data module's catalog: run it with a recsys data module")

    def on_catalog(self, catalog: "recsys.Catalog") -> None:
        """Read titles and popularity, and embed the catalog for grounding (once per catalog;
        ``set_catalog`` checks its length first)."""
        self.item_texts = recsys.llm.render_items(catalog, self.item_template)  # (N + 1,), [0] = ''
        popularity = torch.as_tensor(catalog.popularity, dtype=torch.float32).clone()
        popularity[0] = float("nan")  # PAD: outside the popularity normalisation
        self.popularity = popularity
        self.grounder.fit(catalog)
        if self.reweight == "cf" and not hasattr(self, "_cf_model"):
            cf = recsys.RecModule.load_from_checkpoint(self.cf_checkpoint).eval().requires_grad_(False)
            if getattr(cf, "num_items", None) != self.num_items:
                raise ValueError(f"model.cf_checkpoint {self.cf_checkpoint}: a model of {cf.num_items} items, "
                                 f"this catalog has {self.num_items}")
            object.__setattr__(self, "_cf_model", cf)  # not a submodule: never saved into BIGRec's checkpoints

    def logged_metrics(self, stage: str) -> set[str]:
        names = super().logged_metrics(stage)
        if stage != "train":
            names |= {f"{stage}/grounding_rate", f"{stage}/exact_match"}
        return names

    # ---- prompts ------------------------------------------------------------------------

    def prompts(self, history: Tensor) -> list[str]:
        """(B, L) left-padded item ids -> B prompts over each row's last ``history_items`` titles."""
        out = []
        for row in history.tolist():
            items = [i for i in row if i != 0][-self.history_items:]
            out.append(render_prompt([self.item_texts[i] for i in items], self.domain))
        return out

    def loss(self, batch: recsys.Batch) -> Tensor:
        prompts = self.prompts(batch.history)
        examples = [encode_example(self.tokenizer, p, self.item_texts[int(t)], self.train_on_inputs, self.max_length)
                    for p, t in zip(prompts, batch.target.tolist())]
        inputs = {k: v.to(self.device) for k, v in collate_examples(examples, self.tokenizer.pad_token_id).items()}
        return self.response_loss(inputs["input_ids"], inputs["attention_mask"], inputs["labels"])

    def response_loss(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> Tensor:
        """Causal-LM cross-entropy over the labelled tokens (the response): :func:`recsys.llm.response_loss`.

        input_ids, attention_mask, labels: (B, T); labels are ``recsys.llm.IGNORE_INDEX`` where nothing is learned.
        """
        return recsys.llm.response_loss(self.lm, input_ids, attention_mask, labels)

    # ---- recommendation -----------------------------------------------------------------

    def generate(self, history: Tensor) -> list[list[str]]:
        """(B, L) histories -> B lists of de-duplicated generated titles, best beam first."""
        return generate_titles(self.lm, self.tokenizer, self.prompts(history), self.num_beams, self.num_return,
                               self.max_new_tokens)

    @torch.no_grad()
    def weights(self, batch: recsys.Batch, kind: str | None = None) -> Tensor | None:
        """Raw reweighting preferences: (N + 1,) popularity, (B, N + 1) CF scores, or None."""
        kind = kind or self.reweight
        if kind == "popularity":
            return self.popularity
        if kind == "cf":
            cf = self._cf_model.to(batch.history.device)
            return cf.score(batch).float().cpu()
        return None

    def recommend(self, batch: recsys.Batch, k: int) -> tuple[Tensor, Tensor]:
        """Generate, ground the top beam (as BIGRec), reweight, exclude ``batch.seen``: (B, k) ids and scores."""
        if self.catalog is None:
            raise RuntimeError("BIGRec has no catalog: call set_catalog(datamodule.catalog) (setup() does it)")
        top = [titles[0] if titles else "" for titles in self.generate(batch.history)]
        distances = self.grounder.distances(top)
        seen = batch.seen.cpu() if batch.seen is not None else None
        ids, scores = self.grounder.rank(distances, k, self.weights(batch), self.gamma, exclude=seen,
                                         first=self.grounder.exact_hits(top))
        # Means over evaluated users (each user's top beam counts once): the engine's re-query of
        # repeated targets reports nothing.
        self.report_metric("grounding_rate", self.grounder.grounded(distances))
        self.report_metric("exact_match", self.grounder.exact_match(top))
        return ids.to(batch.target.device), scores.to(batch.target.device)

    # ---- optimisation -------------------------------------------------------------------

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        warmup = max(self.warmup_steps, 0)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

