"""Generators over semantic IDs: a causal LM that writes the next item's code tuple.

:class:`SemanticIDGenerator` (LC-Rec): an LLM (pretrained with LoRA, or a random decoder
with the backbone's tokenizer) whose vocabulary gains one token per (level, code), trained
on instruction prompts (sequential prediction plus switchable alignment tasks).
:class:`TIGER`: a small decoder from scratch whose vocabulary is the code tokens only,
trained on code sequences.

Ranking (``ranking``): ``beam`` = beam search constrained by a prefix trie of the real
items (every beam is an item; the user's history is excluded; beams de-duplicated);
``exact`` = every item scored by the teacher-forced log-probability of its code tuple,
renormalised over the trie's allowed tokens at each level (the same score a constrained
beam carries), so the full ranking has no beam-search noise. Both are ranked by the engine's
rules for every model: ties by ``ties``, a short beam list's fillers unlisted, a repeated
target (one in ``seen``) ranked from an unexcluded list or unexcluded scores.

This module is the LightningModule wiring (the LM, samples, loss, checkpoints, the choice of
ranking); the rankings themselves are :class:`~recsys_semantic_ids.beam_ranker.TrieBeamRanker`
and :class:`~recsys_semantic_ids.exact_scorer.ExactScorer`.
"""

from __future__ import annotations

import copy
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

import recsys
from recsys_semantic_ids.beam_ranker import TrieBeamRanker
from recsys_semantic_ids.codes import CodeTable, random_codes
from recsys_semantic_ids.exact_scorer import ExactScorer, PrefixStructure
from recsys_semantic_ids.prompts import IGNORE, TASKS, PromptBuilder, collate
from recsys_semantic_ids.trie import CodeTrie

__all__ = ["IGNORE", "TIGER", "SemanticIDGenerator", "code_token_names", "collate"]


def code_token_names(levels: Sequence[int]) -> list[list[str]]:
    """``<a_0> ... <a_{K-1}>``, ``<b_0> ...``: one name per (level, code)."""
    return [[f"<{chr(ord('a') + level)}_{code}>" for code in range(size)] for level, size in enumerate(levels)]


