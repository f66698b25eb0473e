"""The embedding grounder and BIGRec's reweighting."""

import pytest
import torch

import recsys
import recsys.llm
from recsys_grounding import EmbeddingGrounder, minmax, reweight
from recsys_grounding.titles import clean_output


@pytest.fixture(scope="module")
def grounder(tiny_data):
    torch.manual_seed(0)
    encoder = recsys.TextEncoder("tiny-llama", pooling="last", trainable_layers=0)
    return EmbeddingGrounder(encoder, metric="l2").fit(tiny_data.catalog)


def test_registered_through_the_hook(grounding_plugin):
    grounders = recsys.get_grounders()
    assert grounders["EmbeddingGrounder"].obj is EmbeddingGrounder
    assert "ExactTitleGrounder" in grounders  # the core's, still there


def test_exact_titles_ground_to_their_items(grounder, tiny_data):
    titles = recsys.llm.render_items(tiny_data.catalog, "title")
    outputs = [titles[i] for i in range(1, len(titles))]
    ids, scores = grounder.ground(outputs, 3)
    assert ids[:, 0].tolist() == list(range(1, len(titles)))
    assert grounder.exact_match(outputs).all() and grounder.grounded(grounder.distances(outputs)).all()
    # quotes (BIGRec's responses) and case do not matter
    quoted = [f'"{titles[3].upper()}"', "  " + titles[5] + "\nand more"]
    assert grounder.ground(quoted, 1)[0][:, 0].tolist() == [3, 5]
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_duplicate_titles_ground_to_every_copy(tiny_data):
    """Two items with one title: both at distance 0, first by catalog order (not BIGRec's silent last-wins)."""
    catalog = tiny_data.catalog
    fields = catalog.fields.copy()
    fields.loc[7, fields.columns] = fields.loc[2, fields.columns].values
    dup = recsys.Catalog(catalog.dataset, catalog.vocab, fields, catalog.popularity)
    g = EmbeddingGrounder(recsys.TextEncoder("tiny-llama", pooling="last", trainable_layers=0)).fit(dup)
    title = recsys.llm.render_items(dup, "title")[2]
    ids, scores = g.ground([title], 4)
    assert ids[0, :2].tolist() == [2, 7] and scores[0, 0] == scores[0, 1] > scores[0, 2]  # tied, listed by id
    dist = g.distances([title])
    assert dist[0, 2] == dist[0, 7] == dist[0, 1:].min()
    ids, scores = g.rank(dist, 4, first=g.exact_hits([title]))
    assert ids[0, :2].tolist() == [2, 7] and scores[0, 0] == scores[0, 1] > scores[0, 2]


def test_equal_distances_get_equal_scores_and_exact_matches_come_first():
    inf = float("inf")
    dist = torch.tensor([[inf, 0.9, 0.2, 0.6, 0.2, 0.4]])
    g = EmbeddingGrounder.__new__(EmbeddingGrounder)  # rank() reads only its arguments
    ids, scores = g.rank(dist, 5)
    assert ids[0, :2].tolist() == [2, 4] and scores[0, 0] == scores[0, 1]  # a tie, for the engine to resolve
    # an exact title match (item 3) ranks before items nearer in the embedding space, even with
    # its distance lifted to the row's minimum (as distances() does) and after reweighting
    lifted = dist.clone()
    lifted[0, 3] = 0.2
    first = torch.zeros(1, 6, dtype=torch.bool)
    first[0, 3] = True
    popularity = torch.tensor([float("nan"), 1.0, 5.0, 0.0, 9.0, 2.0])
    for weights, gamma in ((None, 0.0), (popularity, 30.0)):
        ids, scores = g.rank(lifted, 5, weights, gamma, first=first)
        assert ids[0, 0] == 3 and scores[0, 0] > scores[0, 1]
    ids, scores = g.rank(lifted, 5, exclude=torch.tensor([[3]]), first=first)
    assert 3 not in ids[0].tolist()


