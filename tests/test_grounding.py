"""The core's exact-title grounder and the title key it shares with grounding plugins."""

from types import SimpleNamespace

import pytest

from recsys import ExactTitleGrounder, normalize_title


@pytest.mark.parametrize(("a", "b"), [
    ("Shining, The (1980)", "The Shining (1980)"),  # MovieLens writes the article last; LLMs write it first
    ("Shining, The (1980)", '"the shining (1980)"'),
    ("City of Lost Children, The (Cité des enfants perdus, La) (1995)",
     "The City of Lost Children (Cite des enfants perdus, La) (1995)"),
    ("Appartement, L' (1996)", "L'Appartement (1996)"),
    ("Big Sleep, The", "The Big Sleep"),
])
def test_titles_that_name_the_same_item_share_a_key(a, b):
    assert normalize_title(a) == normalize_title(b)


@pytest.mark.parametrize(("a", "b"), [
    ("Paris, Texas (1984)", "Texas Paris (1984)"),  # not an article: nothing moves
    ("Shining, The (1980)", "The Shining (1997)"),  # the year still tells items apart
    ("Englishman Who Went Up a Hill, But Came Down a Mountain, The (1995)",
     "But Came Down a Mountain Englishman Who Went Up a Hill (1995)"),
])
def test_different_titles_keep_different_keys(a, b):
    assert normalize_title(a) != normalize_title(b)


def test_exact_grounder_matches_the_article_first_form_and_keeps_duplicates():
    titles = ["", "Shining, The (1980)", "Toy Story (1995)", "Shining, The (1980)", "Shining, The (1997)"]
    grounder = ExactTitleGrounder().fit(SimpleNamespace(titles=titles))
    ids, scores = grounder.ground(["The Shining (1980)", "Unknown (2001)"], 3)
    assert ids.tolist() == [[1, 3, 0], [0, 0, 0]]
    assert scores.tolist() == [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
