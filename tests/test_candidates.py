"""Evaluation among candidate lists (issue 21, item 1): lists drawn with a seed or read from a
file, bad files named by line, and ranks restricted to each window's list."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from recsys.data.atomic import DataFormatError
from recsys.data.candidates import CandidateLists
from recsys.data.datamodule import SeqDataModule
from recsys.metrics import keep_candidates, list_ranks


def module(tiny_path, **candidates) -> SeqDataModule:
    data = SeqDataModule(path=str(tiny_path), max_len=5, candidates=CandidateLists(**candidates))
    data.setup("test")
    return data


def test_drawn_lists_hold_the_target_once_and_nothing_the_user_saw(tiny_path):
    data = module(tiny_path, num=5, seed=3)
    for stage in ("val", "test"):
        batch = next(iter(data.val_dataloader() if stage == "val" else data.test_dataloader()))
        assert batch.candidates.shape == (len(batch.target), 5)
        positions = []
        for target, row, seen in zip(batch.target.tolist(), batch.candidates.tolist(), batch.seen):
            assert row.count(target) == 1 and len(set(row)) == 5 and 0 not in row
            assert not set(row) - {target} & set(seen.tolist())  # never an item seen before the target
            positions.append(row.index(target))
        assert len(set(positions)) > 1  # the target is not always in one place
    again = module(tiny_path, num=5, seed=3)
    assert torch.equal(next(iter(again.test_dataloader())).candidates, next(iter(data.test_dataloader())).candidates)
    other = module(tiny_path, num=5, seed=4)
    assert not torch.equal(next(iter(other.test_dataloader())).candidates, next(iter(data.test_dataloader())).candidates)


def test_ranks_are_among_the_candidates_only():
    """Scores rise with the item index; the target's rank is 1 + the candidates scored above it."""
    scores = torch.arange(11, dtype=torch.float).repeat(2, 1)  # items 1..10
    candidates = torch.tensor([[2, 9, 5, 0], [7, 3, 4, 1]])  # row 0 0-padded
    kept = keep_candidates(scores.clone(), candidates)
    assert kept[0].isfinite().nonzero().flatten().tolist() == [2, 5, 9]
    assert kept[1].isfinite().nonzero().flatten().tolist() == [1, 3, 4, 7]
    # a generative model's list, restricted the same way: item 10 (not a candidate) does not count
    ids = torch.tensor([[10, 9, 5, 2], [10, 7, 4, 3]])
    ranks = list_ranks(ids, torch.tensor([[4.0, 3, 2, 1], [4.0, 3, 2, 1]]), torch.tensor([5, 3]), None, 10,
                       candidates=candidates)
    assert ranks.tolist() == [2, 3]  # row 0: 9 above 5; row 1: 7 and 4 above 3
    assert list_ranks(ids, torch.tensor([[4.0, 3, 2, 1], [4.0, 3, 2, 1]]), torch.tensor([5, 3]), None, 10).tolist() == [3, 4]


def test_a_run_ranks_among_the_candidates(tiny_path, tmp_path):
    """With 5 candidates every target is within the top 5: hit@5 is 1 for any model."""
    from recsys.testing import run_cli

    cli = run_cli(["test", "--model=Pop", "--data=SeqDataModule", f"--data.path={tiny_path}",
                   '--data.candidates={"class_path": "recsys.CandidateLists", "init_args": {"num": 5}}',
                   f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false"])
    metrics = cli.trainer.callback_metrics
    assert metrics["test/hit@5"] == 1.0 and 0.2 < metrics["test/ndcg@5"] < 1.0


def write(tmp_path, text: str):
    path = tmp_path / "lists.txt"
    path.write_text(text)
    return str(path)


def test_lists_read_from_a_file(tiny_path, tmp_path):
    base = module(tiny_path, num=3, seed=0)
    users, targets = [], []
    for batch in base.test_dataloader():
        users += [base.data.users.token(int(u)) for u in batch.user]
        targets += [base.data.items.token(int(t)) for t in batch.target]
    others = [t for t in base.data.items.tokens[1:]]
    lines = ["# user items"] + [f"{u} {t} {' '.join(o for o in others[:3] if o != t)}" for u, t in zip(users, targets)]
    data = SeqDataModule(path=str(tiny_path), max_len=5,
                         candidates=CandidateLists(path=write(tmp_path, "\n".join(lines) + "\n")))
    data.setup("test")
    batch = next(iter(data.test_dataloader()))
    for user, target, row in zip(batch.user.tolist(), batch.target.tolist(), batch.candidates.tolist()):
        assert target in row and data.data.items.token(row[0]) == targets[users.index(data.data.users.token(user))]


@pytest.mark.parametrize("line, message", [
    ("nobody {item}", "lists.txt:2: unknown user id 'nobody'"),
    ("{user} no-such-item", "lists.txt:2: unknown item id 'no-such-item'"),
    ("{user} {item} {item}", "lists.txt:2: item id(s) ['{item}'] listed twice"),
    ("{user}", "lists.txt:2: user '{user}' has an empty list"),
])
def test_a_bad_list_file_names_its_line(tiny_path, tmp_path, line, message):
    base = module(tiny_path, num=3)
    user, item = base.data.users.token(1), base.data.items.token(1)
    path = write(tmp_path, "# header\n" + line.format(user=user, item=item) + "\n")
    data = SeqDataModule(path=str(tiny_path), max_len=5, candidates=CandidateLists(path=path))
    with pytest.raises(DataFormatError, match=re.escape(message.format(user=user, item=item))):
        data.setup("test")
        next(iter(data.test_dataloader()))


def test_a_list_without_its_target_or_a_missing_user_is_an_error(tiny_path, tmp_path):
    base = module(tiny_path, num=3)
    batch = next(iter(base.test_dataloader()))
    users = [base.data.users.token(int(u)) for u in batch.user]
    target = base.data.items.token(int(batch.target[0]))
    wrong = next(t for t in base.data.items.tokens[1:] if t != target)
    lines = [f"{users[0]} {wrong}"] + [f"{u} {base.data.items.token(int(t))}" for u, t in zip(users[1:], batch.target[1:])]
    path = write(tmp_path, "\n".join(lines) + "\n")
    data = SeqDataModule(path=str(tiny_path), max_len=5, candidates=CandidateLists(path=path))
    with pytest.raises(DataFormatError, match=f"lists.txt:1: the list of user '{users[0]}' does not hold its test target"):
        next(iter(data.test_dataloader()))
    lenient = SeqDataModule(path=str(tiny_path), max_len=5, candidates=CandidateLists(path=path, must_hold_target=False))
    assert next(iter(lenient.test_dataloader())).candidates.shape[0] == len(users)
    short = SeqDataModule(path=str(tiny_path), max_len=5, candidates=CandidateLists(path=write(tmp_path, lines[1] + "\n")))
    with pytest.raises(DataFormatError, match=r"no list for \d+ test user\(s\)"):
        next(iter(short.test_dataloader()))


def test_too_few_items_to_draw_from_is_an_error(tiny_path):
    with pytest.raises(DataFormatError, match="data.candidates.num is too large"):
        next(iter(module(tiny_path, num=10_000).test_dataloader()))
    with pytest.raises(ValueError, match="num must be >= 2"):
        CandidateLists(num=1)
    assert np.all(module(tiny_path, num=2).test_dataloader().dataset.candidates[:, :2] > 0)
