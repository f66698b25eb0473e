"""Titles as text on both sides of grounding, cleaned the same way (BIGRec strips quotes from both)."""

from __future__ import annotations

import recsys


def clean_output(text: str) -> str:
    """A generated response -> the title it names: first line, surrounding whitespace and quotes removed."""
    text = text.strip().split("\n", 1)[0].strip()
    return text.strip('"').strip()


def title_key(text: str) -> str:
    """Case-, accent-, punctuation- and whitespace-insensitive form, with a trailing article moved
    to the front ("Shining, The (1980)" = "The Shining (1980)"), for de-duplicating beams.

    The core's exact-title grounder uses the same key, so two beams that ground to the same items
    count once.
    """
    return recsys.normalize_title(text)
