"""Titles as text on both sides of grounding, cleaned the same way (BIGRec strips quotes from both)."""

from __future__ import annotations

import re
import unicodedata


def clean_output(text: str) -> str:
    """A generated response -> the title it names: first line, surrounding whitespace and quotes removed."""
    text = text.strip().split("\n", 1)[0].strip()
    return text.strip('"').strip()


def title_key(text: str) -> str:
    """Case-, accent-, punctuation- and whitespace-insensitive form, for de-duplicating beams.

    The same normalisation as the core's exact-title grounder, so two beams that ground to the
    same items count once.
    """
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())
