"""Rendering a catalog as text: ``recsys.llm.render_items``, the ``default`` template (the
``item_to_text`` hook), and the deprecated ``Catalog.render`` shim."""

from __future__ import annotations

import pytest
from fake_models import Wordy

from recsys.llm import render_items
from recsys.plugins import pm


def test_default_template_is_the_item_to_text_hook(tiny_data):
    before = render_items(tiny_data.catalog)
    assert before[0] == "" and len(before) == len(tiny_data.catalog) + 1
    assert before[1] == "title: Alpha Quest; year: 1991; genres: Action"
    pm.register(Wordy(), name="wordy")
    try:
        assert render_items(tiny_data.catalog, "default")[1] == "[tiny] Alpha Quest"
    finally:
        pm.unregister(name="wordy")
    assert render_items(tiny_data.catalog) == before


def test_catalog_render_is_a_deprecated_shim(tiny_data):
    with pytest.warns(DeprecationWarning, match="render_items"):
        texts = tiny_data.catalog.render("bigrec")
    assert texts == render_items(tiny_data.catalog, "bigrec")


def test_catalog_has_no_text_members_of_its_own(tiny_data):
    """Text is the templates' job; the catalog is data (tests/test_layering.py)."""
    assert not hasattr(tiny_data.catalog, "text") and not hasattr(tiny_data.catalog, "texts")
