"""BIGRec's reweighting of grounding distances by popularity or a collaborative model.

    D̂ = row-wise min-max of D over the eligible items,  w ∈ [0, 1],
    D̃ = D̂ · (1 + w)^(−γ)

Popularity (``adjust_pda.py``): w = count / Σ count, min-max over the catalog (the sum cancels).
Collaborative scores (``adjust_ci.py``): each row of the CF model's scores min-maxed over the
eligible items. The nearest eligible item has D̂ = 0, so D̃ = 0 for every γ: rank 1 never
changes; only lower ranks are re-ordered. Normalising over the eligible items (not over
items masked out, such as the user's history under ``loo``) is what keeps that property
when items are excluded.
"""

from __future__ import annotations

import torch
from torch import Tensor


def minmax(x: Tensor, eligible: Tensor | None = None) -> Tensor:
    """Row-wise min-max of (B, M) values to [0, 1] over ``eligible`` (B, M) bool entries.

    Ineligible entries come back as +inf; a row whose eligible values are all equal is 0.
    A (M,) vector is treated as one row.
    """
    squeeze = x.dim() == 1
    x = x[None] if squeeze else x
    if eligible is None:
        eligible = torch.isfinite(x)
    else:
        eligible = eligible.expand_as(x) & torch.isfinite(x)
    lo = torch.where(eligible, x, torch.full_like(x, float("inf"))).amin(dim=1, keepdim=True)
    hi = torch.where(eligible, x, torch.full_like(x, float("-inf"))).amax(dim=1, keepdim=True)
    span = (hi - lo).clamp_min(torch.finfo(x.dtype).tiny)
    out = torch.where(eligible, (x - lo) / span, torch.full_like(x, float("inf")))
    return out[0] if squeeze else out


def reweight(distances: Tensor, weights: Tensor | None, gamma: float, eligible: Tensor | None = None) -> Tensor:
    """(B, M) distances (lower = closer), (B, M) or (M,) raw weights (higher = preferred) -> D̃ (B, M).

    ``weights`` are min-maxed here: a matrix per row over the eligible entries (CF scores), a
    vector over its finite entries (popularity; give PAD NaN). With ``weights=None`` or ``gamma=0`` the result is D̂ itself, which ranks
    items exactly as ``distances`` do. Ineligible entries are +inf.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    d_hat = minmax(distances.float(), eligible)
    if weights is None or gamma == 0:
        return d_hat
    w = weights.float()
    if w.dim() == 1:
        w = minmax(w)[None]  # a catalog-wide prior (popularity): one normalisation for every row
    else:
        w = minmax(w, eligible)
    w = torch.where(torch.isfinite(w), w, torch.zeros_like(w))
    return d_hat * (1.0 + w).pow(-gamma)
