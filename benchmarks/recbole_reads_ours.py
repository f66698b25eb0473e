#!/usr/bin/env python3
"""Does RecBole 1.2.1 read the atomic files our converters write? End-to-end check.

Prints one table and writes ``benchmarks/results/recbole_reads_ours.json``; exits 1 when a
dataset does not match, 2 when a step fails outright.

Steps (each side runs in its own interpreter, so neither virtualenv needs the other's packages):

1. ``recsys convert`` (``--recsys``, default ``/work/venv/bin/recsys``) writes three datasets
   into a temporary directory: ``csv`` on ``/work/shared/data/amazon-scientific`` (with
   ``--order_col position``), ``ml-100k`` and ``amazon-2018`` on the raw test fixtures.
2. Our loader (``--ours-python``, default: the ``python`` beside ``--recsys``) reads each one
   with ``recsys.data.dataset.load_sequences``: users, items, interactions, every item's (and
   user's) fields, and every user's item sequence.
3. RecBole (``--recbole-python``, default ``/work/rbvenv/bin/python``) reads each one with
   ``Config(model='SASRec', ...)`` + ``create_dataset`` (+ ``data_preparation`` for
   amazon-scientific), no filtering (``user/item_inter_num_interval '[0,inf)'``,
   ``rm_dup_inter None``), loading the inter fields ``user_id item_id timestamp``, every field of
   the ``.item`` file and, when there is one, of the ``.user`` file.

A dataset matches when all of these agree: the number of users, items and interactions (RecBole's
``[PAD]`` excluded); every item's and user's parsed fields (``token`` as text, ``[PAD]`` = empty;
``token_seq`` as RecBole's token list: the value split on single spaces, empty pieces dropped;
``float`` as a number); and every user's item sequence, RecBole's being the stable sort by
(user, timestamp) that ``SequentialDataset`` uses.  RecBole sorts on the timestamp *as float32*
(``FloatTensor``), so distinct timestamps can become ties that keep file order; the expectation
for RecBole is therefore our file sorted stably on the float32 timestamp, and the table also
says how many users' sequences differ from our loader's own order (``tie_break='file'`` and the
default ``'item'``), for information. For amazon-scientific the leave-one-out test/valid targets
of ``data_preparation`` are compared with the last / second-to-last item of our sequences.

``--probes`` (on by default) also writes a few small edge-case datasets with our
``write_dataset`` and loads them with both; they are reported separately and do not change the
exit status (they document where RecBole's reader and ours disagree about the same bytes).

RecBole run-time shims (in the RecBole child process only; RecBole's files are not modified):
numpy 2 aliases (``np.float_``, ``np.complex_``, ``np.unicode_``, ``np.bool8``: RecBole's
``Config`` reads some of them; ``np.float``: ``Dataset._fill_nan`` for float_seq fields),
``torch.load(weights_only=False)`` by default (torch >= 2.6; unused here, no checkpoint is
loaded) and autograd anomaly detection switched back off after SINE's import turns it on. They
are the ones ``benchmarks/recbole_side.py`` documents; that script cannot be imported for them
(it parses its command line, sets thread variables, imports torch and patches RecBole at import
time), so the few lines are repeated here.

pandas 3 (copy-on-write, new ``Series.agg``) breaks three things in RecBole 1.2.1 that have
nothing to do with the files being read, so RecBole runs twice: with the shims below (the table
and the exit status) and without them (reported beside, to show what the bare environment does):

- ``Dataset._load_feat``: ``df[field].fillna(value="", inplace=True)`` no longer writes back, so
  an empty ``token_seq`` value stays NaN and ``NaN.split`` raises.  Shim: the ``pd`` that
  RecBole's dataset module sees gets a ``read_csv`` that fills missing ``*_seq`` columns with "".
- ``Dataset._remap``: ``feat[field].agg(len)`` returns the length of the column instead of one
  length per row, so *any* ``token_seq`` field fails ("Length of values (1) does not match").
  Shim: ``Series.agg(len)`` is element-wise again.
- ``Dataset._fill_nan``: ``fillna(inplace=True)`` is a no-op, so the PAD row of every token field
  of ``item_feat`` stays NaN (int64 min after ``build()``).  Shim: the side script's wrapper
  (TOKEN NaN -> 0, FLOAT NaN -> mean, by assignment).

Each shim counts what it changed (``pandas3_shim_effects`` in the JSON).

Usage::

    /work/venv/bin/python benchmarks/recbole_reads_ours.py
    python benchmarks/recbole_reads_ours.py --keep-tmp --no-probes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_OUT = HERE / "results" / "recbole_reads_ours.json"
ML100K = "ml-100k-fixture"


def conversions(tmp: Path) -> list[dict]:
    return [
        {"name": "amazon-scientific", "argv": ["convert", "csv", "/work/shared/data/amazon-scientific",
                                               str(tmp / "amazon-scientific"), "--order_col", "position"]},
        # Not named "ml-100k": RecBole's Config replaces data_path with its bundled
        # dataset_example/ml-100k whenever dataset == "ml-100k" (and loads its ml-100k.yaml).
        {"name": ML100K, "argv": ["convert", "ml-100k", str(REPO / "tests/fixtures/raw/ml-100k"),
                                  str(tmp / ML100K)]},
        {"name": "amazon-2018", "argv": ["convert", "amazon-2018", str(REPO / "tests/fixtures/raw/amazon-2018"),
                                         str(tmp / "amazon-2018")]},
    ]


# ---------------------------------------------------------------------------------------------
# Value normalisation shared by both sides (plain Python only)
# ---------------------------------------------------------------------------------------------
def seq_tokens(text: str) -> list[str]:
    """RecBole's token_seq rule: ``filter(None, value.split(seq_separator))`` with separator " "."""
    return [t for t in str(text).split(" ") if t]


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, ensure_ascii=False, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# Probes: small datasets written with our write_dataset (built in the "ours" child)
# ---------------------------------------------------------------------------------------------
def probe_frames():
    """(name, what it checks, inter rows, item rows, types) for each probe."""
    base_inter = [("u1", "i1", 1), ("u1", "i2", 2), ("u1", "i3", 3),
                  ("u2", "i2", 1), ("u2", "i3", 2), ("u2", "i4", 3),
                  ("u3", "i1", 5), ("u3", "i4", 6)]
    titles = {"i1": "First item", "i2": "Second item", "i3": "Third item", "i4": "Fourth item"}

    def items(**override):
        t = dict(titles)
        t.update(override)
        return [{"item_id": k, "title": v, "brand": "Acme"} for k, v in t.items()]

    probes = [
        ("leading-quote-closed", ("a token that starts with a double quote (RecBole reads with pandas' "
         "default quotechar '\"'; we write QUOTE_NONE)"),
         base_inter, items(i2='"Heavy Duty" Ruler 12"'), None),
        ("leading-quote-unclosed", "a token that starts with a double quote that never closes",
         base_inter, items(i2='"Unclosed quote ruler', i3="Third item 12\" long"), None),
        ("na-like-strings", ("tokens pandas' read_csv turns into NaN by default (NA, null, None, NaN, "
         "n/a): as a user id, an item id and item fields"),
         [("NA" if u == "u3" else u, "null" if i == "i4" else i, t) for u, i, t in base_inter],
         [{"item_id": "null" if r["item_id"] == "i4" else r["item_id"],
           "title": {"i1": "None", "i2": "NaN"}.get(r["item_id"], r["title"]),
           "brand": "n/a" if r["item_id"] == "i3" else r["brand"]} for r in items()], None),
        ("empty-token-seq", "an empty token_seq field (RecBole fills it with '' before splitting)",
         base_inter, [{**r, "genres": "" if r["item_id"] == "i3" else "Drama Comedy"} for r in items()],
         {"genres": "token_seq"}),
        ("token-seq-item-with-space", "a token_seq written from a list whose elements contain spaces",
         base_inter, [{**r, "genres": ["Sci Fi", "Drama"] if r["item_id"] == "i1" else ["Drama"]} for r in items()],
         {"genres": "token_seq"}),
        ("colon-in-field-name", "a field name that contains ':' (our header parser uses rpartition)",
         base_inter, [{**r, "size:cm": "12"} for r in items()], None),
        ("unicode-line-breaks", ("\\v \\f \\x1c \\x1e \\x85 \\u2028 \\u2029 inside tokens (our writer only "
         "collapses \\t \\r \\n)"),
         base_inter, items(i2="Second\u2028item", i3="Third\x85item\x0bx\x0cy", i4="Fourth\x1citem\x1ez\u2029w"), None),
        ("nul-byte", "a NUL character inside a token",
         base_inter, items(i2="Second\x00item"), None),
        ("item-without-row", ("an interacted item with no .item row (converters always add one; "
         "write_dataset does not check)"),
         base_inter, [r for r in items() if r["item_id"] != "i4"], None),
        ("numeric-ids-untyped", ("integer ids written without explicit types (write_dataset infers "
         "'float' for numeric columns)"),
         [(int(u[1:]), int(i[1:]), t) for u, i, t in base_inter],
         [{"item_id": int(r["item_id"][1:]), "title": r["title"]} for r in items()], {}),
    ]
    return probes


