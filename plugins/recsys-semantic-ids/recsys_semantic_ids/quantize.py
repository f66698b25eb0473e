"""Residual quantisation: codebooks, Sinkhorn-Knopp balancing and the RQ-VAE network.

Shapes: N items, D input features, E = code vector size, L levels, K codes per level.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def kmeans(x: Tensor, k: int, seed: int, iters: int = 100) -> Tensor:
    """(N, E) -> (k, E) k-means centroids (scikit-learn, k-means++, seeded). With fewer than
    k distinct rows the missing centroids are copies of data rows (a codebook needs k rows)."""
    from sklearn.cluster import KMeans

    data = x.detach().double().cpu().numpy()
    distinct = len(np.unique(data.round(10), axis=0))
    fit_k = max(1, min(k, distinct))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on duplicate points
        centers = KMeans(fit_k, n_init=1, max_iter=iters, random_state=seed).fit(data).cluster_centers_
    if fit_k < k:
        rows = np.random.default_rng(seed).choice(len(data), k - fit_k, replace=len(data) < k - fit_k)
        centers = np.concatenate([centers, data[rows]])
    return torch.as_tensor(centers, dtype=x.dtype, device=x.device)


def sinkhorn(distances: Tensor, epsilon: float, iters: int = 50) -> Tensor:
    """Balanced soft assignment of B points to K codes (LC-Rec's uniform semantic mapping).

    distances: (B, K) squared distances. They are rescaled to [-1, 1] and turned into
    Q = exp(-d / epsilon) in float64 (exp(1/0.003) overflows float32), then rows (points)
    and columns (codes) are normalised in turn so every code receives about B/K points.
    Returns (B, K) float64 transport weights (rows sum to 1/B); callers take each row's argmax.
    """
    d = distances.double()
    low, high = d.min(), d.max()
    middle, half = (high + low) / 2, ((high - low) / 2).clamp_min(1e-12)
    q = torch.exp(-((d - middle) / half) / epsilon)  # (B, K), float64: at most e^(1/eps)
    b, k = q.shape
    q = q / q.sum().clamp_min(torch.finfo(torch.float64).tiny)
    for _ in range(iters):
        q = q / q.sum(0, keepdim=True).clamp_min(1e-300) / k  # every code gets mass 1/K
        q = q / q.sum(1, keepdim=True).clamp_min(1e-300) / b  # every point gives mass 1/B
    return q


def mlp(sizes: Sequence[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers through ``sizes`` with ReLU (and dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)] if dropout else [nn.ReLU()]
    return nn.Sequential(*layers)


class ResidualQuantizer(nn.Module):
    """L codebooks of K vectors each; level l quantises what the levels before it left over.

    ``codebooks``: (L, K, E). Sinkhorn, when asked, applies to the last level only.
    """

    codebooks: Tensor  # (L, K, E)
    initialised: Tensor  # () bool buffer: k-means initialisation done

    def __init__(self, levels: int, codebook_size: int, dim: int):
        super().__init__()
        self.codebooks = nn.Parameter(torch.zeros(levels, codebook_size, dim))
        self.register_buffer("initialised", torch.tensor(False))

    @property
    def levels(self) -> int:
        return self.codebooks.shape[0]

    @torch.no_grad()
    def init_kmeans(self, z: Tensor, seed: int, iters: int = 100) -> None:
        """Codebook l = k-means centroids of the residuals left by levels < l (z: (N, E))."""
        residual = z.detach()
        for level in range(self.levels):
            self.codebooks[level].copy_(kmeans(residual, self.codebooks.shape[1], seed + level, iters))
            residual = residual - self.codebooks[level][self._nearest(residual, level)]
        self.initialised.fill_(True)

    def _distances(self, residual: Tensor, level: int) -> Tensor:
        """(B, E) -> (B, K) squared Euclidean distances to level ``level``'s codes."""
        book = self.codebooks[level]
        return (residual.pow(2).sum(1, keepdim=True) - 2 * residual @ book.T + book.pow(2).sum(1)[None]).clamp_min(0)

    def _nearest(self, residual: Tensor, level: int) -> Tensor:
        return self._distances(residual, level).argmin(1)

    def forward(self, z: Tensor, sinkhorn_epsilon: float = 0.0, sinkhorn_iters: int = 50
                ) -> tuple[Tensor, Tensor, Tensor]:
        """z: (B, E) -> (z_q (B, E) with straight-through gradients, codes (B, L), codebook loss).

        The codebook loss is the mean over levels of ||sg(r_l) - v||^2; the commitment term
        ||r_l - sg(v)||^2 comes from :meth:`losses` (the caller weighs it by beta)."""
        residual, quantised, codes = z, torch.zeros_like(z), []
        code_loss = commit_loss = z.new_zeros(())
        for level in range(self.levels):
            distances = self._distances(residual, level)
            if level == self.levels - 1 and sinkhorn_epsilon > 0:
                index = sinkhorn(distances.detach(), sinkhorn_epsilon, sinkhorn_iters).argmax(1)
            else:
                index = distances.argmin(1)
            vector = self.codebooks[level][index]  # (B, E)
            code_loss = code_loss + F.mse_loss(vector, residual.detach())
            commit_loss = commit_loss + F.mse_loss(residual, vector.detach())
            quantised = quantised + vector
            residual = residual - vector.detach()
            codes.append(index)
        z_q = z + (quantised - z).detach()  # straight-through estimator
        self._last_losses = (code_loss / self.levels, commit_loss / self.levels)
        return z_q, torch.stack(codes, 1), self._last_losses[0]

    def losses(self) -> tuple[Tensor, Tensor]:
        """(codebook loss, commitment loss) of the last forward."""
        return self._last_losses


class RQVAENet(nn.Module):
    """MLP encoder D -> ... -> E, residual quantiser, mirrored MLP decoder E -> ... -> D.

    ``identity_encoder``: no MLPs at all (RQ-KMeans: codebooks from k-means on the raw vectors).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], e_dim: int, levels: int, codebook_size: int,
                 dropout: float = 0.0, identity_encoder: bool = False):
        super().__init__()
        self.encoder: nn.Module
        self.decoder: nn.Module
        if identity_encoder:
            self.encoder, self.decoder = nn.Identity(), nn.Identity()
            e_dim = in_dim
        else:
            sizes = [in_dim, *hidden, e_dim]
            self.encoder, self.decoder = mlp(sizes, dropout), mlp(sizes[::-1], dropout)
        self.quantizer = ResidualQuantizer(levels, codebook_size, e_dim)

    def forward(self, x: Tensor, sinkhorn_epsilon: float = 0.0, sinkhorn_iters: int = 50
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """x: (B, D) -> (reconstruction (B, D), codes (B, L), codebook loss, commitment loss)."""
        z = self.encoder(x)
        z_q, codes, _ = self.quantizer(z, sinkhorn_epsilon, sinkhorn_iters)
        code_loss, commit_loss = self.quantizer.losses()
        return self.decoder(z_q), codes, code_loss, commit_loss

    @torch.no_grad()
    def codes(self, x: Tensor, sinkhorn_epsilon: float = 0.0, sinkhorn_iters: int = 50) -> Tensor:
        """x: (B, D) -> (B, L) codes (argmin; Sinkhorn on the last level when epsilon > 0)."""
        return self.quantizer(self.encoder(x), sinkhorn_epsilon, sinkhorn_iters)[1]
