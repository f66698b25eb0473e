"""The default item text: ``title: ...; year: ...; genres: ...`` from whatever fields exist."""

from __future__ import annotations

from recsys.hookspecs import hookimpl

# Field name in the data -> label in the text, in the order they are written.
LABELS = {
    "title": "title", "movie_title": "title", "name": "title",
    "release_year": "year", "year": "year",
    "class": "genres", "genres": "genres",
    "categories": "categories", "brand": "brand", "description": "description",
}


@hookimpl(trylast=True)
def item_to_text(item, dataset):
    parts = []
    for field, label in LABELS.items():
        value = item.get(field)
        if value is not None and str(value).strip() and str(value) != "nan":
            parts.append(f"{label}: {str(value).strip()}")
    return "; ".join(parts) if parts else str(item.get("item_id", ""))


def default_text(item, dataset: str) -> str:
    """The ``default`` template: the ``item_to_text`` hook's answer (the first plugin's that is
    not None; this module's :func:`item_to_text` answers last), so a plugin can change it per dataset."""
    from recsys.plugins import pm

    text = pm.hook.item_to_text(item=dict(item), dataset=dataset)
    return "" if text is None else text


@hookimpl
def register_item_templates(register):
    from recsys.llm.templates import PRESETS

    register("default", default_text)
    for name, fn in PRESETS.items():
        register(name, fn)
