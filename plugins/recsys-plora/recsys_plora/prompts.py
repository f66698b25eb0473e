"""What the LLM reads: the short history (long-short retrieval) and the ReLLa prompt."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

Retrieval = Literal["similar", "recent"]


def select_history(history: Tensor, mask: Tensor, target: Tensor, k: int, mode: Retrieval,
                   embeddings: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Positions of the K history entries the LLM sees, in time order.

    history, mask: (B, L) left-padded items and their validity; target: (B,);
    embeddings: (N + 1, d) L2-normalised item vectors (``similar`` only).
    ``similar``: the K entries most similar (cosine) to the target, then re-sorted by time
    (ReLLa's semantic user-behaviour retrieval); ``recent``: the last K.
    Returns positions (B, K) into L and their validity (B, K) (False when a user has fewer than K).
    """
    k = min(k, history.shape[1])
    if mode == "recent":
        score = torch.arange(history.shape[1], device=history.device, dtype=torch.float).expand(history.shape)
    elif mode == "similar":
        if embeddings is None:
            raise ValueError("similar retrieval needs item embeddings")
        score = (embeddings[history] * embeddings[target].unsqueeze(1)).sum(-1)
    else:
        raise ValueError(f"retrieval must be 'similar' or 'recent', got {mode!r}")
    score = score.masked_fill(~mask, float("-inf"))
    top = score.topk(k, dim=1).indices.sort(dim=1).values  # chosen, then in time order
    return top, mask.gather(1, top)


_PRONOUNS = {"m": ("He", "His", "he"), "male": ("He", "His", "he"),
             "f": ("She", "Her", "she"), "female": ("She", "Her", "she")}


def _stars(rating: float) -> str:
    value = int(rating) if float(rating).is_integer() else rating
    return f"{value} star" + ("" if value == 1 else "s")


def rella_prompt(user: Mapping[str, str], history: Sequence[tuple[str, float]], target: str,
                 noun: str = "movie") -> str:
    """ReLLa's "sequential" prompt (as RecLoRA uses it), with what the user fields provide.

    ``user``: raw fields (``gender``, ``occupation``/``job``, ``age`` when present); ``history``:
    (title, rating) pairs, oldest first.
    """
    gender = str(user.get("gender", "")).strip().lower()
    he, his, he_lower = _PRONOUNS.get(gender, ("The user", "Their", "the user"))
    profile = []
    if gender in _PRONOUNS:
        profile.append(f"The user is a {'male' if he == 'He' else 'female'}.")
    job = str(user.get("occupation", user.get("job", ""))).strip()
    if job:
        profile.append(f"{his} job is {job}.")
    age = str(user.get("age", "")).strip()
    if age:
        profile.append(f"{his} age is {age}.")
    lines = [" ".join(profile)] if profile else []
    watched = "watched" if noun == "movie" else "interacted with"
    listed = ", ".join(f"'{i}. {title} ({_stars(rating)})'" for i, (title, rating) in enumerate(history))
    lines.append(f"{he} {watched} the following {noun}s in order in the past, and rated them:")
    lines.append(f"[{listed}]")
    lines.append(f"Based on the {noun}s {he_lower} has {watched}, deduce if {he_lower} will like the {noun} "
                 f"***{target}***.")
    lines.append(f"Note that more stars the user rated the {noun}, the more the user liked the {noun}.")
    lines.append("You should ONLY tell me yes or no.")
    return "\n".join(lines)


def compact_prompt(user: Mapping[str, str], history: Sequence[tuple[str, float]], target: str,
                   noun: str = "movie") -> str:
    """The same facts in about half the tokens, for encoders with a trained head (which read no
    instruction): ``"female, writer, 29. rated: Heat (1995) 4; Clue (1985) 1. target: Fargo (1996)"``."""
    gender = {"m": "male", "f": "female"}.get(str(user.get("gender", "")).strip().lower(),
                                              str(user.get("gender", "")).strip())
    profile = ", ".join(v for v in (gender, str(user.get("occupation", user.get("job", ""))).strip(),
                                    str(user.get("age", "")).strip()) if v)
    rated = "; ".join(f"{title} {int(r) if float(r).is_integer() else r}" for title, r in history)
    return (f"{profile}. " if profile else "") + f"rated: {rated}. target {noun}: {target}"


PROMPTS = {"rella": rella_prompt, "compact": compact_prompt}