# ---------------------------------------------------------------------------------------------
# Child 1: our loader (runs in the project's virtualenv)
# ---------------------------------------------------------------------------------------------
def ours_side(spec: dict) -> dict:
    import importlib.metadata as md
    import logging

    import numpy as np
    import pandas as pd

    from recsys.data.atomic import dataset_files, read_atomic, write_dataset
    from recsys.data.dataset import load_sequences

    logging.basicConfig(level=logging.WARNING, format="ours: %(levelname)s %(name)s: %(message)s")

    def norm(value, kind):
        if kind == "float":
            v = float(value) if value not in ("", None) else float("nan")
            return None if np.isnan(v) else v
        if value is None or (isinstance(value, float) and np.isnan(value)):
            value = ""
        return seq_tokens(value) if kind == "token_seq" else str(value)

    def fields_of(frame, vocab, types):
        """{raw id: {field: normalised value}} from a loader frame aligned with ``vocab``."""
        cols = list(frame.columns)
        out = {}
        for idx in range(1, len(vocab) + 1):
            row = frame.iloc[idx]
            out[vocab.tokens[idx]] = {c: norm(row[c], types[c]) for c in cols}
        return out

    def describe(path: Path) -> dict:
        files = dataset_files(path)
        res = {"files": {k: str(v) for k, v in files.items()}, "header": {}}
        for kind, f in files.items():
            res["header"][kind] = read_atomic(f)[1]
        t0 = time.perf_counter()
        data = load_sequences(path)  # defaults: no filter, tie_break='item'
        res["load_seconds"] = round(time.perf_counter() - t0, 3)
        res["users"], res["items"] = len(data.users), len(data.items)
        res["interactions"] = len(data.sequences.items)

        def seq(d):
            return {d.users.tokens[u]: [d.items.tokens[i] for i in d.sequences.of(u)]
                    for u in range(1, len(d.users) + 1)}

        res["seq_item_tie"] = seq(data)
        res["seq_file_tie"] = seq(load_sequences(path, tie_break="file"))
        # What RecBole should see: the file's rows (no de-duplication), stable-sorted by user and
        # the float32 timestamp.
        inter, _ = read_atomic(files["inter"])
        frame = pd.DataFrame({"u": inter["user_id"], "i": inter["item_id"]})
        if "timestamp" in inter.columns:
            frame["t"] = inter["timestamp"].astype(np.float32)
        frame = frame.sort_values([c for c in ("u", "t") if c in frame.columns], kind="stable")
        res["seq_file_f32"] = {u: g["i"].tolist() for u, g in frame.groupby("u", sort=False)}
        res["file_rows"] = len(inter)
        res["file_duplicate_rows"] = int(inter.duplicated([c for c in ("user_id", "item_id", "timestamp")
                                                           if c in inter.columns]).sum())
        ts = inter["timestamp"].to_numpy(dtype=np.float64) if "timestamp" in inter.columns else None
        if ts is not None:
            res["timestamps_changed_by_float32"] = int((ts.astype(np.float32).astype(np.float64) != ts).sum())
            s64 = pd.DataFrame({"u": inter["user_id"], "t": ts}).sort_values(["u", "t"], kind="stable")
            same_user = (s64["u"].to_numpy()[1:] == s64["u"].to_numpy()[:-1])
            t64 = s64["t"].to_numpy()
            t32 = t64.astype(np.float32)
            res["float32_ties_created_within_users"] = int((same_user & (t64[1:] != t64[:-1])
                                                            & (t32[1:] == t32[:-1])).sum())
            # Are the file's rows grouped by user and in time order within a user? Then RecBole's
            # stable sort keeps file order for every tie, float32-made ones included.
            u = inter["user_id"].to_numpy()
            runs = 1 + int((u[1:] != u[:-1]).sum()) if len(u) else 0
            same = u[1:] == u[:-1]
            res["file_sorted_by_user_time"] = bool(runs == len(set(u)) and (ts[1:][same] >= ts[:-1][same]).all())
        item_types = res["header"].get("item", {})
        res["item_fields"] = fields_of(data.catalog.fields, data.items, item_types) if item_types else {}
        user_types = res["header"].get("user", {})
        res["user_fields"] = (fields_of(data.user_fields, data.users, user_types)
                              if user_types and data.user_fields is not None else {})
        if "item" in files:
            first = read_atomic(files["item"])[0].iloc[0].to_dict()
            res["first_item_row"] = {k: (seq_tokens(v) if item_types.get(k) == "token_seq" else v)
                                     for k, v in first.items()}
        res["test_target"] = {u: s[-1] for u, s in res["seq_file_tie"].items() if len(s) >= 3}
        res["valid_target"] = {u: s[-2] for u, s in res["seq_file_tie"].items() if len(s) >= 3}
        return res

    out = {"versions": {"python": platform.python_version(), "numpy": np.__version__,
                        "pandas": pd.__version__}, "datasets": {}, "probes": {}}
    for dist in ("recsys-llm", "recsys"):
        try:
            out["versions"]["recsys"] = md.version(dist)
            break
        except md.PackageNotFoundError:
            continue
    for name, path in spec["datasets"].items():
        out["datasets"][name] = describe(Path(path))

    if spec.get("probes_dir"):
        root = Path(spec["probes_dir"])
        for name, what, inter_rows, item_rows, types in probe_frames():
            rec = {"what": what}
            inter = pd.DataFrame(inter_rows, columns=["user_id", "item_id", "timestamp"])
            item = pd.DataFrame(item_rows)
            if types is None:
                types = {"user_id": "token", "item_id": "token"}
            try:
                write_dataset(root / name, inter, item, types=types)
            except Exception as exc:  # noqa: BLE001 (the writer refuses: nothing for RecBole to read)
                rec["write_error"] = f"{type(exc).__name__}: {exc}"
                out["probes"][name] = rec
                continue
            rec["path"] = str(root / name)
            item_file = root / name / f"{name}.item"
            rec["item_file_header"] = item_file.read_text(encoding="utf-8").split("\n", 1)[0]
            rec["item_file_lines"] = item_file.read_bytes().count(b"\n")
            # What we meant to write, field by field (lists as RecBole token lists).
            item_types = {}
            try:
                item_types = read_atomic(item_file)[1]
            except Exception as exc:  # noqa: BLE001 (recorded and reported)
                rec["our_header_error"] = f"{type(exc).__name__}: {exc}"
            intended = {}
            for row in item_rows:
                iid = str(row["item_id"])
                vals = {}
                for k, v in row.items():
                    if k == "item_id":
                        continue
                    kind = item_types.get(k, types.get(k, "token"))
                    vals[k] = [str(x) for x in v] if isinstance(v, list) else norm(v, kind)
                intended[iid] = vals
            rec["intended_item_fields"] = intended
            rec["inter_rows_written"] = len(inter)
            try:
                d = describe(root / name)
                rec["ours"] = {k: d[k] for k in ("users", "items", "interactions", "header", "item_fields")}
            except Exception as exc:  # noqa: BLE001 (recorded and reported)
                rec["ours_error"] = f"{type(exc).__name__}: {exc}"
            out["probes"][name] = rec
    return out


