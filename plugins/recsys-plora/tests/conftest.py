import numpy as np
import pandas as pd
import pytest

from recsys.pytest_plugin import *  # noqa: F403  (installed plugins kept out, isolated cache, tiny_path)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine, more threads make each
    small op wait on the others (20x slower here)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def write_ctr_fixture(root, users: int = 24, per_user: int = 14, items: int = 30, seed: int = 0):
    """A small rated dataset with user fields (the packaged tiny dataset has too few ratings per
    user for a global-time split with min_history 5). Users like items whose id shares their
    parity, so there is something to learn."""
    from recsys import write_dataset

    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, users + 1):
        chosen = rng.choice(np.arange(1, items + 1), size=per_user, replace=False)
        times = np.sort(rng.integers(0, 10_000, size=per_user))
        for i, t in zip(chosen, times):
            liked = (i % 2) == (u % 2)
            rating = int(rng.integers(4, 6) if liked else rng.integers(1, 4))
            rows.append((str(u), str(i), float(rating), float(t)))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    item = pd.DataFrame({"item_id": [str(i) for i in range(1, items + 1)],
                         "movie_title": [f"Movie {i}" for i in range(1, items + 1)],
                         "release_year": ["1995"] * items,
                         "class": ["Comedy" if i % 2 else "Drama" for i in range(1, items + 1)]})
    user = pd.DataFrame({"user_id": [str(u) for u in range(1, users + 1)],
                         "age": [str(20 + u % 5) for u in range(1, users + 1)],
                         "gender": ["M" if u % 2 else "F" for u in range(1, users + 1)],
                         "occupation": ["engineer" if u % 3 else "artist" for u in range(1, users + 1)]})
    return write_dataset(root / "ctr-tiny", inter, item, user,
                         types={"movie_title": "token_seq", "release_year": "token", "class": "token_seq"})


@pytest.fixture(scope="session")
def ctr_tiny(tmp_path_factory):
    return write_ctr_fixture(tmp_path_factory.mktemp("data"))


@pytest.fixture
def plora_plugin():
    import recsys_plora.plugin
    import recsys.testing

    with recsys.testing.registered(recsys_plora.plugin, "recsys-plora"):
        yield
