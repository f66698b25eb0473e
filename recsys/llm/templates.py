"""Item text templates: how one catalog row becomes the text an LLM reads.

A template is a function ``(item: dict, dataset: str) -> str`` registered under a name through
``register_item_templates``; configs choose one by name. ``default`` is the
``item_to_text`` hook (so a plugin can change it per dataset), the others reproduce the
papers' formats. A plugin may register a template for one dataset only, which then wins
over the generic one of the same name for that dataset.

Datasets spell the same field differently (``movie_title`` + ``release_year`` in RecBole's
ML-100k, ``title`` in Amazon); :func:`item_fields` puts them in one shape first.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from recsys.data.catalog import Catalog

ItemTemplate = Callable[[Mapping[str, Any], str], str]

HLLM_PROMPT = "Compress the following sentence into embedding: "


def _clean(value: Any) -> str:
    if value is None:
        return ""
    text = str(value).strip()
    return "" if text.lower() in ("nan", "none", "<na>") else text


def item_fields(item: Mapping[str, Any]) -> dict[str, Any]:
    """One item row in a common shape.

    Returns ``title`` (with ``" (year)"`` appended when the year is a separate field, as
    MovieLens titles are usually written), ``year``, ``genres`` (a list), ``description``,
    ``brand`` and ``categories``; missing fields are ``""`` or ``[]``.
    """
    title = _clean(item.get("title") or item.get("movie_title") or item.get("name")) or _clean(item.get("item_id"))
    year = _clean(item.get("release_year") or item.get("year"))
    if year.endswith(".0"):
        year = year[:-2]
    if year and re.fullmatch(r"\d{4}", year) and not title.endswith(f"({year})"):
        title = f"{title} ({year})"
    genre_text = _clean(item.get("genres") or item.get("class"))
    genres = [g for g in re.split(r"[|,]\s*|\s+(?=[A-Z])", genre_text) if g] if genre_text else []
    return {
        "title": title,
        "year": year,
        "genres": genres,
        "description": _clean(item.get("description") or item.get("text")),
        "brand": _clean(item.get("brand")),
        "categories": _clean(item.get("categories")),
    }


def hllm_text(item: Mapping[str, Any], dataset: str = "") -> str:
    """HLLM: the prompt, then ``key: value`` pieces joined with no separator, as HLLM's code
    does (``"...embedding: title: Toy Story (1995)genres: Animation|Children's|Comedy"``)."""
    f = item_fields(item)
    pieces = [("title", f["title"]), ("genres", "|".join(f["genres"])),
              ("categories", f["categories"]), ("description", f["description"])]
    return HLLM_PROMPT + "".join(f"{key}: {value}" for key, value in pieces if value)


def bigrec_text(item: Mapping[str, Any], dataset: str = "") -> str:
    """BIGRec: the title in double quotes, as it appears in BIGRec's prompts and responses."""
    return f'"{item_fields(item)["title"]}"'


def title_text(item: Mapping[str, Any], dataset: str = "") -> str:
    """The title alone (LC-Rec embeds title and description separately and averages them)."""
    return item_fields(item)["title"]


def description_text(item: Mapping[str, Any], dataset: str = "") -> str:
    """The description, or the title when an item has none (LC-Rec's second field)."""
    f = item_fields(item)
    return f["description"] or f["title"]


def rella_text(item: Mapping[str, Any], dataset: str = "") -> str:
    """ReLLa/RecLoRA's item sentence used for semantic history retrieval. ReLLa keeps only the
    first genre; the wording follows ReLLa's "Here is a movie. Its title is ..." pattern."""
    f = item_fields(item)
    kind = "movie" if f["genres"] and f["year"] else "item"
    text = f"Here is a {kind}. Its title is {f['title']}."
    if f["genres"]:
        text += f" Its genre is {f['genres'][0]}."
    elif f["categories"]:
        text += f" Its category is {f['categories']}."
    return text


#: The built-in presets (registered by recsys' default plugin; ``default`` is added there).
PRESETS: dict[str, ItemTemplate] = {
    "hllm": hllm_text,
    "bigrec": bigrec_text,
    "title": title_text,
    "description": description_text,
    "rella": rella_text,
}


def render_item_text(template: str, item: Mapping[str, Any], dataset: str) -> str:
    """The text of one item under a named template (a dataset-specific one wins)."""
    return get_template(template, dataset)(item, dataset)


def render_items(catalog: Catalog, template: str = "default") -> list[str]:
    """Every catalog item's text under a named template: ``(N + 1)`` strings, ``[0] == ''``
    (the PAD item). A template registered for ``catalog.dataset`` wins over the generic one."""
    fn = get_template(template, catalog.dataset)
    return [""] + [fn(catalog.item(i), catalog.dataset) for i in range(1, len(catalog) + 1)]


def get_template(name: str, dataset: str) -> ItemTemplate:
    """The template function registered as ``name`` for ``dataset`` (or for every dataset)."""
    from recsys.plugins import get_item_templates

    templates = get_item_templates()
    for key in (f"{name}@{dataset}", name):
        if key in templates:
            return templates[key].obj
    available = sorted({k.split("@")[0] for k in templates})
    raise KeyError(f"unknown item template {name!r}; available: {available}")