# ---------------------------------------------------------------------------------------------
# Child 2: RecBole (runs in RecBole's virtualenv)
# ---------------------------------------------------------------------------------------------
def recbole_side(spec: dict) -> dict:
    sys.argv = sys.argv[:1]  # RecBole's Config parses the command line for --key=value overrides
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    import logging
    import warnings

    import numpy as np
    import pandas as pd

    shims = []
    for name, target in (("bool8", np.bool_), ("float_", np.float64),
                         ("complex_", np.complex128), ("unicode_", np.str_),
                         ("float", float)):  # np.float: Dataset._fill_nan, float_seq fields only
        if not hasattr(np, name):
            setattr(np, name, target)
            shims.append(f"np.{name} = {getattr(target, '__module__', '') == 'builtins' and '' or 'np.'}"
                         f"{target.__name__}")
    import torch

    _orig_load = torch.load

    def _load(*a, **k):
        k.setdefault("weights_only", False)
        return _orig_load(*a, **k)

    torch.load = _load
    shims.append("torch.load defaults to weights_only=False")
    torch.set_num_threads(1)

    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import FeatureType, get_model

    get_model("SASRec")  # imports recbole.model.sequential_recommender (SINE turns anomaly mode on)
    torch.autograd.set_detect_anomaly(False)
    shims.append("torch.autograd.set_detect_anomaly(False) after importing the sequential models")

    # pandas 3 shims (wrappers, RecBole's code is not copied or edited); each counts what it changed.
    pandas3 = {"enabled": bool(spec.get("pandas3_shims")), "seq_fields_filled_with_empty_string": 0,
               "series_agg_len_calls_made_elementwise": 0, "fill_nan_by_assignment": {}}
    if pandas3["enabled"]:
        import recbole.data.dataset.dataset as rb_dataset_module
        from recbole.data.dataset import Dataset

        class PandasForRecBole:
            """``pd`` as seen by recbole/data/dataset/dataset.py: read_csv also does what
            ``_load_feat``'s ``df[field].fillna(value="", inplace=True)`` no longer does under
            copy-on-write (fill missing token_seq / float_seq values with "" before splitting)."""

            def __getattr__(self, name):
                return getattr(pd, name)

            @staticmethod
            def read_csv(*a, **k):
                df = pd.read_csv(*a, **k)
                for c in df.columns:
                    if isinstance(c, str) and c.endswith("_seq"):
                        n = int(df[c].isna().sum())
                        if n:
                            pandas3["seq_fields_filled_with_empty_string"] += n
                            df[c] = df[c].fillna("")
                return df

        rb_dataset_module.pd = PandasForRecBole()

        orig_agg = pd.Series.agg

        def series_agg(self, func=None, axis=0, *args, **kwargs):
            # pandas < 3 applied ``len`` element-wise (one length per token_seq row); pandas 3
            # returns len(series), which breaks Dataset._remap for every token_seq field.
            if func is len:
                pandas3["series_agg_len_calls_made_elementwise"] += 1
                return self.map(len)
            return orig_agg(self, func, axis, *args, **kwargs)

        pd.Series.agg = series_agg
        pd.Series.aggregate = series_agg

        orig_fill_nan = Dataset._fill_nan

        def fill_nan(self):
            orig_fill_nan(self)  # its fillna(inplace=True) on columns is a no-op under pandas 3
            for feat_name in self.feat_name_list:
                feat = getattr(self, feat_name)
                for field in feat:
                    ftype = self.field2type[field]
                    if ftype not in (FeatureType.TOKEN, FeatureType.FLOAT):
                        continue
                    n = int(feat[field].isna().sum())
                    if n:
                        value = 0 if ftype == FeatureType.TOKEN else feat[field].mean()
                        feat[field] = feat[field].fillna(value)
                        key = f"{feat_name}.{field}"
                        pandas3["fill_nan_by_assignment"][key] = pandas3["fill_nan_by_assignment"].get(key, 0) + n

        Dataset._fill_nan = fill_nan
        shims.append("pandas 3: recbole's dataset module sees a pd whose read_csv fills missing *_seq values "
                     "with '' (what _load_feat's column fillna(inplace=True) no longer does)")
        shims.append("pandas 3: Series.agg(len) element-wise again (Dataset._remap of token_seq fields)")
        shims.append("pandas 3: Dataset._fill_nan wrapped; TOKEN NaN -> 0, FLOAT NaN -> mean by assignment")

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage()[:400])

    def load(name: str, root: str, item_fields, user_fields, prepare: bool) -> dict:
        load_col = {"inter": ["user_id", "item_id", "timestamp"]}
        if item_fields is not None:
            load_col["item"] = ["item_id", *item_fields]
        if user_fields is not None:
            load_col["user"] = ["user_id", *user_fields]
        config_dict = {
            "data_path": root,
            "load_col": load_col,
            "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
            "MAX_ITEM_LIST_LENGTH": 50,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
            "train_neg_sample_args": None,
            "use_gpu": False, "show_progress": False,
            "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
            "rm_dup_inter": None, "val_interval": None, "normalize_all": None, "normalize_field": None,
            "save_dataset": False, "save_dataloaders": False,
        }
        res = {"config_dict": config_dict}
        handler = Collect()
        logging.getLogger().addHandler(handler)
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                config = Config(model="SASRec", dataset=name, config_dict=config_dict)
                ds = create_dataset(config)
                res["dataset_class"] = type(ds).__name__
                res["users"], res["items"] = int(ds.user_num - 1), int(ds.item_num - 1)
                res["interactions"] = int(ds.inter_num)
                res["field2type"] = {f: t.value for f, t in ds.field2type.items()}
                tok = ds.field2id_token

                def fields(feat, id_field, names):
                    """{raw id: {field: value}} from a feature DataFrame (before build(), rows = ids)."""
                    out = {}
                    if feat is None:
                        return out
                    cols = [f for f in names if f in feat.columns]
                    for rec in feat[[id_field, *cols]].itertuples(index=False, name=None):
                        rid, values = rec[0], rec[1:]
                        if pd.isna(rid) or int(rid) == 0:
                            continue
                        vals = {}
                        for f, v in zip(cols, values):
                            kind = ds.field2type[f]
                            if kind == FeatureType.TOKEN:
                                vals[f] = "" if (pd.isna(v) or int(v) == 0) else str(tok[f][int(v)])
                            elif kind == FeatureType.TOKEN_SEQ:
                                seq = [] if isinstance(v, float) else list(v)
                                vals[f] = [str(tok[f][int(x)]) for x in seq if int(x) != 0]
                            elif kind == FeatureType.FLOAT:
                                vals[f] = None if pd.isna(v) else float(v)
                            else:
                                seq = [] if isinstance(v, float) else list(v)
                                vals[f] = [float(x) for x in seq]
                        out[str(tok[id_field][int(rid)])] = vals
                    return out

                res["item_fields"] = fields(ds.item_feat, "item_id", item_fields or [])
                res["user_fields"] = fields(ds.user_feat, "user_id", user_fields or [])
                res["nan_left"] = {}
                for feat_name in ("inter_feat", "item_feat", "user_feat"):
                    feat = getattr(ds, feat_name, None)
                    if feat is None:
                        continue
                    id_field = {"item_feat": "item_id", "user_feat": "user_id"}.get(feat_name)
                    pad = (feat[id_field] == 0).to_numpy() if id_field else np.zeros(len(feat), bool)
                    for f in feat.columns:
                        if ds.field2type[f] in (FeatureType.TOKEN, FeatureType.FLOAT):
                            isna = feat[f].isna().to_numpy()
                            for where, n in (("", int((isna & ~pad).sum())), (" (PAD row)", int((isna & pad).sum()))):
                                if n:
                                    res["nan_left"][f"{feat_name}.{f}{where}"] = n
                # The order SequentialDataset.data_augmentation builds its sequences in: RecBole's
                # own DataFrame -> Interaction conversion (float fields become float32), then
                # Interaction.sort by (user, timestamp).
                inter = ds._dataframe_to_interaction(ds.inter_feat[["user_id", "item_id", "timestamp"]].copy())
                res["timestamp_dtype"] = str(inter["timestamp"].dtype)
                inter.sort(by=["user_id", "timestamp"], ascending=True)
                uids = [str(x) for x in tok["user_id"][inter["user_id"].numpy()]]
                iids = [str(x) for x in tok["item_id"][inter["item_id"].numpy()]]
                seqs = {}
                for u, i in zip(uids, iids):
                    seqs.setdefault(u, []).append(i)
                res["sequences"] = seqs
            if prepare:
                try:
                    with warnings.catch_warnings(record=True) as caught_prep:
                        warnings.simplefilter("always")
                        t1 = time.perf_counter()
                        train, valid, test = data_preparation(config, ds)
                        res["data_preparation_seconds"] = round(time.perf_counter() - t1, 3)
                        res["train_rows"] = len(train._dataset)

                        def targets(loader):
                            d = loader._dataset
                            u = tok["user_id"][d.inter_feat["user_id"].numpy()]
                            i = tok["item_id"][d.inter_feat["item_id"].numpy()]
                            return {str(a): str(b) for a, b in zip(u, i)}

                        res["valid_target"] = targets(valid)
                        res["test_target"] = targets(test)
                        res["valid_rows"], res["test_rows"] = len(valid._dataset), len(test._dataset)
                    caught = list(caught) + list(caught_prep)
                except Exception as exc:  # noqa: BLE001 (recorded and reported)
                    res["data_preparation_error"] = f"{type(exc).__name__}: {exc}"
                    res["data_preparation_traceback_tail"] = traceback.format_exc().strip().splitlines()[-6:]
            res["python_warnings"] = sorted({f"{w.category.__name__}: {str(w.message)[:200]}" for w in caught})
        except Exception as exc:  # noqa: BLE001 (recorded and reported)
            res["error"] = f"{type(exc).__name__}: {exc}"
            res["traceback_tail"] = traceback.format_exc().strip().splitlines()[-6:]
        finally:
            logging.getLogger().removeHandler(handler)
        res["log_warnings"] = handler.messages[:20]
        res["seconds"] = round(time.perf_counter() - t0, 3)
        return res

    out = {"versions": {"recbole": recbole.__version__, "torch": torch.__version__, "numpy": np.__version__,
                        "pandas": pd.__version__, "python": platform.python_version()},
           "shims": shims, "pandas3": pandas3, "datasets": {}, "probes": {}}
    def counted(name, d, prepare):
        before = json.loads(json.dumps(pandas3))
        res = load(name, d["root"], d["item_fields"], d["user_fields"], prepare)
        if pandas3["enabled"]:
            res["pandas3_shim_effects"] = {
                k: (pandas3[k] - before[k] if isinstance(pandas3[k], int)
                    else {f: n - before[k].get(f, 0) for f, n in pandas3[k].items() if n != before[k].get(f, 0)})
                for k in pandas3 if k != "enabled"}
        return res

    for name, d in spec["datasets"].items():
        out["datasets"][name] = counted(name, d, d["prepare"])
    for name, d in spec.get("probes", {}).items():
        out["probes"][name] = counted(name, d, False)
    return out


