"""LC-Rec's tasks as token-id samples: (prompt ids, response ids), never re-tokenised together,
and :func:`collate`, which lays samples out as one batch.

A prompt is written as segments: text (tokenised alone) and code-token ids (used as they
are). The response is tokenised separately and appended, so the labels are exactly the
response's tokens: no assumption that a prompt tokenises as a prefix of prompt + response.

Tasks (each switchable): ``seqrec`` (history codes -> next codes), ``item2index`` (title ->
codes), ``index2item`` (codes -> title), ``fusion`` (history titles -> next codes, and
history codes -> next title). The wording is ours (LC-Rec draws among 12-19 templates per
task; we keep a few, drawn at random per training sample; evaluation uses the first).
"""

from __future__ import annotations

from typing import Callable, Sequence, TypedDict, Union

import torch
from torch import Tensor

Segment = Union[str, list[int]]

#: the label of a token that is not learned (cross-entropy's ignore_index)
IGNORE = -100

#: The Alpaca wrapper LC-Rec uses around every instruction.
ALPACA_HEAD = ("Below is an instruction that describes a task. Write a response that appropriately "
               "completes the request.\n\n### Instruction:\n")
ALPACA_TAIL = "\n\n### Response:"

TASKS = ("seqrec", "item2index", "index2item", "fusion")

SEQREC = [
    ("The user has interacted with these items, in order: ", ". Which item will the user choose next?"),
    ("Here is a user's history of items: ", ". Predict the next item the user will interact with."),
    ("Given the items a user picked so far, ", ", recommend the item they will pick next."),
]
ITEM2INDEX = [
    ("Which item is titled \"", "\"?"),
    ("Give the index of the item called ", "."),
]
INDEX2ITEM = [
    ("What is the title of item ", "?"),
    ("Tell me the title of the item with index ", "."),
]
FUSION_TITLES = [
    ("A user has interacted with items titled: ", ". Which item will they choose next?"),
]
FUSION_CODES = [
    ("A user has interacted with these items: ", ". What is the title of the item they will choose next?"),
]


class PromptBuilder:
    """Turns task inputs into (prompt ids, response ids).

    text_ids: str -> token ids (None: a code-only vocabulary, TIGER-style; only ``seqrec``
        then exists and the prompt is the history codes after ``bos``).
    eos: appended to text responses (code responses have a fixed length and need none).
    """

    def __init__(self, text_ids: Callable[[str], list[int]] | None, bos: int | None, eos: int | None):
        self.text_ids, self.bos, self.eos = text_ids, bos, eos
        self._text_cache: dict[str, list[int]] = {}

    def _text(self, text: str) -> list[int]:
        assert self.text_ids is not None, "id-only prompts have no text"
        ids = self._text_cache.get(text)
        if ids is None:
            ids = self._text_cache[text] = list(self.text_ids(text))
        return ids

    def render(self, segments: Sequence[Segment]) -> list[int]:
        """Segments -> ids; instruction prompts are wrapped in the Alpaca template."""
        if self.text_ids is None:
            ids = [self.bos] if self.bos is not None else []
            for segment in segments:
                if isinstance(segment, str):
                    raise TypeError(f"an id-only prompt (no text tokenizer) got text: {segment!r}")
                ids.extend(segment)
            return ids
        ids = self._text(ALPACA_HEAD)
        for segment in segments:
            ids = ids + (self._text(segment) if isinstance(segment, str) else list(segment))
        return ids + self._text(ALPACA_TAIL)

    def response_text(self, text: str) -> list[int]:
        # A leading space: the response starts a new word after "Response:" in BPE vocabularies.
        return self._text(" " + text) + ([self.eos] if self.eos is not None else [])

    @staticmethod
    def _join(codes: Sequence[list[int]]) -> list[int]:
        return [t for item in codes for t in item]

    def seqrec(self, history: Sequence[list[int]], target: list[int], template: int = 0) -> tuple[list[int], list[int]]:
        """history: code-token ids of each earlier item (oldest first); target: the next item's."""
        if self.text_ids is None:
            return self.render([self._join(history)]), list(target)
        head, tail = SEQREC[template % len(SEQREC)]
        return self.render([head, self._join(history), tail]), list(target)

    def item2index(self, title: str, codes: list[int], template: int = 0) -> tuple[list[int], list[int]]:
        head, tail = ITEM2INDEX[template % len(ITEM2INDEX)]
        return self.render([head + title + tail]), list(codes)

    def index2item(self, codes: list[int], title: str, template: int = 0) -> tuple[list[int], list[int]]:
        head, tail = INDEX2ITEM[template % len(INDEX2ITEM)]
        return self.render([head, codes, tail]), self.response_text(title)

    def fusion_titles(self, titles: Sequence[str], target: list[int], template: int = 0) -> tuple[list[int], list[int]]:
        head, tail = FUSION_TITLES[template % len(FUSION_TITLES)]
        return self.render([head + "; ".join(titles) + tail]), list(target)

    def fusion_codes(self, history: Sequence[list[int]], title: str, template: int = 0) -> tuple[list[int], list[int]]:
        head, tail = FUSION_CODES[template % len(FUSION_CODES)]
        return self.render([head, self._join(history), tail]), self.response_text(title)


class Collated(TypedDict):
    """What :func:`collate` returns (B samples, P prompt and R response positions)."""

    input_ids: Tensor  # (B, P + R)
    attention_mask: Tensor  # (B, P + R)
    position_ids: Tensor  # (B, P + R)
    labels: Tensor  # (B, R)
    response_length: int  # R


def collate(samples: Sequence[tuple[list[int], ...]], pad_id: int) -> Collated:
    """(prompt, response[, labels]) id lists -> one batch laid out as [pad.. prompt | response ..pad].

    ``labels`` (as long as the response, IGNORE where a token is not learned) defaults to the
    response itself. Returns input_ids and attention_mask (B, P + R), position_ids counting real
    tokens from 0, labels (B, R) (IGNORE at response padding) and ``response_length`` R. The
    logits that predict the response are those at positions P - 1 .. P + R - 2, i.e. the last
    R + 1 positions without the final one.
    """
    p = max(len(sample[0]) for sample in samples)
    r = max(len(sample[1]) for sample in samples)
    ids = torch.full((len(samples), p + r), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full((len(samples), r), IGNORE, dtype=torch.long)
    for row, (prompt, response, *targets) in enumerate(samples):
        ids[row, p - len(prompt):p] = torch.tensor(prompt, dtype=torch.long)
        mask[row, p - len(prompt):p] = 1
        if response:
            ids[row, p:p + len(response)] = torch.tensor(response, dtype=torch.long)
            mask[row, p:p + len(response)] = 1
            labels[row, :len(response)] = torch.tensor(targets[0] if targets else response, dtype=torch.long)
    positions = (mask.cumsum(1) - 1).clamp_min(0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "labels": labels,
            "response_length": r}
