"""Intra-list diversity on the items' text embeddings: a list metric (``kind="list"``) that
needs an LLM text encoder, so it lives beside the encoder rather than in :mod:`recsys.metrics`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from recsys.metrics import ListContext

if TYPE_CHECKING:
    from recsys.data.catalog import Catalog


class IntraListDiversity:
    """Intra-list diversity@k: the mean, over lists, of the mean cosine distance (1 - cos)
    between every two listed items, on embeddings of the items' text (the ``template``'s
    rendering of each catalog row) by the text ``backbone`` (any name ``recsys.load_backbone``
    takes; vectors cached on disk by :func:`recsys.llm.embed_texts`). Lists with fewer than two
    items are left out. The built-in ``ild`` uses all-MiniLM-L6-v2 (offline); register another
    instance for another backbone: ``register("ild_e5", IntraListDiversity("intfloat/e5-small-v2"), kind="list")``.
    """

    def __init__(self, backbone: str = "all-minilm-l6-v2", template: str = "default"):
        self.backbone, self.template = backbone, template
        self._vectors: tuple[object, Tensor] | None = None  # (catalog, (N + 1, d) unit vectors)

    def item_vectors(self, catalog: "Catalog") -> Tensor:
        """(N + 1, d) L2-normalised text embeddings of the catalog's items (row 0: PAD, zeros)."""
        if self._vectors is None or self._vectors[0] is not catalog:
            from recsys.llm.encoder import embed_texts  # the model loads only when this metric is used
            from recsys.llm.templates import render_items

            texts = render_items(catalog, self.template)[1:]
            vectors = torch.nn.functional.normalize(embed_texts(self.backbone, texts).float(), dim=1)
            self._vectors = (catalog, torch.cat([torch.zeros(1, vectors.shape[1]), vectors]))
        return self._vectors[1]

    def __call__(self, lists: Tensor, k: int, context: ListContext) -> Tensor:
        if context.catalog is None:
            raise ValueError("intra-list diversity reads the items' text: the model has no catalog")
        vectors = self.item_vectors(context.catalog).to(lists.device)
        top = lists[:, :k].long()
        listed = (top > 0).float()  # (n, k)
        v = vectors[top] * listed[..., None]  # (n, k, d); empty slots are zero vectors
        similarity = v @ v.transpose(1, 2)  # (n, k, k)
        pairs = listed[:, :, None] * listed[:, None, :] * (1 - torch.eye(top.shape[1], device=top.device))
        count = pairs.sum(dim=(1, 2))
        keep = count > 0
        if not keep.any():
            return torch.tensor(0.0)
        distance = ((1 - similarity) * pairs).sum(dim=(1, 2))[keep] / count[keep]
        return distance.mean()


#: The built-in ``ild`` metric (all-MiniLM-L6-v2, offline; its vectors are cached per catalog).
ild = IntraListDiversity("all-minilm-l6-v2")