# ---------------------------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------------------------
def run(argv, log, what, timeout=600, **kw):
    t0 = time.perf_counter()
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout, **kw)
    entry = {"what": what, "command": " ".join(shlex.quote(a) for a in argv), "returncode": proc.returncode,
             "seconds": round(time.perf_counter() - t0, 2),
             "stdout_tail": proc.stdout.strip().splitlines()[-5:],
             "stderr_tail": proc.stderr.strip().splitlines()[-8:]}
    log.append(entry)
    if proc.returncode != 0:
        sys.stderr.write(f"{what} failed ({proc.returncode}):\n{proc.stderr[-4000:]}\n")
    return proc.returncode == 0


def diff_fields(ours: dict, theirs: dict, limit=5, labels=("ours", "recbole")):
    """Ids whose fields differ, with the first few differences."""
    la, lb = labels
    ids = sorted(set(ours) | set(theirs))
    bad = []
    for i in ids:
        a, b = ours.get(i), theirs.get(i)
        if a is None or b is None:
            bad.append({"id": i, la: a, lb: b})
            continue
        for f in sorted(set(a) | set(b)):
            va, vb = a.get(f, "<absent>"), b.get(f, "<absent>")
            if isinstance(va, float) and isinstance(vb, float):
                same = abs(va - vb) <= 1e-6 * max(1.0, abs(va))
            else:
                same = va == vb
            if not same:
                bad.append({"id": i, "field": f, la: va, lb: vb})
    return len(bad), bad[:limit]


