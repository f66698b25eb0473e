"""Deterministic beam search: prompts -> de-duplicated candidate titles, best beam first.

BIGRec passes ``temperature=0`` with beam search; newer transformers, or a checkpoint's
``generation_config``, can switch sampling on, so a fresh config with ``do_sample=False``
is built here and nothing is inherited from the checkpoint.
"""

from __future__ import annotations

from typing import Sequence

import torch

from recsys_grounding.titles import clean_output, title_key


def beam_config(tokenizer, num_beams: int, num_return: int, max_new_tokens: int):
    from transformers import GenerationConfig

    if not 1 <= num_return <= num_beams:
        raise ValueError(f"num_return_sequences must be in 1..num_beams={num_beams}, got {num_return}")
    return GenerationConfig(
        do_sample=False, num_beams=num_beams, num_return_sequences=num_return, max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, early_stopping=True,
    )


@torch.no_grad()
def generate_titles(
    model, tokenizer, prompts: Sequence[str], num_beams: int = 4, num_return: int = 4, max_new_tokens: int = 64,
) -> list[list[str]]:
    """B prompts -> B lists of generated titles (quotes and whitespace stripped), best beam first.

    Prompts are left-padded, so every row's continuation starts at the same column and the
    model sees each prompt exactly as unpadded (positions follow the attention mask).
    Beams that normalise to the same title are kept once, at their best position; a row may
    therefore hold fewer than ``num_return`` titles.
    """
    config = beam_config(tokenizer, num_beams, num_return, max_new_tokens)
    device = next(model.parameters()).device
    encoded = tokenizer(list(prompts), padding=True, padding_side="left", return_tensors="pt").to(device)
    out = model.generate(**encoded, generation_config=config)
    texts = tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
    rows: list[list[str]] = []
    for row in range(len(prompts)):
        seen: set[str] = set()
        titles = []
        for text in texts[row * num_return:(row + 1) * num_return]:
            title = clean_output(text)
            if title_key(title) not in seen:
                seen.add(title_key(title))
                titles.append(title)
        rows.append(titles)
    return rows
