"""BIGRec's instruction prompt and the token ids / labels of one training example.

The prompt is Alpaca's "instruction with input" template, as BIGRec writes it (the movie
wording by default). Prompt and response are tokenised separately and concatenated, so the
label mask is exact even where a tokenizer would merge the prompt's last characters with the
response's first ones (BPE never guarantees that the prompt tokenises as a prefix).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from recsys.llm import IGNORE_INDEX

#: Label value that the causal-LM loss ignores (an alias of ``recsys.llm.IGNORE_INDEX``).
IGNORE = IGNORE_INDEX

ALPACA_HEAD = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
)


@dataclass(frozen=True)
class Domain:
    """The words that change between BIGRec's datasets."""

    items: str  #: plural noun ("movies")
    item: str  #: singular noun ("movie")
    verb: str  #: what users did ("watched")


DOMAINS: dict[str, Domain] = {
    "movie": Domain("movies", "movie", "watched"),
    "game": Domain("video games", "video game", "played"),
    "item": Domain("items", "item", "interacted with"),
}


def render_prompt(history_titles: Sequence[str], domain: str = "movie") -> str:
    """BIGRec's prompt for a history of quoted titles (oldest first), ending where the response starts."""
    if domain not in DOMAINS:
        raise ValueError(f"prompt domain must be one of {sorted(DOMAINS)}, got {domain!r}")
    d = DOMAINS[domain]
    return (
        f"{ALPACA_HEAD}### Instruction:\n"
        f"Given a list of {d.items} the user has {d.verb} before, please recommend a new {d.item} "
        f"that the user likes to the user.\n\n"
        f"### Input:\nThe user has {d.verb} the following {d.items} before:{', '.join(history_titles)}\n \n\n"
        f"### Response:\n"
    )


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of a prompt, with the tokenizer's BOS when it adds one."""
    return tokenizer(prompt, add_special_tokens=True)["input_ids"]


def encode_example(
    tokenizer, prompt: str, response: str, train_on_inputs: bool = False, max_length: int = 512
) -> tuple[list[int], list[int]]:
    """(input ids, labels) of prompt + response + EOS.

    Labels are ``IGNORE`` over the prompt unless ``train_on_inputs`` (BIGRec's README setting,
    the Alpaca default). When the example is longer than ``max_length`` the prompt loses its
    oldest tokens (after BOS), so the response is always learned whole.
    """
    head = prompt_ids(tokenizer, prompt)
    tail = tokenizer(response, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is None:
        raise ValueError("the backbone's tokenizer has no EOS token: generation could not learn to stop")
    tail = tail + [tokenizer.eos_token_id]
    if len(tail) >= max_length:
        raise ValueError(f"a response of {len(tail)} tokens does not fit in max_length={max_length}")
    overflow = len(head) + len(tail) - max_length
    if overflow > 0:
        keep_bos = 1 if tokenizer.bos_token_id is not None and head[:1] == [tokenizer.bos_token_id] else 0
        head = head[:keep_bos] + head[keep_bos + overflow:]
    ids = head + tail
    labels = list(ids) if train_on_inputs else [IGNORE] * len(head) + tail
    return ids, labels


def collate_examples(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Tensor]:
    """Right-pad examples for training: ``input_ids``, ``attention_mask``, ``labels``, each (B, T)."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, lab) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(lab)] = torch.tensor(lab)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