class SemanticIDGenerator(recsys.TrainableOnlyCheckpoint, recsys.SeqRecModule):
    """LC-Rec: an LLM that generates the next item's semantic ID.

    Args:
        num_items: catalog size (linked from the data).
        codes_path: the codes file written by ``recsys predict`` on a trained RQVAE.
        backbone: causal LM (``smollm2-135m-instruct``, ``tiny-llama``, a hub id or directory).
        pretrained: False = the backbone's architecture with random weights.
        decoder_layers, decoder_hidden, decoder_heads, decoder_intermediate: when
            decoder_layers is set, a randomly initialised decoder of this size replaces the
            backbone's weights (its tokenizer and architecture family are kept).
        lora_r: > 0 wraps the LM with LoRA (peft) of this rank on ``lora_targets``; the new
            code-token embedding rows still train (peft ``trainable_token_indices``).
        tasks: any of ``seqrec``, ``item2index``, ``index2item``, ``fusion``.
        align_samples: samples per alignment task added to each training batch.
        random_ids: replace the semantic codes by random distinct tuples of the same shape.
        history_len: most recent items in a prompt (LC-Rec: 20).
        num_beams: beams of the constrained beam search (LC-Rec: 20).
        ranking: ``beam`` or ``exact`` (see the module docstring). None (the default) = the
            ranking the checkpoint was saved with, ``beam`` for a new model; a value given
            (``recsys test --ckpt_path ... --model.ranking exact``) wins over the checkpoint's.
        score_chunk: prefixes per forward pass in exact ranking.
    """

    train_windows = "every"

    def __init__(
        self,
        num_items: int,
        codes_path: str,
        backbone: str = "smollm2-135m-instruct",
        pretrained: bool = True,
        decoder_layers: int | None = None,
        decoder_hidden: int = 128,
        decoder_heads: int = 4,
        decoder_intermediate: int = 512,
        lora_r: int = 0,
        lora_alpha: int = 32,
        lora_dropout: float = 0.05,
        lora_targets: Sequence[str] = ("q_proj", "v_proj"),
        tasks: Sequence[str] = ("seqrec",),
        align_samples: int = 8,
        random_ids: bool = False,
        random_ids_seed: int = 0,
        history_len: int = 20,
        num_beams: int = 20,
        ranking: Literal["beam", "exact"] | None = None,
        score_chunk: int = 512,
        **kwargs,
    ):
        super().__init__(num_items, **kwargs)
        # ranking is saved in the checkpoint apart from the hyper-parameters (on_save_checkpoint):
        # LightningCLI lets a checkpoint's hyper-parameters override the command line, and a
        # test-time --model.ranking must win.
        self.save_hyperparameters(ignore=["ranking"])
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or "seqrec" not in tasks:
            raise ValueError(f"model.tasks must include 'seqrec' and only name {list(TASKS)}, got {list(tasks)}")
        if ranking not in ("beam", "exact", None):
            raise ValueError(f"model.ranking must be 'beam' or 'exact', got {ranking!r}")
        self.tasks, self.align_samples, self.history_len = list(tasks), align_samples, history_len
        self.num_beams, self.score_chunk = num_beams, score_chunk
        self.ranking: str = ranking or "beam"
        self._ranking_given = ranking is not None
        table = CodeTable.read(codes_path)
        if len(table.item_ids) != num_items:
            raise ValueError(f"{codes_path} has codes for {len(table.item_ids)} items, the data {num_items}")
        self.item_ids, self.levels = table.item_ids, list(table.levels)
        codes = table.padded()
        if random_ids:
            codes[1:] = random_codes(num_items, self.levels, random_ids_seed)
        self.register_buffer("codes", codes)  # (N + 1, L)
        code_tokens = self._build_lm()  # (L, max K) token ids
        self.register_buffer("item_tokens", code_tokens.gather(1, codes.T.clamp_min(0)).T.contiguous(),
                             persistent=False)  # (N + 1, L): each item's code-token ids
        self._trie: CodeTrie | None = None
        self._prefix_structure: PrefixStructure | None = None
        self._titles: list[str] | None = None

    # ---- the language model ------------------------------------------------------------------

    def _build_lm(self) -> Tensor:
        """Load or build the LM and its vocabulary; return (L, max K) code-token ids."""
        from transformers import AutoModelForCausalLM

        h = self.hparams
        random_size = h.decoder_layers is not None
        backbone = recsys.load_backbone(h.backbone, head="causal-lm", pretrained=h.pretrained and not random_size)
        tokenizer = copy.deepcopy(backbone.tokenizer)  # tokenizers may be shared (cached): never mutate them
        model, source = backbone.model, dict(backbone.source)
        if random_size:
            config = copy.deepcopy(model.config)
            config.update({"hidden_size": h.decoder_hidden, "num_hidden_layers": h.decoder_layers,
                           "num_attention_heads": h.decoder_heads, "num_key_value_heads": h.decoder_heads,
                           "intermediate_size": h.decoder_intermediate, "head_dim": h.decoder_hidden // h.decoder_heads})
            model = AutoModelForCausalLM.from_config(config)
            source = {**source, "pretrained": False, "decoder": f"random {h.decoder_layers}x{h.decoder_hidden}"}
        names = code_token_names(self.levels)
        tokenizer.add_tokens([n for level in names for n in level])
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        table = torch.full((len(names), max(self.levels)), 0, dtype=torch.long)
        for level, level_names in enumerate(names):
            table[level, :len(level_names)] = torch.tensor(tokenizer.convert_tokens_to_ids(level_names))
        code_ids = table[table > 0].unique().tolist()
        if h.lora_r > 0:
            model = recsys.add_lora(model, h.lora_r, h.lora_alpha, h.lora_dropout, list(h.lora_targets),
                                   trainable_token_indices=code_ids)
        self.lm = model.train()
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id
        self.prompts = PromptBuilder(lambda text: tokenizer(text, add_special_tokens=False)["input_ids"],
                                     bos=None, eos=tokenizer.eos_token_id)
        if source.get("pretrained"):
            self.track_backbone(source, "lm.")
        return table

    def _causal(self):
        """The transformers CausalLM (inside peft's wrapper, if any)."""
        return self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm

    # ---- checkpoints -------------------------------------------------------------------------

    RANKING_KEY = "recsys_semantic_ids_ranking"

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[self.RANKING_KEY] = self.ranking

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if not self._ranking_given and checkpoint.get(self.RANKING_KEY) in ("beam", "exact"):
            self.ranking = checkpoint[self.RANKING_KEY]  # a restored model ranks as it was trained to

    # ---- data --------------------------------------------------------------------------------

    def on_catalog(self, catalog: recsys.Catalog) -> None:
        if list(catalog.vocab.tokens[1:]) != list(self.item_ids):
            raise ValueError(f"the codes file ({self.hparams.codes_path}) was written for another catalog "
                             "(its item ids differ from the data's): re-run `recsys predict` on this dataset")
        self._titles = catalog.titles

    @property
    def trie(self) -> CodeTrie:
        if self._trie is None:
            self._trie = CodeTrie(self.item_tokens.cpu())
        return self._trie

    def _history(self, row: Tensor) -> list[list[int]]:
        items = row[row != 0][-self.history_len:].tolist()
        tokens = self.item_tokens.cpu()
        return [tokens[i].tolist() for i in items]

    def _template(self) -> int:
        return int(torch.randint(0, 1 << 16, ()).item()) if self.training else 0

    def _samples(self, batch: recsys.Batch) -> list[tuple[list[int], list[int]]]:
        """Training samples of one batch: seqrec for every window, plus alignment samples."""
        tokens = self.item_tokens.cpu()
        samples = [self.prompts.seqrec(self._history(h), tokens[int(t)].tolist(), self._template())
                   for h, t in zip(batch.history.cpu(), batch.target.cpu())]
        if len(self.tasks) == 1:
            return samples
        if self._titles is None:
            raise RuntimeError("alignment tasks read item titles from the catalog: fit with a recsys data module")
        n = self.align_samples
        items = torch.randint(1, self.num_items + 1, (n,)).tolist()
        if "item2index" in self.tasks:
            samples += [self.prompts.item2index(self._titles[i], tokens[i].tolist(), self._template()) for i in items]
        if "index2item" in self.tasks:
            samples += [self.prompts.index2item(tokens[i].tolist(), self._titles[i], self._template()) for i in items]
        if "fusion" in self.tasks:
            rows = torch.randint(0, len(batch.target), (n,)).tolist()
            for row in rows:
                history = batch.history[row].cpu()
                target = int(batch.target[row])
                titles = [self._titles[i] for i in history[history != 0][-self.history_len:].tolist()]
                samples.append(self.prompts.fusion_titles(titles, tokens[target].tolist(), self._template()))
                samples.append(self.prompts.fusion_codes(self._history(history), self._titles[target],
                                                         self._template()))
        return samples

    # ---- training ----------------------------------------------------------------------------

    def response_loss(self, samples: Sequence[tuple[list[int], ...]]) -> Tensor:
        """Mean next-token cross-entropy over response tokens only: samples are (prompt,
        response[, labels]) id lists, as :func:`~recsys_semantic_ids.prompts.collate` takes."""
        batch = collate(samples, self.pad_id)
        r = batch["response_length"]
        device = self.codes.device
        logits = self.lm(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                         position_ids=batch["position_ids"].to(device), logits_to_keep=r + 1).logits[:, :r]
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch["labels"].to(device).reshape(-1),
                               ignore_index=IGNORE)

    def loss(self, batch: recsys.Batch) -> Tensor:
        return self.response_loss(self._samples(batch))

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    # ---- ranking -----------------------------------------------------------------------------

    @property
    def is_dense(self) -> bool:
        return self.ranking == "exact"

    def _prompts(self, batch: recsys.Batch) -> list[list[int]]:
        return [self.prompts.seqrec(self._history(h), [], 0)[0] for h in batch.history.cpu()]

    @torch.no_grad()
    def recommend(self, batch: recsys.Batch, k: int) -> tuple[Tensor, Tensor]:
        if self.ranking == "exact":
            return super().recommend(batch, k)
        return self.beam_search(batch, k)

    @torch.no_grad()
    def beam_search(self, batch: recsys.Batch, k: int) -> tuple[Tensor, Tensor]:
        """(B, k) items from trie-constrained beams (history excluded, de-duplicated), best first,
        with their beam scores (B, k); see :meth:`TrieBeamRanker.rank` for short rows."""
        ranker = TrieBeamRanker(self.lm, self.trie, self.pad_id, self.num_beams)
        result = ranker.rank(self._prompts(batch), k, batch.seen, device=self.codes.device)
        # the batch's own beam search reports (a repeat's re-query, which excludes nothing, does not)
        self.report_metric("valid_rate", result.valid)
        return result.items, result.scores

    @torch.no_grad()
    def score(self, batch: recsys.Batch) -> Tensor:
        """(B, N + 1) log-probability of every item's code tuple under the trie-constrained
        model (teacher forcing); seen items are excluded from the renormalisation, as in
        beam search (and masked by the caller)."""
        return self.exact_scorer().score(self._prompts(batch), batch.seen)

    def exact_scorer(self) -> ExactScorer:
        """The exact scorer over the current LM and device (built per call: cheap; the prefix
        structure it needs is computed once)."""
        if self._prefix_structure is None:
            self._prefix_structure = PrefixStructure.from_codes(self.codes[1:], self.item_tokens[1:])
        causal = self._causal()
        return ExactScorer(causal.base_model, causal.get_output_embeddings(), self.item_tokens,
                           self._prefix_structure, self.score_chunk)

    # ---- evaluation logging ------------------------------------------------------------------

    def rank(self, batch: recsys.Batch) -> Tensor:
        """The engine's ranks; under exact ranking, a repeated target (one in ``seen``) is ranked
        from scores computed without excluding ``seen`` (as beam ranking re-queries the list),
        because :meth:`score` gives the excluded items -inf and the repeat could never be hit."""
        ranks = super().rank(batch)
        if self.ranking != "exact" or batch.seen is None:
            return ranks
        repeat = (batch.seen == batch.target[:, None]).any(dim=1) & (batch.target > 0)
        if repeat.any():
            sub = batch.select(repeat)
            scores = recsys.mask_seen(self.score(sub._replace(seen=None)).float(), sub.seen, sub.target)
            ranks = ranks.clone()
            ranks[repeat] = recsys.dense_ranks(scores, sub.target, self.ties, sub.user).to(ranks)
        return ranks

    def logged_metrics(self, stage: str) -> set[str]:
        names = super().logged_metrics(stage)
        if stage != "train" and self.ranking == "beam":
            names.add(f"{stage}/valid_rate")
        return names


class TIGER(SemanticIDGenerator):
    """TIGER-style: a decoder trained from scratch on code sequences only. Its vocabulary is
    PAD, BOS and the code tokens; a prompt is BOS followed by the history's codes.

    Args: as :class:`SemanticIDGenerator`, with ``decoder_*`` sizing the decoder (a Llama
    block stack); ``backbone``, ``pretrained``, ``lora_*`` and alignment tasks do not apply.
    """

    PAD, BOS = 0, 1
    #: one training sequence per window: every item after the first is a target (as SASRec trains)
    train_windows = "tiled"

    def __init__(self, num_items: int, codes_path: str, decoder_layers: int | None = 4, **kwargs):
        if kwargs.get("tasks", ["seqrec"]) not in (["seqrec"], ("seqrec",)):
            raise ValueError("TIGER trains on code sequences only: model.tasks must be ['seqrec']")
        super().__init__(num_items, codes_path, decoder_layers=decoder_layers, **kwargs)

    def _build_lm(self) -> Tensor:
        from transformers import LlamaConfig, LlamaForCausalLM

        h = self.hparams
        layers = h.decoder_layers or 4
        offsets = torch.tensor([0, *self.levels]).cumsum(0)[:-1] + 2
        config = LlamaConfig(vocab_size=2 + sum(self.levels), hidden_size=h.decoder_hidden, num_hidden_layers=layers,
                             num_attention_heads=h.decoder_heads, num_key_value_heads=h.decoder_heads,
                             intermediate_size=h.decoder_intermediate, max_position_embeddings=1024,
                             pad_token_id=self.PAD, bos_token_id=self.BOS, eos_token_id=self.BOS,
                             tie_word_embeddings=True, architectures=["LlamaForCausalLM"])
        self.lm = LlamaForCausalLM(config).train()
        self.tokenizer, self.pad_id = None, self.PAD
        self.prompts = PromptBuilder(None, bos=self.BOS, eos=None)
        table = torch.zeros(len(self.levels), max(self.levels), dtype=torch.long)
        for level, size in enumerate(self.levels):
            table[level, :size] = offsets[level] + torch.arange(size)
        return table

    def loss(self, batch: recsys.Batch) -> Tensor:
        """Next-token cross-entropy on the codes of every target item of each window:
        BOS, codes(item 1), codes(item 2), ...; item j's codes are predicted from everything before."""
        if batch.labels is None:
            return super().loss(batch)
        tokens = self.item_tokens.cpu()
        samples = []
        for history, labels in zip(batch.history.cpu(), batch.labels.cpu()):
            real = (history != 0).nonzero().flatten()
            if len(real) == 0:
                continue
            items = history[real].tolist()
            if labels[real[-1]] != 0:
                items.append(int(labels[real[-1]]))
            codes: list[int] = []
            targets: list[int] = []
            for j, item in enumerate(items):
                item_codes = tokens[item].tolist()
                codes += item_codes
                targets += item_codes if j > 0 and labels[real[j - 1]] != 0 else [IGNORE] * len(item_codes)
            samples.append(([self.BOS], codes, targets))
        return self.response_loss(samples)