def diff_seqs(ours: dict, theirs: dict):
    users = set(ours) | set(theirs)
    bad = sorted(u for u in users if ours.get(u) != theirs.get(u))
    return len(bad), bad[:5]


def compare(name: str, o: dict, r: dict) -> dict:
    row = {"dataset": name,
           "ours": {k: o[k] for k in ("users", "items", "interactions")},
           "recbole": {k: r.get(k) for k in ("users", "items", "interactions")} if "error" not in r else None}
    problems = []
    if "error" in r:
        problems.append(f"RecBole failed: {r['error']}")
        row.update(match=False, problems=problems, recbole_error=r.get("traceback_tail"))
        return row
    for k in ("users", "items", "interactions"):
        if o[k] != r[k]:
            problems.append(f"{k}: ours {o[k]} vs RecBole {r[k]}")
    if o["interactions"] != r["interactions"] and o["file_duplicate_rows"]:
        problems.append(f"(the file has {o['file_duplicate_rows']} duplicate (user, item, timestamp) rows: our "
                        f"loader drops them, RecBole with rm_dup_inter=None keeps them)")
    n, ex = diff_fields(o["item_fields"], r["item_fields"])
    row["item_field_mismatches"] = n
    if n:
        problems.append(f"{n} item field values differ, e.g. {ex}")
    n, ex = diff_fields(o["user_fields"], r["user_fields"])
    row["user_field_mismatches"] = n
    if n:
        problems.append(f"{n} user field values differ, e.g. {ex}")
    n, ex = diff_seqs(o["seq_file_f32"], r["sequences"])
    row["sequence_mismatches_vs_file_order_float32"] = n
    if n:
        problems.append(f"{n} users' sequences differ from the stable (user, float32 timestamp) sort of our "
                        f"file, e.g. users {ex}")
    row["sequence_differences_info"] = {
        "vs_our_loader_tie_break_file": diff_seqs(o["seq_file_tie"], r["sequences"])[0],
        "vs_our_loader_tie_break_item": diff_seqs(o["seq_item_tie"], r["sequences"])[0],
        "timestamps_changed_by_float32": o.get("timestamps_changed_by_float32"),
        "float32_ties_created_within_users": o.get("float32_ties_created_within_users"),
        "file_rows_grouped_and_time_ordered": o.get("file_sorted_by_user_time"),
        "recbole_timestamp_dtype": r.get("timestamp_dtype"),
    }
    if "test_target" in r:
        ot, ov = o["test_target"], o["valid_target"]
        rt, rv = r["test_target"], r["valid_target"]
        seq_len = {u: len(s) for u, s in o["seq_file_tie"].items()}
        split = {
            "recbole_train_rows": r["train_rows"], "recbole_valid_rows": r["valid_rows"],
            "recbole_test_rows": r["test_rows"], "our_evaluated_users": len(ot),
            "test_target_mismatches": sum(1 for u in rt if ot.get(u) != rt[u]),
            "valid_target_mismatches": sum(1 for u in rv if ov.get(u) != rv[u]),
            "users_with_test_only_in_recbole": sum(1 for u in rt if u not in rv),
            "users_with_fewer_than_3_items": sum(1 for n in seq_len.values() if n < 3),
            "users_with_exactly_3_items": sum(1 for n in seq_len.values() if n == 3),
            "note": "RecBole splits the augmented rows (n - 1 per user with n items) leaving out "
                    "min(2, rows - 1): a user with 3 items gets a test row but no valid row, one with 2 items "
                    "only a train row. Ours evaluates users with >= 3 items on both.",
        }
        row["split"] = split
        if split["test_target_mismatches"] or split["valid_target_mismatches"]:
            problems.append(f"leave-one-out targets differ: {split['test_target_mismatches']} test, "
                            f"{split['valid_target_mismatches']} valid")
    if "data_preparation_error" in r:
        problems.append(f"RecBole's data_preparation failed: {r['data_preparation_error']}")
    if r.get("nan_left"):
        problems.append(f"NaN left in RecBole's features: {r['nan_left']}")
    row["first_item"] = {"ours_file_row": o.get("first_item_row"),
                         "recbole": r["item_fields"].get(str((o.get("first_item_row") or {}).get("item_id")))}
    row["recbole_log_warnings"] = r.get("log_warnings")
    row["recbole_python_warnings"] = r.get("python_warnings")
    row["match"] = not problems
    row["problems"] = problems
    return row


