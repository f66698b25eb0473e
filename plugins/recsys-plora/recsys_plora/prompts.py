"""What the LLM reads: the short history (long-short retrieval), the ReLLa prompt, and
:class:`ReLLaPrompter`, which builds every sample's prompt text from a CTR batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

import recsys
import recsys.llm
from recsys import CTRBatch

Retrieval = Literal["similar", "recent"]
PromptKind = Literal["rella", "compact"]


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


def default_item_noun(dataset_name: str) -> str:
    """What items are called when not configured: ``movie`` on MovieLens (``ml-*``), else ``item``."""
    return "movie" if dataset_name.startswith("ml-") else "item"


class ReLLaPrompter:
    """The prompt text of every sample in a CTR batch: the user's profile, the K retrieved
    history items with their ratings, the target item; wrapped for the backbone.

    Args:
        tokenizer: the backbone's tokenizer (its chat template wraps the prompt).
        causal: the backbone is a causal LM (it answers after the prompt).
        chat_template: wrap in the tokenizer's chat template when it has one (causal only).
        prompt: ``rella`` or ``compact`` (:data:`PROMPTS`).
        prompt_items: K history items shown.
        retrieval: how the K are chosen (:func:`select_history`).
        retrieval_backbone: text encoder of the ``similar`` retrieval's item vectors.
        item_template: how items are named (``recsys.llm.templates``).
        item_noun: what the prompt calls items ("movie", "book" ...); None = from the dataset's
            name (:func:`default_item_noun`).

    :meth:`attach` reads what it needs from the data before the first call.
    """

    def __init__(self, tokenizer, causal: bool, chat_template: bool = True, prompt: PromptKind = "rella",
                 prompt_items: int = 5, retrieval: Retrieval = "similar",
                 retrieval_backbone: str = "all-minilm-l6-v2", item_template: str = "title",
                 item_noun: str | None = None):
        self.tokenizer = tokenizer
        self.causal = causal
        self.use_chat = bool(chat_template and causal and getattr(tokenizer, "chat_template", None))
        self.prompt, self.prompt_items, self.retrieval = prompt, prompt_items, retrieval
        self.retrieval_backbone, self.item_template, self.item_noun = retrieval_backbone, item_template, item_noun
        self.titles: list[str] | None = None
        self.users: list[dict[str, str]] = []
        self.vectors: Tensor | None = None
        self.noun: str | None = item_noun  # set by attach when None

    def attach(self, data) -> None:
        """Read item names, user fields and (``similar``) item vectors from a CTR dataset."""
        self.titles = recsys.llm.render_items(data.catalog, self.item_template)
        self.noun = self.item_noun if self.item_noun is not None else default_item_noun(data.name)
        table = data.user_table
        # one row per user id, 0 = padding; no user table = no profile
        self.users = ([{}] * (len(data.users) + 1) if table is None
                      else [{k: str(v) for k, v in row.items()} for row in table.to_dict("records")])
        self.vectors = None
        if self.retrieval == "similar":
            self.vectors = recsys.embed_texts(self.retrieval_backbone, recsys.llm.render_items(data.catalog, "rella"),
                                              normalize=True, max_length=32)

    def wrap(self, text: str) -> str:
        """The text as the backbone reads it: in the chat template, or followed by ``Answer:``
        (causal LMs without one), or as is (encoders)."""
        if self.use_chat:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                      add_generation_prompt=True)
        return text + "\nAnswer:" if self.causal else text

    def __call__(self, batch: CTRBatch) -> list[str]:
        """B wrapped prompts, one per sample of the batch (history (B, L) -> K shown items)."""
        if self.titles is None or self.noun is None:
            raise RuntimeError("ReLLaPrompter.attach(data) must run before prompts are built")
        positions, valid = select_history(batch.history, batch.history_mask, batch.item, self.prompt_items,
                                          self.retrieval, self.vectors)  # (B, K) each
        items = batch.history.gather(1, positions).tolist()
        ratings = batch.history_rating.gather(1, positions).tolist()
        texts = []
        for row, (user, target) in enumerate(zip(batch.user.tolist(), batch.item.tolist())):
            shown = [(self.titles[i], r) for i, r, v in zip(items[row], ratings[row], valid[row].tolist()) if v]
            texts.append(self.wrap(PROMPTS[self.prompt](self.users[user], shown, self.titles[target], self.noun)))
        return texts
