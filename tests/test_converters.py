"""Raw-data converters on the hand-written fixtures in tests/fixtures/raw/<format>/.

Every fixture encodes the same 24 rows (one an exact duplicate): 7 users, 9 items. User 1
rated items 1, 3, 2, 4, 5 with items 3 and 2 tied in time (file order 3 before 2, kept); item 9
has a single rating, by user 7, who has one other rating, so ``k_core=2`` drops item 9 and
then user 7 (21 rows left).
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from recsys.data.atomic import DataFormatError, dataset_files, read_atomic
from recsys.data.converters import amazon, csv_pair, movielens

RAW = Path(__file__).parent / "fixtures" / "raw"
SCIENTIFIC = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon-scientific"
BASE = 880000000

AMAZON_USER = {u: f"A{u:02d}X7Q" for u in range(1, 8)}
AMAZON_ITEM = {i: f"B00000000{i}" for i in range(1, 10)}
# format -> (converter, options, user id of fixture user n, item id of fixture item n)
FORMATS = {
    "ml-100k": (movielens.convert_ml100k, {}, str, str),
    "ml-1m": (movielens.convert_ml1m, {}, str, str),
    "ml-latest": (movielens.convert_ml_latest, {}, str, str),
    "amazon-2014": (amazon.convert_amazon2014, {}, AMAZON_USER.get, AMAZON_ITEM.get),
    "amazon-2018": (amazon.convert_amazon2018, {}, AMAZON_USER.get, AMAZON_ITEM.get),
    "amazon-2023": (amazon.convert_amazon2023, {}, AMAZON_USER.get, AMAZON_ITEM.get),
    "csv": (csv_pair.convert, {"rating_col": "rating"}, "u{}".format, "m{}".format),
}
ITEM_COLUMNS = {
    "movielens": ["item_id", "movie_title", "release_year", "class"],
    "amazon": ["item_id", "title", "categories", "brand", "description"],
    "csv": ["item_id", "title", "genres"],
}


def family(name: str) -> str:
    return "movielens" if name.startswith("ml-") else "amazon" if name.startswith("amazon") else "csv"


def convert(name: str, out: Path, raw: Path | None = None, **options) -> dict[str, tuple[pd.DataFrame, dict]]:
    fn, defaults, _, _ = FORMATS[name]
    path = fn(raw or RAW / name, out, **{**defaults, **options})
    assert path == out
    return {kind: read_atomic(file) for kind, file in dataset_files(out).items()}


def items_by_id(files) -> dict[str, dict]:
    frame, _ = files["item"]
    return {row["item_id"]: row for row in frame.to_dict("records")}


# --------------------------------------------------------------------------- every format


@pytest.mark.parametrize("name", FORMATS)
def test_converts_fixture(name, tmp_path, caplog):
    _, _, uid, iid = FORMATS[name]
    with caplog.at_level(logging.WARNING):
        files = convert(name, tmp_path / name)
    assert "dropped 1 exact duplicate" in caplog.text

    inter, types = files["inter"]
    assert types == {"user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"}
    assert len(inter) == 23
    assert inter["user_id"].nunique() == 7 and inter["item_id"].nunique() == 9
    assert (inter["rating"].between(1, 5)).all()
    # sorted by (user, timestamp); equal timestamps keep the raw file's order (3 before 2)
    for _, group in inter.groupby("user_id", sort=False):
        assert group["timestamp"].is_monotonic_increasing
    assert inter["user_id"].is_monotonic_increasing
    user1 = inter[inter["user_id"] == uid(1)]
    assert list(user1["item_id"]) == [iid(i) for i in (1, 3, 2, 4, 5)]

    item, item_types = files["item"]
    assert list(item.columns) == ITEM_COLUMNS[family(name)]
    assert item_types["item_id"] == "token"
    assert len(item) == 9 and set(item["item_id"]) == set(inter["item_id"])


@pytest.mark.parametrize("name", FORMATS)
def test_filters(name, tmp_path):
    _, _, uid, iid = FORMATS[name]
    inter, _ = convert(name, tmp_path / "k", k_core=2)["inter"]
    assert len(inter) == 21
    assert uid(7) not in set(inter["user_id"]) and iid(9) not in set(inter["item_id"])
    assert inter["user_id"].value_counts().min() >= 2 and inter["item_id"].value_counts().min() >= 2
    files = convert(name, tmp_path / "r", min_rating=4)
    assert len(files["inter"][0]) == 12 and (files["inter"][0]["rating"] >= 4).all()
    assert set(files["item"][0]["item_id"]) == set(files["inter"][0]["item_id"])  # items pruned too
    inter, _ = convert(name, tmp_path / "h", max_history=2)["inter"]
    assert len(inter) == 14
    assert list(inter[inter["user_id"] == uid(1)]["item_id"]) == [iid(4), iid(5)]


@pytest.mark.parametrize("name", FORMATS)
def test_existing_output_is_left_intact(name, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        convert(name, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    convert(name, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "out.inter").exists()


def test_default_plugin_registers_every_converter():
    import recsys

    registered = {name: e.obj for name, e in recsys.get_datasets().items() if e.plugin == "recsys.default_plugins.datasets"}
    assert registered == {name: fn for name, (fn, *_rest) in FORMATS.items()}


@pytest.mark.parametrize("name", FORMATS)
def test_signature_parses_for_the_cli(name):
    from jsonargparse import ArgumentParser

    fn = FORMATS[name][0]
    assert fn.__doc__ and fn.__doc__.strip().split("\n\n")[0].count("\n") == 0  # one-paragraph summary
    parser = ArgumentParser(exit_on_error=False)
    parser.add_function_arguments(fn)
    cfg = parser.parse_args(["--raw", "in", "--out", "out", "--k_core", "5"])
    assert cfg.k_core == 5 and cfg.overwrite is False and cfg.min_rating is None


# --------------------------------------------------------------------------- MovieLens


def test_ml100k_items_and_users(tmp_path):
    files = convert("ml-100k", tmp_path / "ml")
    assert files["item"][1] == {"item_id": "token", "movie_title": "token_seq", "release_year": "token", "class": "token_seq"}
    items = items_by_id(files)
    assert items["3"]["movie_title"] == "Café au Lait" and items["3"]["release_year"] == "1993"  # latin-1 decoded
    assert items["1"]["class"] == "Animation Children's Comedy"
    assert items["4"]["class"] == "Film-Noir" and items["4"]["release_year"] == "1950"
    assert items["6"]["movie_title"] == "unknown" and items["6"]["release_year"] == "" and items["6"]["class"] == "unknown"
    assert items["9"]["release_year"] == "1996"  # no year in the title: taken from the release date
    assert list(files["item"][0]["item_id"]) == [str(i) for i in range(1, 10)]  # u.item order
    user, types = files["user"]
    assert list(user.columns) == ["user_id", "age", "gender", "occupation", "zip_code"]
    assert len(user) == 7 and user.iloc[0].tolist() == ["1", "24", "M", "technician", "85711"]
    assert set(types.values()) == {"token"}


def test_ml100k_users_pruned_with_k_core(tmp_path):
    files = convert("ml-100k", tmp_path / "ml", k_core=2)
    assert set(files["user"][0]["user_id"]) == {str(u) for u in range(1, 7)}


def test_ml1m_items_and_users(tmp_path):
    files = convert("ml-1m", tmp_path / "ml")
    items = items_by_id(files)
    assert items["7"]["movie_title"] == "Misérables, Les" and items["7"]["class"] == "Drama War"
    assert items["8"]["class"] == "Action Adventure Romance Sci-Fi War" and items["8"]["release_year"] == "1977"
    user = files["user"][0]
    assert user.iloc[1].tolist() == ["2", "50", "F", "0", "94043"]  # GroupLens age/occupation codes


def test_ml_latest_items(tmp_path):
    files = convert("ml-latest", tmp_path / "ml")
    assert "user" not in files
    items = items_by_id(files)
    assert items["5"]["movie_title"] == "American President, The" and items["5"]["release_year"] == "1995"
    assert items["6"]["class"] == ""  # "(no genres listed)"
    assert items["9"]["movie_title"] == "Nadja" and items["9"]["release_year"] == ""
    inter = files["inter"][0]
    assert inter.loc[(inter["user_id"] == "2") & (inter["item_id"] == "7"), "rating"].item() == 4.5


@pytest.mark.parametrize(
    "title, expected",
    [
        ("Toy Story (1995)", ("Toy Story", "1995")),
        ("Babylon 5 (1994-1998) ", ("Babylon 5", "1994")),
        ("Fawlty Towers (1975\u20131979)", ("Fawlty Towers", "1975")),
        ("Ashes of Time Redux (Dung che sai duk) (1994)", ("Ashes of Time Redux (Dung che sai duk)", "1994")),
        ("1984 (1956)", ("1984", "1956")),
        ("Nadja", ("Nadja", "")),
    ],
)
def test_split_title(title, expected):
    assert movielens.split_title(title) == expected


def copy_raw(name: str, tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    shutil.copytree(RAW / name, raw)
    return raw


def test_ml100k_malformed_lines(tmp_path):
    raw = copy_raw("ml-100k", tmp_path)
    lines = (raw / "u.data").read_text().splitlines(keepends=True)
    (raw / "u.data").write_text("".join(lines[:2] + ["1\t7\tfive\t880000900\n"] + lines[2:]))
    with pytest.raises(DataFormatError, match=r"u\.data:3: field 'rating' is not a number: 'five'"):
        convert("ml-100k", tmp_path / "a", raw=raw)
    (raw / "u.data").write_text("".join(lines[:3] + ["1\t7\t5\t880000900\t9\n"] + lines[3:]))
    with pytest.raises(DataFormatError, match=r"u\.data.*line 4"):
        convert("ml-100k", tmp_path / "b", raw=raw)
    (raw / "u.data").write_text("".join(lines[:4] + ["1\t7\t5\n"] + lines[4:]))
    with pytest.raises(DataFormatError, match=r"u\.data:5: field 'timestamp' is missing"):
        convert("ml-100k", tmp_path / "c", raw=raw)
    (raw / "u.data").write_text("".join(lines))
    item_lines = (raw / "u.item").read_bytes().split(b"\n")
    item_lines[5] = item_lines[5].rsplit(b"|", 1)[0]
    (raw / "u.item").write_bytes(b"\n".join(item_lines))
    with pytest.raises(DataFormatError, match=r"u\.item:6: expected 24 '\|'-separated fields, found 23"):
        convert("ml-100k", tmp_path / "d", raw=raw)
    item_lines[5] = b"x6" + item_lines[6][1:]
    (raw / "u.item").write_bytes(b"\n".join(item_lines))
    with pytest.raises(DataFormatError, match=r"u\.item:6: movie id 'x6' is not an integer id"):
        convert("ml-100k", tmp_path / "d", raw=raw)
    (raw / "u.item").unlink()
    with pytest.raises(DataFormatError, match=r"u\.item: no such file"):
        convert("ml-100k", tmp_path / "e", raw=raw)
    assert not any(tmp_path.glob("[a-e]"))


def test_ml_latest_missing_column(tmp_path):
    raw = copy_raw("ml-latest", tmp_path)
    text = (raw / "ratings.csv").read_text()
    (raw / "ratings.csv").write_text(text.replace("userId,movieId,rating", "userId,movieId,score", 1))
    with pytest.raises(DataFormatError, match=r"ratings\.csv: no column 'rating' \(columns present: \['userId', 'movieId', 'score', 'timestamp'\]\)"):
        convert("ml-latest", tmp_path / "out", raw=raw)


def test_ml1m_malformed_movie_line(tmp_path):
    raw = copy_raw("ml-1m", tmp_path)
    with open(raw / "movies.dat", "ab") as f:
        f.write("10::No genres field\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"movies\.dat:10: expected MovieID::Title::Genres"):
        convert("ml-1m", tmp_path / "out", raw=raw)


# --------------------------------------------------------------------------- Amazon


def test_amazon_item_text(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        a14 = items_by_id(convert("amazon-2014", tmp_path / "a14"))
    assert "1 of 9 interacted items have no item data" in caplog.text
    assert "B0000000099" not in a14  # metadata of an item never reviewed
    assert a14["B000000008"] == {"item_id": "B000000008", "title": "", "categories": "", "brand": "", "description": ""}
    assert a14["B000000001"]["description"] == "A classic film & more."  # HTML stripped, entities decoded
    assert a14["B000000001"]["categories"] == "Toys & Games, Animation, Children's, Comedy, Movies"
    assert a14["B000000001"]["title"] == "Toy Story (1995)" and a14["B000000002"]["brand"] == ""

    a18 = items_by_id(convert("amazon-2018", tmp_path / "a18"))
    description = a18["B000000001"]["description"]
    assert description.startswith("Movie 1. Long text word") and 900 < len(description) <= 1000
    assert a18["B000000003"]["categories"] == "Toys & Games, Comedy" and a18["B000000003"]["brand"] == "Acme"
    short = items_by_id(convert("amazon-2018", tmp_path / "short", max_text_chars=20))
    assert short["B000000001"]["description"] == "Movie 1. Long text"

    files = convert("amazon-2023", tmp_path / "a23")
    a23 = items_by_id(files)
    assert a23["B000000001"]["brand"] == "Acme Store" and a23["B000000001"]["description"] == "Movie 1."
    assert a23["B000000003"]["description"] == "Feature one Feature two"  # no description: features
    assert a23["B000000003"]["categories"] == "Toys & Games"  # no categories: main_category
    inter = files["inter"][0]
    # parent_asin is the item; milliseconds become (fractional) seconds
    row = inter[(inter["user_id"] == "A03X7Q") & (inter["item_id"] == "B000000008")]
    assert row["timestamp"].item() == BASE + 160.25


def test_amazon_category_choice(tmp_path):
    raw = copy_raw("amazon-2014", tmp_path)
    shutil.copy(raw / "reviews_Toys_5.json.gz", raw / "reviews_Tools.json.gz")
    with pytest.raises(ValueError, match=r"several categories.*\['Tools', 'Toys_5'\]"):
        convert("amazon-2014", tmp_path / "out", raw=raw)
    with pytest.raises(ValueError, match=r"category 'Beauty' not found.*\['Tools', 'Toys_5'\]"):
        convert("amazon-2014", tmp_path / "out", raw=raw, category="Beauty")
    files = convert("amazon-2014", tmp_path / "toys", raw=raw, category="Toys")  # Toys -> Toys_5
    assert len(files["inter"][0]) == 23 and items_by_id(files)["B000000001"]["brand"] == "Acme"
    files = convert("amazon-2014", tmp_path / "tools", raw=raw, category="Tools")  # no meta_Tools: empty text
    assert len(files["item"][0]) == 9 and set(files["item"][0]["title"]) == {""}
    with pytest.raises(DataFormatError, match="no Amazon 2014 review file"):
        convert("amazon-2014", tmp_path / "out", raw=RAW / "amazon-2023")


def test_amazon_review_file_as_raw(tmp_path):
    files = convert("amazon-2023", tmp_path / "out", raw=RAW / "amazon-2023" / "Toys.jsonl.gz")
    assert len(files["inter"][0]) == 23 and items_by_id(files)["B000000001"]["title"] == "Toy Story (1995)"


def write_gz(path: Path, lines: list[bytes]) -> None:
    with gzip.open(path, "wb") as f:
        f.write(b"".join(line + b"\n" for line in lines))


def gz_lines(path: Path) -> list[bytes]:
    with gzip.open(path, "rb") as f:
        return f.read().splitlines()


@pytest.mark.parametrize("name, reviews", [("amazon-2018", "Toys_5.json.gz"), ("amazon-2023", "Toys.jsonl.gz")])
def test_amazon_truncated_gzip(name, reviews, tmp_path):
    raw = copy_raw(name, tmp_path)
    data = (raw / reviews).read_bytes()
    (raw / reviews).write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DataFormatError, match=rf"{reviews}:\d+: the gzip stream ends early") as info:
        convert(name, tmp_path / "out", raw=raw)
    assert "Traceback" not in str(info.value) and not (tmp_path / "out").exists()
    (raw / reviews).write_bytes(b"not gzip at all\n")
    with pytest.raises(DataFormatError, match=rf"{reviews}:1: cannot decompress"):
        convert(name, tmp_path / "out", raw=raw)


def test_amazon_malformed_lines(tmp_path):
    raw = copy_raw("amazon-2023", tmp_path)
    lines = gz_lines(raw / "Toys.jsonl.gz")
    write_gz(raw / "Toys.jsonl.gz", lines[:2] + [b'{"user_id": "A01X7Q", "parent_asin": '] + lines[2:])
    with pytest.raises(DataFormatError, match=r"Toys\.jsonl\.gz:3: not a JSON line"):
        convert("amazon-2023", tmp_path / "out", raw=raw)
    record = json.loads(lines[0])
    del record["rating"]
    write_gz(raw / "Toys.jsonl.gz", lines[:4] + [json.dumps(record).encode()] + lines[4:])
    with pytest.raises(DataFormatError, match=r"Toys\.jsonl\.gz:5: no field 'rating'"):
        convert("amazon-2023", tmp_path / "out", raw=raw)
    record["rating"] = "great"
    write_gz(raw / "Toys.jsonl.gz", [json.dumps(record).encode()] + lines)
    with pytest.raises(DataFormatError, match=r"Toys\.jsonl\.gz:1: field 'rating' is not a number: 'great'"):
        convert("amazon-2023", tmp_path / "out", raw=raw)
    write_gz(raw / "Toys.jsonl.gz", lines[:1] + [b"[1, 2]"])
    with pytest.raises(DataFormatError, match=r"Toys\.jsonl\.gz:2: expected a JSON object"):
        convert("amazon-2023", tmp_path / "out", raw=raw)


def test_amazon_2014_metadata_is_literal_not_code(tmp_path):
    raw = copy_raw("amazon-2014", tmp_path)
    meta = gz_lines(raw / "meta_Toys.json.gz")
    bad = b"{'asin': 'B000000004', 'title': __import__('os').getcwd()}"
    write_gz(raw / "meta_Toys.json.gz", meta[:3] + [bad] + meta[3:])
    with pytest.raises(DataFormatError, match=r"meta_Toys\.json\.gz:4: neither a JSON line nor a Python literal"):
        convert("amazon-2014", tmp_path / "out", raw=raw)
    # a broken line of an item nobody reviewed is skipped unparsed
    write_gz(raw / "meta_Toys.json.gz", meta[:3] + [b"{'asin': 'B0000000077', 'title': 'oops"] + meta[3:])
    assert len(convert("amazon-2014", tmp_path / "ok", raw=raw)["item"][0]) == 9


def test_amazon_progress_bar_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(amazon, "PROGRESS_BYTES", 0)  # every file counts as big: the bars are on
    assert len(convert("amazon-2018", tmp_path / "out")["inter"][0]) == 23  # and change nothing
    err = capsys.readouterr().err
    assert "Toys_5.json.gz" in err and "meta_Toys.json.gz" in err, err  # a bar per file was drawn


def test_clean_text_and_truncate():
    assert amazon.clean_text(["<div>Hello&nbsp;<i>world</i></div>", None, "  a\tb\n"]) == "Hello world a b"
    assert amazon.clean_text("&lt;b&gt;bold&lt;/b&gt; 5 &gt; 3") == "bold 5 > 3"
    assert amazon.clean_text("<br/>2 < 3 and 4 > 1<!-- x -->") == "2 < 3 and 4 > 1"
    assert amazon.truncate("aaaa bbbb cccc", 11) == "aaaa bbbb"
    assert amazon.truncate("abcdefghijkl", 5) == "abcde"
    assert amazon.category_text([["A", "B"], ["A", "C"]]) == "A, B, C"


# --------------------------------------------------------------------------- CSV pair


def test_csv_pair_details(tmp_path):
    files = convert("csv", tmp_path / "out")
    inter = files["inter"][0]
    assert list(inter.columns) == ["user_id", "item_id", "rating", "timestamp"]  # `split` dropped
    assert inter["timestamp"].iloc[0] == 1577836800 + 100  # 2020-01-01T00:01:40, naive = UTC
    items = items_by_id(files)
    assert items["m5"]["title"] == "American President, The (1995)"
    assert items["m1"]["genres"] == "Animation Children's Comedy"
    assert items["m8"]["title"] == "" and "m99" not in items
    no_rating = convert("csv", tmp_path / "plain", rating_col=None)
    assert list(no_rating["inter"][0].columns) == ["user_id", "item_id", "timestamp"]
    only_title = convert("csv", tmp_path / "title", text_cols=["title"])
    assert list(only_title["item"][0].columns) == ["item_id", "title"]


def test_csv_order_column_and_files(tmp_path):
    (tmp_path / "events.tsv").write_text(
        "who\twhat\tpos\tsplit\nb\tx\t1\ttrain\na\ty\t0\ttrain\na\tx\t1\ttest\nb\tz\t0\ttrain\n"
    )
    (tmp_path / "catalog.tsv").write_text("sku\tname\tprice\nx\tEx\t1.5\ny\tWhy\t2\nz\tZed\t00\n")
    files = csv_pair.convert(
        tmp_path / "events.tsv", tmp_path / "ds", user_col="who", item_col="what", order_col="pos",
        items="catalog.tsv", item_id_col="sku", sep="\t",
    )
    inter, types = read_atomic(files / "ds.inter")
    assert types == {"user_id": "token", "item_id": "token", "timestamp": "float"}
    assert inter.values.tolist() == [["a", "y", 0.0], ["a", "x", 1.0], ["b", "z", 0.0], ["b", "x", 1.0]]
    item, types = read_atomic(files / "ds.item")
    assert types == {"item_id": "token", "name": "token", "price": "token"}
    assert item.values.tolist() == [["x", "Ex", "1.5"], ["y", "Why", "2"], ["z", "Zed", "00"]]  # text kept verbatim


def test_csv_numeric_times_and_units(tmp_path):
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\n1,a,1600000000500\n1,b,1600000000000\n")
    out = csv_pair.convert(tmp_path, tmp_path / "ms", time_unit="ms")
    inter, _ = read_atomic(out / "ms.inter")
    assert inter["item_id"].tolist() == ["b", "a"] and inter["timestamp"].tolist() == [1600000000.0, 1600000000.5]
    assert not (tmp_path / "ms" / "ms.item").exists()  # no items.csv: no item file
    with pytest.raises(ValueError, match="time_unit"):
        csv_pair.convert(tmp_path, tmp_path / "bad", time_unit="days")


def test_csv_errors(tmp_path):
    with pytest.raises(DataFormatError, match=r"interactions\.csv: no column 'customer' \(columns present: \['user_id', 'item_id', 'rating', 'timestamp', 'split'\]\)"):
        convert("csv", tmp_path / "a", user_col="customer")
    with pytest.raises(DataFormatError, match=r"items\.csv: no column 'plot' \(columns present: \['item_id', 'title', 'genres'\]\)"):
        convert("csv", tmp_path / "b", text_cols=["title", "plot"])
    with pytest.raises(DataFormatError, match=r"items\.csv: no column 'sku'"):
        convert("csv", tmp_path / "c", item_id_col="sku")
    with pytest.raises(DataFormatError, match=r"no column 'timestamp'; name the time column"):
        convert("csv", tmp_path / "d", raw=SCIENTIFIC if SCIENTIFIC.is_dir() else _no_time_dir(tmp_path))
    with pytest.raises(ValueError, match="not both"):
        convert("csv", tmp_path / "e", time_col="timestamp", order_col="timestamp")
    raw = copy_raw("csv", tmp_path)
    lines = (raw / "interactions.csv").read_text().splitlines(keepends=True)
    (raw / "interactions.csv").write_text("".join(lines[:3] + ["u1,m9,3,yesterday,train\n"] + lines[3:]))
    with pytest.raises(DataFormatError, match=r"interactions\.csv:4: field 'timestamp' is neither a number nor an ISO 8601 date: 'yesterday'"):
        convert("csv", tmp_path / "f", raw=raw)
    (raw / "interactions.csv").write_text("".join(lines[:2] + [",m9,3,2020-01-01,train\n"] + lines[2:]))
    with pytest.raises(DataFormatError, match=r"interactions\.csv:3: field 'user_id' is missing"):
        convert("csv", tmp_path / "g", raw=raw)
    with pytest.raises(DataFormatError, match=r"nope\.csv: no such file"):
        convert("csv", tmp_path / "h", items="nope.csv")
    assert not any(tmp_path.glob("[a-h]"))


def _no_time_dir(tmp_path: Path) -> Path:
    raw = tmp_path / "notime"
    raw.mkdir()
    (raw / "interactions.csv").write_text("user_id,item_id,position\n1,a,0\n")
    return raw


@pytest.mark.skipif(not SCIENTIFIC.is_dir(), reason=f"{SCIENTIFIC} not present")
def test_csv_imports_amazon_scientific(tmp_path):
    out = csv_pair.convert(SCIENTIFIC, tmp_path / "amazon-scientific", order_col="position")
    inter, types = read_atomic(out / "amazon-scientific.inter")
    assert types == {"user_id": "token", "item_id": "token", "timestamp": "float"}
    assert (len(inter), inter["user_id"].nunique(), inter["item_id"].nunique()) == (19712, 2928, 1585)
    assert inter.groupby("user_id", sort=False)["timestamp"].apply(lambda s: s.is_monotonic_increasing).all()
    item, _ = read_atomic(out / "amazon-scientific.item")
    assert list(item.columns) == ["item_id", "title", "categories", "brand", "text"] and len(item) == 1585


def test_save_converted_matches_int_and_str_ids(tmp_path):
    from recsys.data.converters import save_converted

    inter = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 2, 10], "timestamp": [1.0, 1.0, 3.0]})
    item = pd.DataFrame({"item_id": ["2", "10"], "title": ["Two", "Ten"]})
    out = save_converted(tmp_path / "ds", inter, item)
    back, _ = read_atomic(out / "ds.item")
    assert sorted(back["item_id"]) == ["10", "2"]
    rows, _ = read_atomic(out / "ds.inter")
    assert rows["item_id"].tolist() == ["10", "2", "10"]  # the tie keeps the input's order


# --------------------------------------------------------------------------- the shared options


SHARED = ("out", "overwrite", "min_rating", "max_history", "k_core")


@pytest.mark.parametrize("name", FORMATS)
def test_readers_take_only_their_format_options(name):
    """``out``, ``overwrite`` and the filters are owned once (converters.common.converter)."""
    import inspect

    fn = FORMATS[name][0]
    own = list(inspect.signature(fn.read).parameters)
    assert own[0] == "raw" and not set(SHARED) & set(own)
    assert list(inspect.signature(fn).parameters) == ["raw", *SHARED, *own[1:]]
    assert all(f"    {option}: " in fn.__doc__ for option in SHARED)  # documented for --help, once
    assert not any(f"    {option}: " in fn.read.__doc__ for option in SHARED)


def test_third_party_converters_keep_the_contract(tmp_path, capsys):
    """``convert(raw, out, **options)`` registered through ``register_datasets``: a plain function
    and one built with ``converter`` both run under ``recsys convert`` with their options."""
    import recsys
    from recsys.cli import main
    from recsys.data.atomic import write_dataset
    from recsys.data.converters.common import Converted, converter
    from recsys.plugins import pm

    def plain(raw: Path, out: Path, *, overwrite: bool = False, stars: int = 1) -> Path:
        """Write one user's stars."""
        inter = pd.DataFrame({"user_id": ["u"] * stars, "item_id": [f"i{k}" for k in range(stars)],
                              "timestamp": [float(k) for k in range(stars)]})
        return write_dataset(out, inter, overwrite=overwrite)

    @converter
    def lines(raw: Path, *, sep: str = ",") -> Converted:
        """Read ``user<sep>item`` lines.

        Args:
            raw: The file.
            sep: The separator.
        """
        rows = [line.split(sep) for line in raw.read_text().split()]
        inter = pd.DataFrame({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                              "timestamp": [float(k) for k in range(len(rows))]})
        return Converted(inter, types={"timestamp": "float"}, source=raw)

    class Formats:
        __name__ = "formats"

        @recsys.hookimpl
        def register_datasets(self, register):
            register("plain", plain)
            register("lines", lines)

    raw = tmp_path / "raw.txt"
    raw.write_text("a;x\na;y\nb;x\nb;y\nb;z\n")
    pm.register(Formats(), name="formats")
    try:
        assert main(["convert", "plain", str(raw), str(tmp_path / "p"), "--stars=3"]) == 0
        assert len(read_atomic(tmp_path / "p" / "p.inter")[0]) == 3
        assert main(["convert", "lines", str(raw), str(tmp_path / "l"), "--sep=;", "--k_core=2"]) == 0
        inter, _ = read_atomic(tmp_path / "l" / "l.inter")
        assert sorted(inter["item_id"]) == ["x", "x", "y", "y"]  # the shared filter ran (z had one row)
        assert main(["convert", "lines", str(raw), str(tmp_path / "l"), "--sep=;"]) == 2  # out exists
        assert "already exists" in capsys.readouterr().err
    finally:
        pm.unregister(name="formats")