def probe_report(name: str, o: dict, r: dict | None) -> dict:
    rep = {"probe": name, "what": o["what"]}
    if "write_error" in o:
        rep.update(verdict="our writer refuses", detail=o["write_error"])
        return rep
    rep["item_file_header"] = o["item_file_header"]
    rep["ours"] = ({k: o["ours"][k] for k in ("users", "items", "interactions")} if "ours" in o
                   else {"error": o.get("ours_error")})
    if r is None:
        rep["verdict"] = "not loaded by RecBole"
        return rep
    if "error" in r:
        rep["recbole"] = {"error": r["error"], "traceback_tail": r.get("traceback_tail")}
        rep["verdict"] = "RecBole fails"
    else:
        rep["recbole"] = {k: r[k] for k in ("users", "items", "interactions")}
        rep["recbole"]["field2type"] = r.get("field2type")
        n, ex = diff_fields(o["intended_item_fields"], r["item_fields"], limit=6, labels=("written", "recbole"))
        rep["item_values_differing_from_what_we_wrote"] = ex if n else []
        if "ours" in o:
            rep["our_reader_values_differing_from_what_we_wrote"] = diff_fields(
                o["intended_item_fields"], o["ours"]["item_fields"], limit=6, labels=("written", "ours"))[1]
        counts_differ = "ours" in o and any(o["ours"][k] != r[k] for k in ("users", "items", "interactions"))
        rep["verdict"] = "differs" if (n or counts_differ or "ours" not in o) else "same"
    rep["recbole_log_warnings"] = r.get("log_warnings")
    return rep


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recsys", default="/work/venv/bin/recsys", help="the project's recsys CLI")
    p.add_argument("--ours-python", default=None, help="python with recsys installed (default: beside --recsys)")
    p.add_argument("--recbole-python", default="/work/rbvenv/bin/python", help="python with RecBole 1.2.1")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output JSON")
    p.add_argument("--keep-tmp", action="store_true", help="keep the converted datasets (path is printed)")
    p.add_argument("--probes", action=argparse.BooleanOptionalAction, default=True,
                   help="also load small edge-case files written by our writer (informational)")
    p.add_argument("--nice", type=int, default=10,
                   help="raise this process's (and its children's) niceness by this much, so that a "
                        "timing benchmark running beside it is disturbed less (0: leave it)")
    p.add_argument("--side", choices=("ours", "recbole"), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.side:  # child process
        spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
        result = ours_side(spec) if args.side == "ours" else recbole_side(spec)
        _write_json(Path(args.result), result)
        return 0

    if args.nice > 0:
        os.nice(args.nice)
    t_start = time.perf_counter()
    ours_python = args.ours_python or str(Path(args.recsys).parent / "python")
    tmp = Path(tempfile.mkdtemp(prefix="recbole_reads_ours."))
    steps: list[dict] = []
    report = {"complete": False,
              "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
              "cwd": os.getcwd(), "tmp_dir": str(tmp), "interpreters": {
                  "recsys": args.recsys, "ours_python": ours_python, "recbole_python": args.recbole_python}}
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], check=False, capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "recsys"],
                               check=False, capture_output=True, text=True)
        report["git"] = {"head": rev.stdout.strip(), "recsys_package_dirty": bool(dirty.stdout.strip())}
    except OSError:
        pass
    status = 0
    try:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        converted = {}
        for c in conversions(tmp):
            if not run([args.recsys, *c["argv"]], steps, f"recsys {' '.join(c['argv'][:2])} ({c['name']})", env=env):
                raise SystemExit(2)
            converted[c["name"]] = str(tmp / c["name"])

        spec_o = {"datasets": converted, "probes_dir": str(tmp / "probes") if args.probes else None}
        (tmp / "spec_ours.json").write_text(json.dumps(spec_o), encoding="utf-8")
        if not run([ours_python, str(Path(__file__).resolve()), "--side", "ours", "--spec", str(tmp / "spec_ours.json"),
                    "--result", str(tmp / "ours.json")], steps, "our loader", env=env):
            raise SystemExit(2)
        ours = json.loads((tmp / "ours.json").read_text(encoding="utf-8"))

        def fields_for(header):
            item = header.get("item")
            user = header.get("user")
            return ([f for f in item if f != "item_id"] if item is not None else None,
                    [f for f in user if f != "user_id"] if user is not None else None)

        spec_r = {"datasets": {}, "probes": {}}
        for name, d in ours["datasets"].items():
            item_fields, user_fields = fields_for(d["header"])
            spec_r["datasets"][name] = {"root": str(tmp), "item_fields": item_fields, "user_fields": user_fields,
                                        "prepare": True}
        for name, d in ours["probes"].items():
            if "path" not in d:
                continue
            header = d["item_file_header"].split("\t")
            item_fields = [c.rpartition(":")[0] for c in header]
            spec_r["probes"][name] = {"root": str(tmp / "probes"),
                                      "item_fields": [f for f in item_fields if f != "item_id"],
                                      "user_fields": None}
        rb_runs = {}
        for tag, shimmed in (("recbole", True), ("recbole_no_pandas3_shims", False)):
            spec_file, result_file = tmp / f"spec_{tag}.json", tmp / f"{tag}.json"
            spec_file.write_text(json.dumps({**spec_r, "pandas3_shims": shimmed}), encoding="utf-8")
            work = tmp / f"cwd_{tag}"  # RecBole may create ./saved or ./log here, never in the repo
            work.mkdir()
            if not run([args.recbole_python, str(Path(__file__).resolve()), "--side", "recbole", "--spec",
                        str(spec_file), "--result", str(result_file)], steps,
                       f"RecBole ({'with' if shimmed else 'without'} pandas-3 shims)", env=env, cwd=str(work)):
                raise SystemExit(2)
            rb_runs[tag] = json.loads(result_file.read_text(encoding="utf-8"))
        rb, rb_raw = rb_runs["recbole"], rb_runs["recbole_no_pandas3_shims"]

        rows = [compare(name, ours["datasets"][name], rb["datasets"][name]) for name in converted]
        for row in rows:
            raw = compare(row["dataset"], ours["datasets"][row["dataset"]], rb_raw["datasets"][row["dataset"]])
            row["pandas3_shim_effects"] = rb["datasets"][row["dataset"]].get("pandas3_shim_effects")
            row["without_pandas3_shims"] = {"match": raw["match"], "problems": raw["problems"]}
        probes = [probe_report(name, ours["probes"][name], rb["probes"].get(name)) for name in ours["probes"]]
        for pr in probes:
            raw = rb_raw["probes"].get(pr["probe"])
            if raw is not None:
                pr["without_pandas3_shims"] = (
                    {"error": raw["error"]} if "error" in raw else
                    {k: raw.get(k) for k in ("users", "items", "interactions", "nan_left", "data_preparation_error")})
            pr["pandas3_shim_effects"] = (rb["probes"].get(pr["probe"]) or {}).get("pandas3_shim_effects")
        report.update(versions={"ours": ours["versions"], "recbole_env": rb["versions"]},
                      recbole_shims=rb["shims"],
                      recbole_config_dict=next(iter(rb["datasets"].values()))["config_dict"],
                      rows=rows, probes=probes, steps=steps,
                      timings={"ours_load_seconds": {n: d["load_seconds"] for n, d in ours["datasets"].items()},
                               "recbole_seconds": {n: d["seconds"] for n, d in rb["datasets"].items()}})

        def cnt(c):
            return "error" if c is None else f"{c['users']}/{c['items']}/{c['interactions']}"

        head = ("dataset", "ours users/items/inter", "RecBole users/items/inter", "fields", "sequences", "match",
                "without pandas-3 shims")
        table = [head]
        for r in rows:
            table.append((r["dataset"], cnt(r["ours"]), cnt(r["recbole"]),
                          "ok" if not r.get("item_field_mismatches") and not r.get("user_field_mismatches")
                          and r["recbole"] else "DIFF",
                          "ok" if r.get("sequence_mismatches_vs_file_order_float32") == 0 else "DIFF",
                          "yes" if r["match"] else "NO",
                          "match" if r["without_pandas3_shims"]["match"]
                          else r["without_pandas3_shims"]["problems"][0][:70]))
        widths = [max(len(str(t[i])) for t in table) for i in range(len(head))]
        lines = [" | ".join(str(c).ljust(w) for c, w in zip(t, widths)) for t in table]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        print("\n".join(lines))
        for r in rows:
            fi = r.get("first_item") or {}
            shown = {k: (v[:80] + "..." if isinstance(v, str) and len(v) > 80 else v)
                     for k, v in (fi.get("recbole") or {}).items()}
            print(f"\n{r['dataset']}: first item as RecBole parsed it: {shown}")
            if "split" in r:
                s = r["split"]
                print(f"  data_preparation: train {s['recbole_train_rows']} / valid {s['recbole_valid_rows']} / "
                      f"test {s['recbole_test_rows']} rows; targets differing from ours: test "
                      f"{s['test_target_mismatches']}, valid {s['valid_target_mismatches']}")
            info = r.get("sequence_differences_info") or {}
            print(f"  users whose RecBole sequence differs from our loader: tie_break=file "
                  f"{info.get('vs_our_loader_tie_break_file')}, tie_break=item {info.get('vs_our_loader_tie_break_item')}"
                  f" (timestamps changed by float32: {info.get('timestamps_changed_by_float32')}, new ties within a "
                  f"user: {info.get('float32_ties_created_within_users')})")
            for prob in r["problems"]:
                print(f"  MISMATCH: {prob}")
        if probes:
            print("\nwriter probes (informational, not part of the exit status):")
            for pr in probes:
                detail = ""
                if pr["verdict"] == "RecBole fails":
                    detail = pr["recbole"]["error"][:160]
                elif pr["verdict"] == "differs":
                    detail = (f"ours {cnt(pr['ours']) if 'users' in pr['ours'] else pr['ours']} vs RecBole "
                              f"{cnt(pr['recbole'])}; values {pr.get('item_values_differing_from_what_we_wrote')}")[:300]
                elif pr["verdict"] == "our writer refuses":
                    detail = pr["detail"][:160]
                raw = pr.get("without_pandas3_shims") or {}
                extra = f"  [without pandas-3 shims: {raw['error'][:90]}]" if "error" in raw else ""
                print(f"  {pr['probe']:<26} {pr['verdict']:<20} {detail}{extra}")
        status = 0 if all(r["match"] for r in rows) else 1
        report["all_match"] = status == 0
        report["complete"] = True
    except SystemExit as exc:
        status = int(exc.code or 2)
        report["steps"] = steps
        report["error"] = "a step failed; see steps"
    except Exception:  # noqa: BLE001 (recorded and reported)
        status = 2
        report["steps"] = steps
        report["error"] = traceback.format_exc()
        traceback.print_exc()
    finally:
        report["elapsed_seconds"] = round(time.perf_counter() - t_start, 2)
        _write_json(Path(args.out), report)
        print(f"\nwrote {args.out} ({report['elapsed_seconds']} s)")
        if args.keep_tmp:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