def test_unknown_output_grounds_to_nearest_but_not_exactly(grounder):
    out = ["zzzz qqqq xyzzy"]
    ids, _ = grounder.ground(out, 5)
    assert (ids > 0).all() and len(set(ids[0].tolist())) == 5
    assert not grounder.exact_match(out).any()
    dist = grounder.distances(out)
    assert torch.equal(ids[0], torch.argsort(dist[0, 1:], stable=True, dim=0)[:5] + 1)


def test_exclusions_are_never_returned(grounder):
    dist = grounder.distances(["Alpha Quest (1991)", "Blue River (1992)"])
    exclude = torch.tensor([[0, 1, 4], [2, 3, 5]])
    ids, scores = grounder.rank(dist, 5, exclude=exclude)
    for row, banned in enumerate(exclude.tolist()):
        assert not set(ids[row].tolist()) & (set(banned) - {0})
    assert torch.isfinite(scores).all()


def test_minmax_rows():
    x = torch.tensor([[2.0, 4.0, 6.0], [1.0, 1.0, 1.0]])
    assert torch.allclose(minmax(x), torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.0, 0.0]]))
    out = minmax(x, torch.tensor([[True, True, False], [True, True, True]]))
    assert out[0, :2].tolist() == [0.0, 1.0] and out[0, 2] == float("inf")


def test_reweighting_with_gamma_zero_is_identity():
    torch.manual_seed(0)
    d = torch.rand(4, 30) * 5
    d[:, 0] = float("inf")
    w = torch.rand(4, 30)
    eligible = torch.isfinite(d)
    assert torch.equal(reweight(d, w, 0.0, eligible).argsort(dim=1, stable=True), d.argsort(dim=1, stable=True))
    assert torch.equal(reweight(d, None, 3.0, eligible), reweight(d, w, 0.0, eligible))


def test_reweighting_formula():
    d = torch.tensor([[1.0, 3.0, 5.0]])
    w = torch.tensor([[0.0, 10.0, 5.0]])  # min-maxed to 0, 1, 0.5
    got = reweight(d, w, 2.0)
    assert torch.allclose(got, torch.tensor([[0.0, 0.5 * 2.0 ** -2, 1.0 * 1.5 ** -2]]))


def test_rank_one_never_changes_but_lower_ranks_can(grounder):
    """BIGRec's property: the nearest eligible item has D̂ = 0, so reweighting keeps it first,
    with or without exclusions; popularity can re-order everything below it."""
    torch.manual_seed(1)
    dist = grounder.distances(["Alpha Quest (1991)", "nothing like a title", "Kings Road (2001)"])
    exclude = torch.tensor([[0, 0], [0, 0], [0, 11]])  # Kings Road is item 11: its row's nearest is excluded
    base, _ = grounder.rank(dist, 14, exclude=exclude)
    changed = False
    for gamma in (0.5, 5.0, 50.0):
        for w in (torch.rand(16), torch.rand(3, 16) * 100):
            ids, _ = grounder.rank(dist, 14, weights=w, gamma=gamma, exclude=exclude)
            assert torch.equal(ids[:, 0], base[:, 0])
            changed |= not torch.equal(ids[:, 1:], base[:, 1:])
    assert changed, "reweighting never re-ordered a lower rank: the weights are not applied"


def test_strong_popularity_pulls_popular_items_up(grounder):
    dist = grounder.distances(["nothing like a title"])
    pop = torch.zeros(16)
    pop[0] = float("nan")
    base, _ = grounder.rank(dist, 15)
    favourite = int(base[0, -1])  # the farthest item
    pop[favourite] = 100.0
    ids, _ = grounder.rank(dist, 15, weights=pop, gamma=60.0)
    assert int(ids[0, 1]) == favourite  # second now (rank 1 is fixed)


def test_clean_output():
    assert clean_output('  "Heat (1995)"\n### extra') == "Heat (1995)"
    assert clean_output("Heat") == "Heat"
