"""Bad input, one table: every converter, the atomic loader and the CLI's configuration.

Each case builds a broken input from the good fixtures in ``tests/fixtures/raw`` (or writes a
small atomic dataset) and states what a user must see:

- ``error``: a clear error, i.e. our exception type (or, through ``recsys``, a non-zero exit
  whose last stderr line is one ``recsys: error: ...`` line, no traceback) whose message
  contains every ``expect`` fragment (the file, and the line or field);
- ``skip``: the documented behaviour is to keep going; the run succeeds and a log record
  counts what was skipped or kept (every ``expect`` fragment in one record).

``benchmarks/reliability_bad_input.py`` runs the same table and counts clear outcomes.
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import io
import logging
import shutil
import sys
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

RAW = Path(__file__).parent / "fixtures" / "raw"

Build = Callable[[Path], "list[str] | Callable[[], object]"]


@dataclass(frozen=True)
class Case:
    id: str
    build: Build  #: tmp dir -> argv for ``recsys`` (run in process) or a callable
    expect: tuple[str, ...]  #: fragments of the error message (or of one log record for a skip)
    skip: bool = False  #: documented behaviour: succeed and log a count


@dataclass
class Outcome:
    clear: bool
    detail: str


# --------------------------------------------------------------------------- building inputs


def raw_copy(tmp: Path, fmt: str) -> Path:
    target = tmp / "raw" / fmt
    shutil.copytree(RAW / fmt, target)
    return target


def read_lines(path: Path) -> list[bytes]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.splitlines(keepends=True)


def write_lines(path: Path, lines: list[bytes]) -> None:
    data = b"".join(lines)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def edit(path: Path, fn: Callable[[list[bytes]], list[bytes]]) -> None:
    write_lines(path, fn(read_lines(path)))


def replace_line(number: int, new: bytes) -> Callable[[list[bytes]], list[bytes]]:
    """Replace file line ``number`` (1-based) with ``new``."""
    return lambda lines: lines[: number - 1] + [new.rstrip(b"\n") + b"\n"] + lines[number:]


def insert_line(number: int, new: bytes) -> Callable[[list[bytes]], list[bytes]]:
    return lambda lines: lines[: number - 1] + [new.rstrip(b"\n") + b"\n"] + lines[number - 1:]


def append(new: bytes) -> Callable[[list[bytes]], list[bytes]]:
    return lambda lines: lines + [new.rstrip(b"\n") + b"\n"]


#: converter -> (raw interactions file, item file, options on the command line)
FORMATS = {
    "ml-100k": ("u.data", "u.item", []),
    "ml-1m": ("ratings.dat", "movies.dat", []),
    "ml-latest": ("ratings.csv", "movies.csv", []),
    "amazon-2014": ("reviews_Toys_5.json.gz", "meta_Toys.json.gz", []),
    "amazon-2018": ("Toys_5.json.gz", "meta_Toys.json.gz", []),
    "amazon-2023": ("Toys.jsonl.gz", "meta_Toys.jsonl.gz", []),
    "csv": ("interactions.csv", "items.csv", ["--rating_col=rating"]),
}


def converted(fmt: str, change: Callable[[Path], None], *options: str) -> Build:
    """A case that copies ``fmt``'s fixture, applies ``change(raw_dir)`` and runs ``recsys convert``."""

    def build(tmp: Path) -> list[str]:
        raw = raw_copy(tmp, fmt)
        change(raw)
        return ["convert", fmt, str(raw), str(tmp / "out"), *FORMATS[fmt][2], *options]

    return build


def on(name: str, fn: Callable[[list[bytes]], list[bytes]]) -> Callable[[Path], None]:
    return lambda raw: edit(raw / name, fn)


