"""Item-embedding shards: a predict run writes them, resumes after a kill, and an index serves them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from recsys.data.atomic import DataFormatError
from recsys.index import ItemIndex
from recsys.llm.templates import render_items
from recsys.shards import (
    ItemShardDataModule,
    ShardWriter,
    TextItemEmbedder,
    complete_shards,
    load_shards,
    read_manifest,
)

ROOT = Path(__file__).resolve().parents[1]
DIM = 8


def expected_vectors(num_items: int) -> np.ndarray:
    """(N, DIM) the fake embedder's vectors of items 1..N."""
    ids = torch.arange(1, num_items + 1, dtype=torch.float32)[:, None]
    return torch.sin(ids * torch.arange(1, DIM + 1) / 7).numpy()


class FakeEmbedder(pl.LightningModule):
    """Item ids (B,) -> (B, DIM) deterministic vectors; counts the items it embedded."""

    def __init__(self):
        super().__init__()
        self.seen: list[int] = []

    def predict_step(self, batch, batch_idx=0):
        self.seen.extend(batch.tolist())
        return torch.sin(batch.float()[:, None] * torch.arange(1, DIM + 1) / 7)


def predict(directory: Path, num_items: int, shard_size: int, batch_size: int = 7, model=None):
    model = model or FakeEmbedder()
    trainer = pl.Trainer(callbacks=[ShardWriter(str(directory))], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.predict(model, ItemShardDataModule(str(directory), num_items=num_items, shard_size=shard_size,
                                               batch_size=batch_size), return_predictions=False)
    return model


def test_predict_writes_fixed_size_shards_and_the_index_serves_them(tmp_path):
    predict(tmp_path, num_items=50, shard_size=16)  # batches of 7 straddle shard boundaries
    manifest = read_manifest(tmp_path)
    assert manifest["num_items"] == 50 and manifest["dim"] == DIM and manifest["shard_size"] == 16
    assert [manifest["shards"][str(k)]["rows"] for k in range(4)] == [16, 16, 16, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", *[f"shard-0000{k}.npy" for k in range(4)]]
    np.testing.assert_array_equal(load_shards(tmp_path), expected_vectors(50))

    queries = np.random.default_rng(0).standard_normal((5, DIM)).astype(np.float32)
    exact = ItemIndex(expected_vectors(50), kind="flat")
    expected_scores, expected_ids = exact.search(queries, 5)
    # the exact answer from the fake embedder's formula, not from any shard
    brute = torch.from_numpy(queries @ expected_vectors(50).T).topk(5, dim=1)
    assert torch.equal(expected_ids, brute.indices + 1)
    for kind in ("flat", "ivf", "hnsw"):
        # small enough that the approximate indexes search exhaustively: IVF probes both of its
        # lists, HNSW's efSearch (128) exceeds the 50 items; each must give the exact answer
        index = ItemIndex.from_shards(tmp_path, kind=kind, nlist=2, nprobe=2)
        assert len(index) == 50 and index.kind == kind
        scores, ids = index.search(queries, 5)
        assert torch.equal(ids, expected_ids), kind
        assert torch.allclose(scores, expected_scores, atol=1e-5), kind
    cosine = ItemIndex.from_shards(tmp_path, metric="cosine", kind="flat")
    assert torch.equal(cosine.search(queries, 5)[1], ItemIndex(expected_vectors(50), metric="cosine").search(queries, 5)[1])


def test_a_killed_run_leaves_no_acceptable_half_shard_and_a_rerun_resumes(tmp_path, monkeypatch):
    """Writing shard 2 dies halfway (in-process stand-in for a kill); leftovers as a SIGKILL would
    leave them are added by hand. Readers refuse the catalog; a rerun embeds only shards 2 and 3."""
    from recsys import shards

    real_save = np.save

    def dies_halfway(f, array, allow_pickle=False):
        if array.shape[0] == 16 and np.allclose(array[0], expected_vectors(33)[32]):  # shard 2 starts at item 33
            f.write(b"\x93NUMPY" + b"\0" * 50)
            raise RuntimeError("killed while writing shard 2")
        return real_save(f, array, allow_pickle=allow_pickle)

    monkeypatch.setattr(shards.np, "save", dies_halfway)
    with pytest.raises(RuntimeError, match="killed while writing shard 2"):
        predict(tmp_path, num_items=50, shard_size=16)
    monkeypatch.setattr(shards.np, "save", real_save)
    assert complete_shards(tmp_path) == {0, 1}
    # What a SIGKILL could leave besides: a temp file mid-write, and a shard renamed into place
    # just before the kill, not yet in the manifest.
    (tmp_path / ".shard-00003.npy.abc.tmp").write_bytes(b"\x93NUMPY partial")
    (tmp_path / "shard-00002.npy").write_bytes((tmp_path / "shard-00001.npy").read_bytes())
    assert complete_shards(tmp_path) == {0, 1}
    with pytest.raises(DataFormatError, match=r"shard-00002\.npy: shard 2 of 4 is not finished"):
        load_shards(tmp_path)
    with pytest.raises(DataFormatError, match="shard-00002"):
        ItemIndex.from_shards(tmp_path)

    model = predict(tmp_path, num_items=50, shard_size=16)
    assert sorted(model.seen) == list(range(33, 51))  # only the missing shards
    np.testing.assert_array_equal(load_shards(tmp_path), expected_vectors(50))


def test_a_changed_shard_is_refused_by_size_or_checksum(tmp_path):
    predict(tmp_path, num_items=20, shard_size=8)
    path = tmp_path / "shard-00001.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match=r"shard-00001\.npy: checksum differs"):
        load_shards(tmp_path)
    path.write_bytes(bytes(data[:-4]))
    with pytest.raises(DataFormatError, match=r"shard-00001\.npy: missing or not the size"):
        load_shards(tmp_path, verify=False)
    assert complete_shards(tmp_path) == {0, 2}


def test_resuming_with_another_shard_size_is_refused(tmp_path):
    predict(tmp_path, num_items=20, shard_size=8)
    with pytest.raises(ValueError, match="holds shards of 8 rows for 20 items"):
        predict(tmp_path, num_items=20, shard_size=10)
    with pytest.raises(DataFormatError, match="no manifest.json"):
        load_shards(tmp_path / "elsewhere")


def test_text_embeddings_of_a_catalog_through_predict(tmp_path):
    data = ItemShardDataModule(str(tmp_path), path=str(ROOT / "data" / "tiny"), shard_size=4, batch_size=3)
    model = TextItemEmbedder("tiny-bert", template="default", max_length=16)
    trainer = pl.Trainer(callbacks=[ShardWriter(str(tmp_path))], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.predict(model, data, return_predictions=False)
    texts = render_items(data.catalog, "default")[1:]
    vectors = load_shards(tmp_path)
    assert vectors.shape == (len(texts), model.encoder.dim)
    expected = model.encoder.encode(texts, progress=False, cache=False).numpy()
    np.testing.assert_allclose(vectors, expected, atol=1e-5)


KILLED_RUN = """
import os, signal, sys
import numpy as np
sys.path.insert(0, {tests!r})
import recsys.shards as shards
from test_shards import predict

real_save = np.save
count = [0]
def save(f, array, allow_pickle=False):
    count[0] += 1
    if count[0] == 3:  # the third shard: half its bytes reach the disk, then the process is killed
        f.write(b"\\x93NUMPY" + b"\\0" * 100)
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(f, array, allow_pickle=allow_pickle)
shards.np.save = save
predict({out!r}, num_items=50, shard_size=16)
"""


@pytest.mark.slow
def test_a_sigkilled_run_leaves_no_acceptable_half_shard(tmp_path):
    """A real SIGKILL in the middle of writing the third shard (a subprocess)."""
    script = textwrap.dedent(KILLED_RUN).format(tests=str(Path(__file__).parent), out=str(tmp_path / "shards"))
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    out = tmp_path / "shards"
    assert any(p.name.endswith(".tmp") for p in out.iterdir()), "the kill should have left the temp file"
    assert complete_shards(out, verify=True) == {0, 1}
    with pytest.raises(DataFormatError, match="shard 2 of 4 is not finished"):
        load_shards(out)
    predict(out, num_items=50, shard_size=16)
    np.testing.assert_array_equal(load_shards(out), expected_vectors(50))
    assert json.loads((out / "manifest.json").read_text())["shards"].keys() == {"0", "1", "2", "3"}


def test_recsys_embed_items_writes_and_resumes_shards(tmp_path, caplog):
    from recsys.cli import main

    args = ["embed-items", f"--data.shard_dir={tmp_path}", f"--data.path={ROOT / 'data' / 'tiny'}", "--data.shard_size=4",
            "--model.backbone=tiny-bert", "--model.max_length=16", "--trainer.enable_progress_bar=false"]
    assert main(args) == 0
    first = load_shards(tmp_path)
    manifest = read_manifest(tmp_path)
    assert first.shape[0] == manifest["num_items"] and len(manifest["shards"]) == -(-first.shape[0] // 4)
    del manifest["shards"]["1"]  # as if the run had died before finishing shard 1
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level("INFO", logger="recsys.shards"):
        assert main(args) == 0
    assert f"{first.shape[0] - 4} items already in complete shards" in caplog.text
    np.testing.assert_allclose(load_shards(tmp_path), first, atol=1e-6)
