import os

import pandas as pd
import pytest

from recsys.data.atomic import DataFormatError, dataset_files, infer_types, read_atomic, write_atomic, write_dataset
from recsys.data.embedded import recbole_example


def test_round_trip_keeps_values_and_types(tmp_path):
    frame = pd.DataFrame({
        "item_id": ["1", "2"], "title": ["Toy Story", "Tab\there and\nnewline"],
        "year": [1995.0, 1996.5], "genres": [["Animation", "Comedy"], ["Drama"]],
    })
    path = write_atomic(frame, tmp_path / "x.item", {"title": "token_seq", "year": "float"})
    header = path.read_text().splitlines()[0]
    assert header == "item_id:token\ttitle:token_seq\tyear:float\tgenres:token_seq"
    back, types = read_atomic(path)
    assert types == {"item_id": "token", "title": "token_seq", "year": "float", "genres": "token_seq"}
    assert back["title"].tolist() == ["Toy Story", "Tab here and newline"]
    assert back["year"].tolist() == [1995.0, 1996.5]
    assert back["genres"].tolist() == ["Animation Comedy", "Drama"]
    assert path.read_text().splitlines()[1].split("\t")[2] == "1995"  # integers stay integers


@pytest.mark.parametrize(
    "content, message",
    [
        ("user_id\titem_id:token\n1\t2\n", r"x\.inter:1: header field 1 'user_id' is not 'name:type'"),
        ("user_id:token\titem_id:int\n", r"unknown type 'int'"),
        ("user_id:token\trating:float\n1\t4\n2\tfive\n", r"x\.inter:3: field 'rating' is not a number: 'five'"),
        ("user_id:token\titem_id:token\n1\t2\n3\t4\t5\n", r"x\.inter: .*line 3"),
        ("", r"x\.inter:1: empty file"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "x.inter"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=message):
        read_atomic(path)


def test_non_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "x.item"
    path.write_bytes("item_id:token\ttitle:token_seq\n1\tCaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"x\.item.*not UTF-8"):
        read_atomic(path)


def test_failed_write_leaves_existing_file_intact(tmp_path, monkeypatch):
    path = write_atomic(pd.DataFrame({"a": ["1"]}), tmp_path / "x.inter")
    before = path.read_text()
    with pytest.raises(ValueError, match="'x'"):
        write_atomic(pd.DataFrame({"a": ["x"]}), path, {"a": "float"})  # not numeric: refused before writing
    assert path.read_text() == before

    # A write that dies once part of the rows are on disk (a full disk, a kill):
    def dies_mid_write(self, f, *args, **kwargs):
        f.write("2\n")
        raise OSError("No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", dies_mid_write)
    with pytest.raises(OSError, match="No space left on device"):
        write_atomic(pd.DataFrame({"a": ["2", "3"]}), path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.inter"]  # no temp file left behind


def test_write_dataset_is_atomic_and_never_overwrites_silently(tmp_path):
    inter = pd.DataFrame({"user_id": ["1"], "item_id": ["2"], "timestamp": [3]})
    out = write_dataset(tmp_path / "ds", inter)
    assert sorted(os.listdir(out)) == ["ds.inter"]
    with pytest.raises(FileExistsError, match="overwrite"):
        write_dataset(out, inter.assign(item_id=["9"]))
    assert read_atomic(out / "ds.inter")[0]["item_id"].tolist() == ["2"]
    write_dataset(out, inter.assign(item_id=["9"]), overwrite=True)
    assert read_atomic(out / "ds.inter")[0]["item_id"].tolist() == ["9"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_dataset_files_finds_the_inter_file(tmp_path, tiny_path):
    assert set(dataset_files(tiny_path)) == {"inter", "item", "user"}
    assert dataset_files(tiny_path / "tiny.inter")["item"].name == "tiny.item"
    with pytest.raises(DataFormatError, match="no such dataset"):
        dataset_files(tmp_path / "missing")


def test_reads_recboles_own_ml100k():
    try:
        path = recbole_example("ml-100k")
    except FileNotFoundError:
        pytest.skip("recbole is not installed")
    inter, types = read_atomic(path / "ml-100k.inter")
    assert len(inter) == 100_000 and types["timestamp"] == "float"
    item, types = read_atomic(path / "ml-100k.item")
    assert types["movie_title"] == "token_seq" and item["movie_title"].iloc[0] == "Toy Story"


def test_quotes_ids_and_names_that_recbole_would_misread(tmp_path):
    frame = pd.DataFrame({"item_id": ["1", "2"], "title": ['"Weird Al" Yankovic', 'say "hi"'],
                          "genres": [["Sci Fi", "Drama"], []]})
    path = write_atomic(frame, tmp_path / "x.item")
    back, types = read_atomic(path)
    assert back["title"].tolist() == ['"Weird Al" Yankovic', 'say "hi"']
    assert back["genres"].tolist() == ["Sci_Fi Drama", ""]  # a list item stays one token
    with pytest.raises(ValueError, match="reads back as missing"):
        write_atomic(pd.DataFrame({"item_id": ["1", "NA"]}), tmp_path / "y.item")
    with pytest.raises(ValueError, match="may not contain ':'"):
        write_atomic(pd.DataFrame({"item_id": ["1"], "size:cm": ["3"]}), tmp_path / "z.item")
    assert infer_types(pd.DataFrame({"user_id": [1], "rating": [4]})) == {"user_id": "token", "rating": "float"}
