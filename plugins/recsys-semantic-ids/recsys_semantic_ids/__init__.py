"""recsys-semantic-ids: semantic item IDs (RQ-VAE / RQ-KMeans) and generators over them
(LC-Rec-style instruction LLM, TIGER-style code-only decoder)."""

from recsys_semantic_ids.codes import CodeTable, collision_rate, random_codes, resolve_collisions
from recsys_semantic_ids.tokenizer import RQVAE, ItemDataModule

__all__ = ["RQVAE", "CodeTable", "ItemDataModule", "collision_rate", "random_codes", "resolve_collisions"]