def truncate_gzip(name: str) -> Callable[[Path], None]:
    def change(raw: Path) -> None:
        data = (raw / name).read_bytes()
        (raw / name).write_bytes(data[: len(data) * 2 // 3])

    return change


def gzip_csv(raw: Path) -> None:
    """interactions.csv -> interactions.csv.gz, cut short."""
    data = gzip.compress((raw / "interactions.csv").read_bytes() * 50)
    (raw / "interactions.csv").unlink()
    (raw / "interactions.csv.gz").write_bytes(data[: len(data) // 2])


def delete(name: str) -> Callable[[Path], None]:
    return lambda raw: (raw / name).unlink()


def json_line(**record) -> bytes:
    import json

    return json.dumps(record).encode()


# --------------------------------------------------------------------------- the converter cases

CASES: list[Case] = []


def add(id: str, build: Build, *expect: str, skip: bool = False) -> None:
    CASES.append(Case(id, build, tuple(expect), skip))


# MovieLens-100k: u.data is tab-separated without a header; u.item is pipe-separated latin-1.
ml = "ml-100k"
add(f"{ml}/row-with-an-extra-field", converted(ml, on("u.data", replace_line(3, b"1\t3\t4\t880000200\t9"))), "u.data", "line 3")
add(f"{ml}/row-missing-a-field", converted(ml, on("u.data", replace_line(3, b"1\t3\t4"))), "u.data:3", "'timestamp'", "missing")
add(f"{ml}/header-line-where-none-belongs", converted(ml, on("u.data", insert_line(1, b"user_id\titem_id\trating\ttimestamp"))),
    "u.data:1", "'user'")
add(f"{ml}/nan-timestamp", converted(ml, on("u.data", replace_line(3, b"1\t3\t4\tnan"))), "u.data:3", "'timestamp'")
add(f"{ml}/non-numeric-timestamp", converted(ml, on("u.data", replace_line(3, b"1\t3\t4\tyesterday"))),
    "u.data:3", "'timestamp'", "'yesterday'")
add(f"{ml}/infinite-timestamp", converted(ml, on("u.data", replace_line(3, b"1\t3\t4\tinf"))), "u.data:3", "'timestamp'")
add(f"{ml}/non-utf8-bytes", converted(ml, on("u.data", replace_line(3, b"1\t3\t4\t88000\xff200"))), "u.data:3", "not UTF-8")
add(f"{ml}/empty-ratings-file", converted(ml, on("u.data", lambda lines: [])), "u.data", "no interactions")
add(f"{ml}/missing-item-file", converted(ml, delete("u.item")), "u.item", "no such file")
add(f"{ml}/item-row-with-wrong-field-count", converted(ml, on("u.item", replace_line(2, b"2|GoldenEye (1995)|01-Jan-1995"))),
    "u.item:2", "fields")
add(f"{ml}/filters-leave-nothing", converted(ml, lambda raw: None, "--k_core=50"), "u.data", "no interactions left")
add(f"{ml}/duplicate-user-item-time", converted(ml, on("u.data", append(b"1\t3\t1\t880000200"))),
    "u.data", "dropped 1 interactions repeating a (user, item, timestamp)", skip=True)
add(f"{ml}/interactions-with-unknown-items", converted(ml, on("u.data", append(b"1\t99\t4\t880009999"))),
    "u.item", "1 of 10 interacted items have no item data", skip=True)
add(f"{ml}/item-without-text", converted(ml, on("u.item", replace_line(2, b"2||||" + b"|0" * 19))),
    "u.item", "1 of 9 interacted items have no text", skip=True)

ml = "ml-1m"
add(f"{ml}/row-missing-a-field", converted(ml, on("ratings.dat", replace_line(3, b"1::3::4"))), "ratings.dat:3", "'Timestamp'")
add(f"{ml}/row-with-an-extra-field", converted(ml, on("ratings.dat", replace_line(3, b"1::3::4::880000200::7"))),
    "ratings.dat", "line 3")
add(f"{ml}/non-numeric-timestamp", converted(ml, on("ratings.dat", replace_line(3, b"1::3::4::soon"))),
    "ratings.dat:3", "'Timestamp'", "'soon'")
add(f"{ml}/nan-timestamp", converted(ml, on("ratings.dat", replace_line(3, b"1::3::4::NaN"))), "ratings.dat:3", "'Timestamp'")
add(f"{ml}/non-numeric-bytes-in-ids", converted(ml, on("ratings.dat", replace_line(3, b"1::\xff3::4::880000200"))),
    "ratings.dat:3", "'MovieID'")
add(f"{ml}/movies-not-in-the-given-encoding", converted(ml, lambda raw: None, "--encoding=utf-8"), "movies.dat:3", "not UTF-8")
add(f"{ml}/malformed-movie-line", converted(ml, on("movies.dat", replace_line(2, b"2 GoldenEye (1995)"))),
    "movies.dat:2", "MovieID::Title::Genres")
add(f"{ml}/malformed-user-line", converted(ml, on("users.dat", replace_line(2, b"2::M::56"))), "users.dat:2", "5")
add(f"{ml}/duplicate-user-item-time", converted(ml, on("ratings.dat", append(b"1::3::1::880000200"))),
    "ratings.dat", "repeating a (user, item, timestamp)", skip=True)

ml = "ml-latest"
add(f"{ml}/wrong-header", converted(ml, on("ratings.csv", replace_line(1, b"user,movie,rating,timestamp"))),
    "ratings.csv", "'userId'")
add(f"{ml}/missing-header", converted(ml, on("ratings.csv", lambda lines: lines[1:])), "ratings.csv", "'userId'")
add(f"{ml}/row-with-an-extra-field", converted(ml, on("ratings.csv", replace_line(3, b"1,3,4.0,880000200,x"))),
    "ratings.csv", "line 3")
add(f"{ml}/nan-timestamp", converted(ml, on("ratings.csv", replace_line(3, b"1,3,4.0,NaN"))), "ratings.csv:3", "'timestamp'")
add(f"{ml}/non-utf8-ratings", converted(ml, on("ratings.csv", replace_line(3, b"1,3,4.0,\xe9"))), "ratings.csv:3", "not UTF-8")
add(f"{ml}/non-utf8-movies", converted(ml, on("movies.csv", replace_line(3, b"3,Caf\xe9 au Lait (1993),Comedy"))),
    "movies.csv:3", "not UTF-8")
add(f"{ml}/movies-wrong-header", converted(ml, on("movies.csv", replace_line(1, b"movieId,name,genres"))),
    "movies.csv", "'title'")
add(f"{ml}/header-only", converted(ml, on("ratings.csv", lambda lines: lines[:1])), "ratings.csv", "no interactions")
add(f"{ml}/item-without-text", converted(ml, on("movies.csv", replace_line(3, b"2,,(no genres listed)"))),
    "movies.csv", "1 of 9 interacted items have no text", skip=True)
add(f"{ml}/duplicate-user-item-time", converted(ml, on("ratings.csv", append(b"1,3,1.0,880000200"))),
    "ratings.csv", "repeating a (user, item, timestamp)", skip=True)

# Amazon: JSON lines (2014 metadata: Python literals), gzip.
AMAZON_KEYS = {  # release -> (user key, item key, rating key, time key, time of the fixture's line 3)
    "amazon-2014": ("reviewerID", "asin", "overall", "unixReviewTime"),
    "amazon-2018": ("reviewerID", "asin", "overall", "unixReviewTime"),
    "amazon-2023": ("user_id", "parent_asin", "rating", "timestamp"),
}
for fmt, (user, item, rating, time) in AMAZON_KEYS.items():
    reviews, meta, _ = FORMATS[fmt]

    def review(value, user=user, item=item, rating=rating, time=time, drop=None) -> bytes:
        record = {user: "A01X7Q", item: "B000000002", rating: 3.0, time: value}
        record.pop(drop, None)
        return json_line(**record)

    add(f"{fmt}/malformed-json-line", converted(fmt, on(reviews, replace_line(3, b'{"broken": '))), reviews + ":3", "JSON")
    add(f"{fmt}/missing-user-field", converted(fmt, on(reviews, replace_line(3, review(880000200, drop=user)))),
        reviews + ":3", repr(user))
    add(f"{fmt}/non-numeric-timestamp", converted(fmt, on(reviews, replace_line(3, review("tomorrow")))),
        reviews + ":3", repr(time))
    add(f"{fmt}/nan-timestamp", converted(fmt, on(reviews, replace_line(3, review(float("nan"))))), reviews + ":3", repr(time))
    add(f"{fmt}/non-utf8-bytes", converted(fmt, on(reviews, replace_line(3, review(1).replace(b"A01X7Q", b"A01\xffQ")))),
        reviews + ":3", "not UTF-8")
    add(f"{fmt}/truncated-gzip", converted(fmt, truncate_gzip(reviews)), reviews, "truncated")
    add(f"{fmt}/truncated-metadata-gzip", converted(fmt, truncate_gzip(meta)), meta, "truncated")
    add(f"{fmt}/malformed-metadata-line", converted(fmt, on(meta, replace_line(2, b"{'asin': 'B000000002', 'title': "))),
        meta + ":2")
    add(f"{fmt}/empty-review-file", converted(fmt, on(reviews, lambda lines: [])), reviews, "no reviews")
    add(f"{fmt}/duplicate-user-item-time", converted(fmt, on(reviews, lambda lines: lines + lines[:1])),
        reviews, "dropped 2 exact duplicate", skip=True)  # the fixture holds one already
    add(f"{fmt}/items-without-metadata", converted(fmt, on(meta, lambda lines: lines[1:])),
        meta, "of 9 interacted items have no item data", skip=True)

# Generic CSV pair: header line required.
add("csv/wrong-header", converted("csv", on("interactions.csv", replace_line(1, b"uid,item_id,rating,timestamp,split"))),
    "interactions.csv", "'user_id'")
add("csv/missing-header", converted("csv", on("interactions.csv", lambda lines: lines[1:])), "interactions.csv", "'timestamp'")
add("csv/row-with-an-extra-field", converted("csv", on("interactions.csv", replace_line(4, b"u1,m2,3,2020-01-01T00:03:20,train,x"))),
    "interactions.csv", "line 4")
add("csv/row-missing-fields", converted("csv", on("interactions.csv", replace_line(4, b"u1"))), "interactions.csv:4", "'item_id'")
add("csv/nan-timestamp", converted("csv", on("interactions.csv", replace_line(4, b"u1,m2,3,NaN,train"))),
    "interactions.csv:4", "'timestamp'", "'NaN'")
add("csv/non-numeric-timestamp", converted("csv", on("interactions.csv", replace_line(4, b"u1,m2,3,last tuesday,train"))),
    "interactions.csv:4", "'timestamp'")
add("csv/non-numeric-rating", converted("csv", on("interactions.csv", replace_line(4, b"u1,m2,three,2020-01-01T00:03:20,train"))),
    "interactions.csv:4", "'rating'")
add("csv/empty-user-id", converted("csv", on("interactions.csv", replace_line(4, b",m2,3,2020-01-01T00:03:20,train"))),
    "interactions.csv:4", "'user_id'")
add("csv/non-utf8-bytes", converted("csv", on("interactions.csv", replace_line(4, b"u\xff1,m2,3,2020-01-01T00:03:20,train"))),
    "interactions.csv:4", "not UTF-8")
add("csv/truncated-gzip", converted("csv", gzip_csv, "--interactions=interactions.csv.gz"), "interactions.csv.gz", "truncated")
add("csv/header-only", converted("csv", on("interactions.csv", lambda lines: lines[:1])), "interactions.csv", "no interactions")
add("csv/empty-file", converted("csv", on("interactions.csv", lambda lines: [])), "interactions.csv", "empty")
add("csv/bad-time-unit-option", converted("csv", lambda raw: None, "--time_unit=hours"), "time_unit")
add("csv/unknown-option", converted("csv", lambda raw: None, "--user_column=user_id"), "user_column")
add("csv/items-file-without-id-column", converted("csv", on("items.csv", replace_line(1, b"id,title,genres"))),
    "items.csv", "'item_id'")
add("csv/duplicate-user-item-time", converted("csv", on("interactions.csv", append(b"u1,m2,1,2020-01-01T00:03:20,train"))),
    "interactions.csv", "repeating a (user, item, timestamp)", skip=True)
add("csv/interactions-with-unknown-items", converted("csv", on("interactions.csv", append(b"u1,m99,4,2020-01-02T00:00:00,x"))),
    "items.csv", "1 of 10 interacted items have no item data", skip=True)
add("csv/item-without-text", converted("csv", on("items.csv", replace_line(3, b"m2,,"))),
    "items.csv", "1 of 9 interacted items have no text", skip=True)
add("csv/item-listed-twice", converted("csv", on("items.csv", append(b"m2,GoldenEye again,Action"))),
    "items.csv", "1 item rows repeat an item id", skip=True)


# --------------------------------------------------------------------------- the atomic loader

HEADER = b"user_id:token\titem_id:token\ttimestamp:float\n"
GOOD = b"".join(b"%d\t%d\t%d\n" % (u, i, u * 10 + i) for u in (1, 2) for i in (1, 2, 3, 4))


def atomic(inter: bytes, item: bytes | None = None, check: str = "load") -> Build:
    """A dataset ``bad/bad.inter`` (+ ``bad.item``) loaded by ``load_sequences`` (or set up by
    the sequential data module, as ``recsys fit`` does, with ``check='setup'``)."""

    def build(tmp: Path):
        root = tmp / "bad"
        root.mkdir()
        (root / "bad.inter").write_bytes(inter)
        if item is not None:
            (root / "bad.item").write_bytes(item)

        def run():
            if check == "setup":
                from recsys.data.datamodule import SeqDataModule

                return SeqDataModule(str(root)).setup("fit")
            from recsys.data.dataset import load_sequences

            return load_sequences(root)

        return run

    return build


add("atomic/row-with-an-extra-field", atomic(HEADER + b"1\t1\t1\n1\t2\t2\t9\n" + GOOD), "bad.inter", "line 3")
add("atomic/row-missing-a-field", atomic(HEADER + b"1\t1\t1\n1\t2\n" + GOOD), "bad.inter:3", "'timestamp'")
add("atomic/header-without-types", atomic(b"user_id\titem_id\ttimestamp\n" + GOOD), "bad.inter:1", "'user_id'", "name:type")
add("atomic/missing-header", atomic(GOOD), "bad.inter:1", "name:type")
add("atomic/header-without-item-id", atomic(b"user_id:token\titem:token\ttimestamp:float\n" + GOOD), "bad.inter", "'item_id'")
add("atomic/unknown-field-type", atomic(b"user_id:int\titem_id:token\ttimestamp:float\n" + GOOD), "bad.inter:1", "'int'")
add("atomic/nan-timestamp", atomic(HEADER + b"1\t1\tnan\n" + GOOD), "bad.inter:2", "'timestamp'", "'nan'")
add("atomic/non-numeric-timestamp", atomic(HEADER + b"1\t1\tyesterday\n" + GOOD), "bad.inter:2", "'timestamp'")
add("atomic/empty-user-id", atomic(HEADER + GOOD + b"\t1\t5\n"), "bad.inter:10", "'user_id'")
add("atomic/non-utf8-bytes", atomic(HEADER + GOOD + b"1\t\xff\t5\n"), "bad.inter:10", "not UTF-8")
add("atomic/gzip-bytes-under-an-atomic-name", atomic(gzip.compress(HEADER + GOOD)), "bad.inter:1", "not UTF-8")
add("atomic/header-only", atomic(HEADER), "bad.inter", "no interactions")
add("atomic/empty-file", atomic(b""), "bad.inter:1", "empty")
add("atomic/item-listed-twice", atomic(HEADER + GOOD, b"item_id:token\ttitle:token\n1\ta\n1\tb\n"), "bad.item:3", "'1'")
add("atomic/every-history-too-short", atomic(HEADER + b"1\t1\t1\n1\t2\t2\n2\t1\t1\n", check="setup"),
    "bad", "3 or more interactions")
add("atomic/duplicate-user-item-time", atomic(HEADER + GOOD + b"1\t1\t11\n"),
    "bad.inter", "dropped 1 duplicate (user, item, time) rows", skip=True)
add("atomic/interactions-with-unknown-items", atomic(HEADER + GOOD, b"item_id:token\ttitle:token\n1\ta\n2\tb\n3\tc\n"),
    "bad.item", "1 items with interactions have no row here", skip=True)
add("atomic/one-item-histories", atomic(HEADER + GOOD + b"3\t1\t1\n4\t2\t2\n4\t3\t3\n"),
    "bad.inter", "2 of 4 users have no test target", skip=True)


def missing_dataset(tmp: Path):
    from recsys.data.dataset import load_sequences

    return lambda: load_sequences(tmp / "nowhere")


add("atomic/missing-dataset", missing_dataset, "nowhere", "no such dataset")


# --------------------------------------------------------------------------- configuration

TINY = Path(__file__).resolve().parents[1] / "data" / "tiny"


def config(text: str, *extra: str) -> Build:
    def build(tmp: Path) -> list[str]:
        (tmp / "run.yaml").write_text(text.format(tiny=TINY))
        return ["fit", "--config", str(tmp / "run.yaml"), *extra, "--print_config"]

    return build


def argv(*args: str) -> Build:
    return lambda tmp: [*args, "--print_config"] if args[0] == "fit" else list(args)


RUN = "model:\n  class_path: SASRec\n  init_args:\n    {model}\ndata:\n  class_path: SeqDataModule\n  init_args:\n    path: {{tiny}}\n"
add("config/unknown-model-key", config(RUN.format(model="d_modl: 8")), "'d_modl' is not accepted", "Did you mean d_model")
add("config/unknown-trainer-key", config(RUN.format(model="d_model: 8") + "trainer:\n  max_epoch: 3\n"), "'trainer'", "'max_epoch'")
add("config/wrong-value-type", config(RUN.format(model="d_model: eight")), '"d_model"', "eight")
add("config/unknown-key-on-the-command-line", argv("fit", "--model=SASRec", "--data=SeqDataModule", "--trainer.max_epoch=3"),
    "--trainer.max_epoch=3")
add("config/missing-config-file", lambda tmp: ["fit", "--config", str(tmp / "nope.yaml")], "nope.yaml")
add("config/unknown-model-name", argv("fit", "--model=SASRecc", "--data=SeqDataModule"),
    "SASRecc", "Did you mean SASRec", "Registered: ", "Pop")
add("config/unknown-data-module", argv("fit", "--model=SASRec", "--data=SeqDataModul"),
    "SeqDataModul", "Did you mean SeqDataModule")


def run(*args: str) -> Build:
    """A real run on data/tiny (no --print_config): what fails must fail before anything is built."""
    base = ["fit", "--model=SASRec", "--data=SeqDataModule", f"--data.path={TINY}", "--trainer.max_epochs=1",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    return lambda tmp: [*base, f"--trainer.default_root_dir={tmp}", *args]


# Cross-field checks (recsys.config_checks): both fields named, before any model or data is built.
add("config/stride-longer-than-the-window", run("--model.max_len=5", "--data.max_len=5", "--data.train_stride=8"),
    "data.init_args.train_stride (8)", "data.init_args.max_len (5)")
add("config/stride-with-one-window-per-target", run("--data.train_windows=every", "--data.train_stride=10"),
    "data.init_args.train_stride (10)", "data.init_args.train_windows 'every'")
add("config/model-and-data-max-len-differ", run("--model.max_len=10", "--data.max_len=5"),
    "model.init_args.max_len (10)", "data.init_args.max_len (5)")
add("config/value-refused-by-a-class", run("--model.max_len=0", "--data.max_len=0"), "data.max_len must be >= 1, got 0")

def ambiguous(tmp: Path) -> list[str]:
    """Two model classes named ``Twin`` in two modules: the short name is ambiguous."""
    from recsys.models.pop import Pop

    for module in ("twin_plugin_a", "twin_plugin_b"):
        sys.modules[module] = types.ModuleType(module)
        twin = type("Twin", (Pop,), {"__module__": module})
        sys.modules[module].Twin = twin
    return ["fit", "--model=Twin", "--data=SeqDataModule", "--print_config"]


def forget_twins() -> None:
    for module in ("twin_plugin_a", "twin_plugin_b"):
        sys.modules.pop(module, None)
    gc.collect()  # RecModule.__subclasses__() holds weak references: the twins leave with the modules


add("config/ambiguous-model-name", ambiguous, "Multiple subclasses with name Twin", "twin_plugin_a.Twin",
    "twin_plugin_b.Twin")
add("convert/unknown-format", argv("convert", "movielens"), "unknown dataset format 'movielens'", "ml-100k")


# --------------------------------------------------------------------------- running a case


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def run_case(case: Case, tmp: Path) -> Outcome:
    """Build and run one case; ``clear`` says whether it behaved as the table says."""
    from recsys.cli import main
    from recsys.data.atomic import DataFormatError

    records = _Records()
    logger = logging.getLogger("recsys")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(records)
    stderr = io.StringIO()
    try:
        target = case.build(tmp)
        with contextlib.redirect_stderr(stderr):
            try:
                if callable(target):
                    target()
                    code = 0
                else:
                    code = main(target)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except DataFormatError as exc:
                if case.skip:
                    return Outcome(False, f"expected a logged skip, got DataFormatError: {exc}")
                missing = [f for f in case.expect if f not in str(exc)]
                return Outcome(not missing, f"DataFormatError: {exc}" + (f" (lacks {missing})" if missing else ""))
            except Exception as exc:  # anything else escaping is a traceback for the user
                frames = traceback.extract_tb(exc.__traceback__)
                return Outcome(False, f"uncaught {type(exc).__name__}: {exc} (raised in {frames[-1].filename}:{frames[-1].lineno})")
    finally:
        logger.removeHandler(records)
        logger.setLevel(old_level)
        if case.build is ambiguous:
            forget_twins()
    err = stderr.getvalue()
    if case.skip:
        if code:
            return Outcome(False, f"expected success with a logged skip, exit {code}: {err.strip()[-300:]}")
        hit = [m for m in records.messages if all(f in m for f in case.expect)]
        return Outcome(bool(hit), hit[0] if hit else f"no log record with {case.expect}; got {records.messages}")
    if code == 0:
        return Outcome(False, "succeeded; expected an error")
    lines = [line for line in err.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if "Traceback" in err or not (last.startswith("recsys: error:") or last.startswith("recsys convert:")):
        return Outcome(False, f"exit {code} without a one-line error: {err.strip()[-300:]}")
    missing = [f for f in case.expect if f not in last]
    return Outcome(not missing, last + (f" (lacks {missing})" if missing else ""))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_a_clear_error_or_a_counted_skip(case, tmp_path):
    outcome = run_case(case, tmp_path)
    assert outcome.clear, outcome.detail


def test_the_table_covers_every_converter_and_the_loader():
    from recsys.plugins import get_datasets

    targets = {c.id.split("/")[0] for c in CASES}
    assert set(get_datasets()) <= targets, set(get_datasets()) - targets
    assert {"atomic", "config"} <= targets


# --------------------------------------------------------------------------- interrupted conversion


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_an_interrupted_conversion_leaves_no_dataset_and_keeps_the_old_one(fmt, tmp_path, monkeypatch):
    """The converter dies while writing (after the .inter file, before the .item file): no
    loadable dataset appears at ``out``, and a good dataset already there survives intact."""
    from recsys.cli import main
    from recsys.data import atomic as atomic_module
    from recsys.data.atomic import DataFormatError, dataset_files
    from recsys.data.dataset import load_sequences

    out = tmp_path / "out"
    args = ["convert", fmt, str(RAW / fmt), str(out), *FORMATS[fmt][2]]
    real = atomic_module.write_atomic
    calls = []

    def dies_on_second_file(frame, path, types=None):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed mid-write")
        return real(frame, path, types)

    monkeypatch.setattr(atomic_module, "write_atomic", dies_on_second_file)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    assert not out.exists(), f"a half-written dataset was left at {out}: {list(out.iterdir())}"
    with pytest.raises(DataFormatError):
        load_sequences(out)
    assert list(tmp_path.iterdir()) == [], "staging files were left behind"

    monkeypatch.setattr(atomic_module, "write_atomic", real)
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls.clear()
    monkeypatch.setattr(atomic_module, "write_atomic", dies_on_second_file)
    with pytest.raises(KeyboardInterrupt):
        main([*args, "--overwrite=true"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert len(load_sequences(out).items) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "staging directories were left behind"
    assert set(dataset_files(out)) >= {"inter", "item"}


# --------------------------------------------------------------------------- file modes


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775), (0o077, 0o600, 0o700)])
def test_converted_files_get_the_mode_the_umask_gives(tmp_path, umask, file_mode, dir_mode):
    """Atomic writes go through mkstemp/mkdtemp (0600/0700); what lands must look as if written
    plainly under the umask, so a shared data folder stays readable when the umask says so."""
    import os
    import stat

    import pandas as pd

    from recsys.data.atomic import write_dataset
    from recsys.shards import _replace_json

    inter = pd.DataFrame({"user_id": ["u1", "u1"], "item_id": ["i1", "i2"], "timestamp": [1.0, 2.0]})
    old = os.umask(umask)
    try:
        out = write_dataset(tmp_path / "shared", inter, pd.DataFrame({"item_id": ["i1", "i2"], "title": ["a", "b"]}))
        _replace_json(tmp_path / "manifest.json", {"format": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == dir_mode
    for path in [*out.iterdir(), tmp_path / "manifest.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == file_mode, path
