"""The item tokenizer: item text -> frozen text embedding -> RQ-VAE (or RQ-KMeans) codes.

Trained with ``recsys fit`` on :class:`ItemDataModule` (batches of item indices, not user
windows); ``recsys predict`` writes every item's unique code tuple to ``codes_path``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import ClassVar, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

import recsys
import recsys.llm
from recsys_semantic_ids.codes import CodeTable, add_disambiguation_level, collision_rate, resolve_collisions
from recsys_semantic_ids.quantize import RQVAENet


class ItemIndices(Dataset):
    """Item indices 1..N; ``__getitems__`` returns a whole batch as one (B,) tensor, as
    :meth:`recsys.RecDataModule.loader` expects."""

    def __init__(self, num_items: int):
        self.ids = torch.arange(1, num_items + 1)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Tensor:
        return self.ids[index]

    def __getitems__(self, indices) -> Tensor:
        return self.ids[torch.as_tensor(indices, dtype=torch.long)]


class ItemDataModule(recsys.SeqDataModule):
    """The same dataset as :class:`recsys.SeqDataModule`, served as batches of item indices
    (1..N): what an item tokenizer trains on. Validation, test and predict see every item once.

    Args (besides SeqDataModule's):
        item_batch_size: items per training batch (0 = the whole catalog, LC-Rec's setting
            on small catalogs is 1,024).
    """

    def __init__(self, path: str = "ml-100k", item_batch_size: int = 1024, **kwargs):
        super().__init__(path, **kwargs)
        if item_batch_size < 0:
            raise ValueError(f"data.item_batch_size must be >= 0 (0 = all items), got {item_batch_size}")
        self.item_batch_size = item_batch_size

    def _items(self, batch_size: int, shuffle: bool) -> DataLoader:
        items = ItemIndices(self.num_items)
        return self.loader(items, batch_size or len(items), shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._items(self.item_batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._items(0, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._items(0, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._items(0, shuffle=False)


class RQVAE(recsys.RecModule):
    """Semantic item IDs: L levels x K codes per item, unique after collision resolution.

    Item vector = mean of the frozen ``encoder`` embeddings of each template's text (LC-Rec
    embeds title and description and averages). ``method='rqvae'``: MLP encoder/decoder,
    k-means-initialised codebooks, straight-through, loss = MSE(x_hat, x) + quant_weight *
    (codebook + beta * commitment), Sinkhorn-Knopp (float64) on the last level while
    training. ``method='rqkmeans'``: residual k-means on the raw vectors, nothing trained.

    Codes: argmin at every level; colliding groups are re-quantised alone with Sinkhorn on
    the last level for up to ``collision_rounds`` rounds; if collisions remain (identical
    texts), a disambiguation level is appended, so every item has a unique tuple.

    Logs ``{stage}/recon_loss``, ``{stage}/loss`` and ``{stage}/collision_rate`` (plain
    argmin codes, before resolution). Checkpoint on ``val/loss`` (mode min): this model has
    no ranking metrics, so the default ``val/ndcg@10`` callbacks cannot be used.

    Args:
        num_items: catalog size (linked from the data).
        encoder: text encoder backbone (``all-minilm-l6-v2``; ``tiny-bert`` for tests).
        templates: item text templates whose embeddings are averaged.
        max_length: tokens per text.
        in_dim: the encoder's width (None: read from the backbone).
        hidden, e_dim: encoder MLP sizes (the decoder mirrors them); e_dim = code vector size.
        levels, codebook_size: L and K.
        beta: commitment weight; quant_weight: weight of the quantisation loss.
        sinkhorn_epsilon, sinkhorn_iters: uniform mapping on the last level (0 = off).
        kmeans_iters: k-means iterations for the codebook initialisation.
        collision_rounds: rounds of re-quantising colliding groups.
        normalize: L2-normalise item vectors first.
        seed: seeds k-means (the rest follows ``seed_everything``).
        codes_path: where ``recsys predict`` writes the codes (default ``<log dir>/codes.json``).
    """

    monitor: ClassVar[tuple[str, str]] = ("val/loss", "min")  # no ranking metrics: the CLI's default callbacks follow this

    def __init__(
        self,
        num_items: int,
        encoder: str = "all-minilm-l6-v2",
        templates: Sequence[str] = ("title", "description"),
        max_length: int = 64,
        in_dim: int | None = None,
        method: Literal["rqvae", "rqkmeans"] = "rqvae",
        hidden: Sequence[int] = (256, 128, 64),
        e_dim: int = 32,
        levels: int = 3,
        codebook_size: int = 64,
        dropout: float = 0.0,
        beta: float = 0.25,
        quant_weight: float = 1.0,
        sinkhorn_epsilon: float = 0.003,
        sinkhorn_iters: int = 50,
        kmeans_iters: int = 100,
        collision_rounds: int = 20,
        normalize: bool = False,
        seed: int = 0,
        codes_path: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        **kwargs,
    ):
        super().__init__(num_items, lr=lr, weight_decay=weight_decay, **kwargs)
        # codes_path is not saved: `recsys predict --ckpt_path` would otherwise replace the one given.
        self.save_hyperparameters(ignore=["codes_path"])
        if method not in ("rqvae", "rqkmeans"):
            raise ValueError(f"model.method must be 'rqvae' or 'rqkmeans', got {method!r}")
        if not templates:
            raise ValueError("model.templates must name at least one item template")
        if levels < 1 or codebook_size < 2:
            raise ValueError(f"need levels >= 1 and codebook_size >= 2, got {levels} and {codebook_size}")
        self.encoder_name, self.templates, self.max_length = encoder, list(templates), max_length
        self.method, self.normalize, self.seed = method, normalize, seed
        self.beta, self.quant_weight = beta, quant_weight
        self.sinkhorn_epsilon, self.sinkhorn_iters = sinkhorn_epsilon, sinkhorn_iters
        self.kmeans_iters, self.collision_rounds = kmeans_iters, collision_rounds
        self.codes_path = codes_path
        if in_dim is None:
            in_dim = recsys.load_backbone(encoder, head="base", pretrained=False).hidden_size
        self.net = RQVAENet(in_dim, hidden, e_dim, levels, codebook_size, dropout,
                            identity_encoder=method == "rqkmeans")
        if method == "rqkmeans":
            self.net.requires_grad_(False)
            self.automatic_optimization = False
        self.register_buffer("vectors", torch.zeros(num_items + 1, in_dim), persistent=False)
        self._item_ids: list[str] = []
        self._predicted: list[Tensor] = []

    # ---- data ------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        super().setup(stage)  # takes the data module's catalog: on_catalog reads the item texts
        if self.catalog is None:
            raise RuntimeError("RQVAE reads item text from the data module's catalog: run it with a recsys data module")

    def on_catalog(self, catalog: recsys.Catalog) -> None:
        self._item_ids = list(catalog.vocab.tokens[1:])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)  # a random-init encoder (tests) must give the same vectors every run
            vectors = torch.stack([recsys.embed_texts(self.encoder_name, recsys.llm.render_items(catalog, t)[1:],
                                                      max_length=self.max_length)
                                   for t in self.templates]).mean(0)  # (N, D)
        if vectors.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"model.in_dim is {self.vectors.shape[1]} but {self.encoder_name} gives {vectors.shape[1]}")
        if self.normalize:
            vectors = F.normalize(vectors, dim=-1)
        self.vectors[1:] = vectors.to(self.vectors.device)

    def logged_metrics(self, stage: str) -> set[str]:
        """No ranking metrics: losses and the collision rate only (``monitor`` is ``val/loss``)."""
        if stage == "train":
            return super().logged_metrics(stage) | {"train/recon_loss"}
        return {f"{stage}/{m}" for m in ("loss", "recon_loss", "collision_rate")}

    # ---- training --------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        if not bool(self.net.quantizer.initialised):
            with torch.no_grad():
                z = self.net.encoder(self.vectors[1:])
            self.net.quantizer.init_kmeans(z, self.seed, self.kmeans_iters)

    def _losses(self, x: Tensor, sinkhorn: bool) -> tuple[Tensor, Tensor, Tensor]:
        epsilon = self.sinkhorn_epsilon if sinkhorn else 0.0
        x_hat, codes, code_loss, commit_loss = self.net(x, epsilon, self.sinkhorn_iters)
        recon = F.mse_loss(x_hat, x)
        return recon + self.quant_weight * (code_loss + self.beta * commit_loss), recon, codes

    def training_step(self, items: Tensor, batch_idx: int):
        if self.method == "rqkmeans":
            return None  # nothing to train: the codebooks are k-means centroids
        loss, recon, _ = self._losses(self.vectors[items], sinkhorn=True)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(items))
        self.log("train/recon_loss", recon, batch_size=len(items))
        return loss

    def _log_evaluation(self, items: Tensor, stage: str) -> None:
        loss, recon, codes = self._losses(self.vectors[items], sinkhorn=False)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=len(items))
        self.log(f"{stage}/recon_loss", recon, batch_size=len(items))
        self.log(f"{stage}/collision_rate", collision_rate(codes), prog_bar=True, batch_size=len(items))

    def validation_step(self, items: Tensor, batch_idx: int) -> None:
        self._log_evaluation(items, "val")

    def test_step(self, items: Tensor, batch_idx: int) -> None:
        self._log_evaluation(items, "test")

    def configure_optimizers(self):
        if self.method == "rqkmeans":
            return None
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    # ---- codes -----------------------------------------------------------------------------

    @torch.no_grad()
    def item_codes(self) -> CodeTable:
        """Every item's unique code tuple, with the collision rates before and after resolution."""
        x = self.vectors[1:]
        if not bool(self.net.quantizer.initialised):  # rqkmeans predicted without fit: fit the centroids now
            self.net.quantizer.init_kmeans(self.net.encoder(x), self.seed, self.kmeans_iters)
        codes = self.net.codes(x).cpu()
        before = collision_rate(codes)
        epsilon = self.sinkhorn_epsilon or 0.003  # resolution always spreads groups with Sinkhorn

        def requantise(rows: Tensor) -> Tensor:
            return self.net.codes(x[rows.to(x.device)], epsilon, self.sinkhorn_iters).cpu()

        resolved = resolve_collisions(codes, requantise, self.collision_rounds)
        after_rounds = collision_rate(resolved)
        levels = [self.hparams.codebook_size] * self.hparams.levels
        if after_rounds > 0:
            resolved, extra = add_disambiguation_level(resolved)
            levels.append(extra)
        stats = {"method": self.method, "collision_rate_before": before,
                 "collision_rate_after_sinkhorn_rounds": after_rounds,
                 "collision_rate_after": collision_rate(resolved), "disambiguation_level": after_rounds > 0,
                 "items_per_code_last_level": float(len(x)) / self.hparams.codebook_size}
        return CodeTable(self._item_ids, resolved, levels, stats)

    def predict_step(self, items: Tensor, batch_idx: int) -> None:
        return None  # codes need every item at once (collision resolution): written in on_predict_end

    def on_predict_end(self) -> None:
        table = self.item_codes()
        path = Path(self.codes_path or Path(self.trainer.log_dir or ".") / "codes.json")
        table.write(path)
        s = table.stats
        print(f"recsys: wrote codes of {len(table.item_ids)} items ({len(table.levels)} levels {table.levels}) to "
              f"{path}; collision rate {s['collision_rate_before']:.4f} before resolution, "
              f"{s['collision_rate_after']:.4f} after", file=sys.stderr)
