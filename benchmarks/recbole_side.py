"""RecBole 1.2.1 side of the MovieLens-100k parity benchmarks (SASRec, GRU4Rec, NARM, Caser, CORE, BERT4Rec).

Runs RecBole's own implementation of ``--model`` on RecBole's bundled ml-100k
(``recbole/dataset_example/ml-100k/``) with the hyper-parameters below and
writes one JSON file with timings, throughput, peak memory and the best
validation / test metrics.  It is meant to run in its own virtualenv
(``/work/rbvenv``: ``pip install torch==2.13.0`` first, then
``pip install recbole==1.2.1 "setuptools<81"``), not in the project's own
environment.

Usage::

    python benchmarks/recbole_side.py --model GRU4Rec --epochs 300 --seed 0 --threads 1 \
        --patience 10          # -> benchmarks/results/recbole_gru4rec_ml-100k-seed0.json

A run killed mid-way (a session's end, a reboot) goes on with the same command plus
``--resume``: every epoch rewrites ``<workdir>/last.pth`` (model, optimizer, early-stopping
counter, best model file, the torch / numpy / Python / loader random states, the epochs recorded
so far), so it loses at most the epoch in flight and ends as an uninterrupted run would (checked:
Caser, 3 epochs, killed after epoch 0 and resumed: the same losses, validation and test metrics
to every printed digit). Once training has ended (early stop or last epoch) last.pth says so,
and a resume goes straight to testing the best model (checked the same way: the same test
metrics). The JSON lists each resume under ``resumed``.

(``--out`` chooses another file; the SASRec runs in docs/results.md were written with
``--out benchmarks/results/recbole_sasrec_ml-100k_seed0.json`` etc.)

Model hyper-parameters: RecBole 1.2.1's own defaults for the model
(``recbole/properties/model/<Model>.yaml``, repeated in ``MODELS`` below so the JSON
records them), except where the project's ``configs/ml-100k/<model>.yaml`` chose another
value; then both sides use the project's value and ``MODELS[...]["differs_from_recbole_default"]``
says so.  Training settings shared by every model: learning_rate 1e-3 (Adam),
train_batch_size 256 (RecBole's default is 2048; 256 was the SASRec benchmark's choice and is
Caser's batch in our config; for the other models our batches are windows, see
recbole_parity.py), loss_type CE, train_neg_sample_args None,
MAX_ITEM_LIST_LENGTH 50 (Caser: 5, the paper's L for MovieLens, as configs/ml-100k/caser.yaml),
eval_args = split LS valid_and_test / order TO / mode full / group_by user,
metrics Recall, NDCG, MRR, Hit @ [5, 10, 20, 50], valid_metric NDCG@10,
stopping_step = --patience (RecBole's ``early_stopping`` stops once
``cur_step > stopping_step``: after stopping_step + 1 validations in a row
without improvement, counted in validation epochs, eval_step 1), epochs =
--epochs, seed = --seed,
reproducibility True, use_gpu False, show_progress False,
eval_batch_size 4096.  ``torch.set_num_threads(--threads)`` is called and the
OMP/MKL/OpenBLAS thread variables are set to the same value (when not set
already) before numpy/torch are imported.

Targets: every call of the model's ``calculate_loss`` is counted (``epoch_train_targets``):
for every model but BERT4Rec one (prefix, next item) row is one cross-entropy target, so an
epoch has one target per augmented training row (97,171 on ml-100k); for BERT4Rec the loss
covers the masked positions RecBole's ``MaskItemSequence`` draws for each batch, counted as
``(MASK_INDEX > 0).sum()`` exactly as its ``calculate_loss`` weights them (random, so it
differs from epoch to epoch; ``train_targets_per_epoch`` is then their mean).

Timing is taken by subclassing RecBole's ``Trainer`` (``_train_epoch``,
``_valid_epoch`` and the test-time ``evaluate``) with ``time.perf_counter``;
no log parsing.  The JSON is written atomically (temp file + ``os.replace``)
after every epoch with ``"complete": false`` and rewritten with
``"complete": true`` at the end, so a killed run still leaves per-epoch data.
RecBole's own log file, tensorboard directory and checkpoint go to
``--workdir`` (default ``/work/rb-runs/<out-file-stem>``), never into the repo.

Run-time shims (applied in this script only; RecBole's installed files are
not modified):

1. ``setuptools<81`` (install-time pin): ray 2.6.3 imports ``pkg_resources``,
   which setuptools >= 81 no longer ships.  Only matters when ray is imported
   (``recbole.quick_start`` imports ``ray.tune``); this script uses RecBole's
   lower-level API and does not import ray, so the pin is belt and braces.
   The JSON records whether ray ended up imported.
2. numpy 2 aliases: ``np.bool8`` (used by ray's tune loggers) and
   ``np.float_``, ``np.complex_``, ``np.unicode_`` (read by RecBole's
   ``Config.compatibility_settings``, which runs in every ``Config()``; without
   them ``Config`` raises AttributeError) are set on numpy before RecBole is
   imported.  Only missing attributes are added.
3. pandas 3 copy-on-write: ``df[col].fillna(..., inplace=True)`` on a column
   no longer writes back to the frame.  RecBole uses that pattern in
   ``Dataset._fill_nan`` (TOKEN -> 0, FLOAT -> column mean) and in
   ``Dataset._load_feat`` (only for *_seq fields).  For ml-100k only
   ``user_id, item_id, rating, timestamp`` of ``ml-100k.inter`` are loaded
   (no *_seq field, no NaN), so it does not change anything here; still,
   ``_fill_nan`` is wrapped: NaNs are counted before the original runs and any
   NaN it failed to fill is filled by assignment.  The counts go in the JSON.
4. torch >= 2.6 defaults ``torch.load(weights_only=True)``, which cannot load
   RecBole's own checkpoints (they pickle the Config object).  ``torch.load``
   is wrapped, in this process only, to default ``weights_only=False`` when
   the caller does not pass it (used by ``Trainer.evaluate`` to reload the
   best model before testing).
5. ``import recbole.model.sequential_recommender`` (needed to get any of the models)
   also imports SINE, which calls ``torch.autograd.set_detect_anomaly(True)``
   at import time; that slows every backward pass, so it is switched off
   again right after import for fair timing.

Notes recorded in the JSON (from reading RecBole 1.2.1's code):
- Full-ranking evaluation of sequential models does not mask the user's
  history: ``FullSortEvalDataLoader`` returns ``history_index=None`` when
  ``MODEL_TYPE == SEQUENTIAL`` and ``Trainer._full_sort_batch_eval`` then only
  sets the padding item 0 to -inf, so already-seen items stay rankable.
- Order of timestamp ties: ``Interaction.sort`` uses a stable
  ``np.argsort``; ``SequentialDataset.data_augmentation`` sorts by
  (user, timestamp), so ties keep the file order of ``ml-100k.inter``.  The
  timestamp is min-max normalised (``normalize_all: True`` in RecBole's
  ml-100k.yaml) and stored as float32, which merges some distinct timestamps
  into new ties; the JSON reports how the resulting test targets compare
  with a stable (user, raw timestamp) sort of the file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections import OrderedDict


MODEL_NAMES = ("SASRec", "GRU4Rec", "NARM", "Caser", "CORE", "BERT4Rec")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="SASRec", choices=MODEL_NAMES)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--out", default=None,
                   help="output JSON path (default benchmarks/results/recbole_<model>_ml-100k-seed<seed>.json)")
    p.add_argument("--train-batch-size", type=int, default=256,
                   help="RecBole train_batch_size (its own default is 2048)")
    p.add_argument("--patience", type=int, default=10,
                   help="RecBole stopping_step: stops after stopping_step + 1 "
                        "evaluations without improvement")
    p.add_argument("--resume", action="store_true",
                   help="go on from <workdir>/last.pth, which every epoch rewrites (model, optimizer, "
                        "early-stopping state, random states, the epochs recorded so far): a run killed "
                        "mid-way loses at most its epoch in flight")
    p.add_argument("--workdir", default=None,
                   help="where RecBole writes its log/, log_tensorboard/ and "
                        "saved/ (default /work/rb-runs/<out stem>)")
    return p.parse_args(argv)


ARGS = parse_args()
OUT = os.path.abspath(ARGS.out or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results",
    f"recbole_{ARGS.model.lower()}_ml-100k-seed{ARGS.seed}.json"))
WORKDIR = os.path.abspath(
    ARGS.workdir or os.path.join("/work/rb-runs", os.path.splitext(os.path.basename(OUT))[0])
)
COMMAND = " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv)
T_PROCESS0 = time.perf_counter()

# Thread limits must be in the environment before numpy / torch load their
# BLAS / OpenMP runtimes.
THREAD_ENV = {}
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, str(ARGS.threads))
    THREAD_ENV[_var] = os.environ[_var]

import resource  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

SHIMS = []

# --- shim 2: numpy 2 removed aliases ---------------------------------------
_np_added = []
for _name, _target in (("bool8", np.bool_), ("float_", np.float64),
                       ("complex_", np.complex128), ("unicode_", np.str_)):
    if not hasattr(np, _name):
        setattr(np, _name, _target)
        _np_added.append(f"np.{_name} = np.{_target.__name__}")
SHIMS.append({
    "name": "numpy2-aliases",
    "applied": bool(_np_added),
    "detail": _np_added or "numpy already has the aliases",
    "why": "np.bool8 used by ray 2.6.3 tune loggers; np.float_/np.complex_/np.unicode_ "
           "read by recbole Config.compatibility_settings (raises AttributeError without them)",
})

# --- shim 1: setuptools<81 so pkg_resources exists for ray ------------------
try:
    import importlib.metadata as _ilm
    _st_ver = _ilm.version("setuptools")
except Exception:  # pragma: no cover
    _st_ver = None
try:
    import importlib.util as _ilu
    _has_pkg_resources = _ilu.find_spec("pkg_resources") is not None
except Exception:  # pragma: no cover
    _has_pkg_resources = False
SHIMS.append({
    "name": "setuptools<81",
    "applied": True,
    "detail": {"setuptools": _st_ver, "pkg_resources_importable": _has_pkg_resources},
    "why": "ray 2.6.3 imports pkg_resources (removed in setuptools>=81); install-time pin. "
           "Only needed if ray is imported (recbole.quick_start); see ray_imported.",
})

import torch  # noqa: E402

# --- shim 4: torch.load weights_only default ---------------------------------
_orig_torch_load = torch.load
_torch_load_calls = {"n": 0}


def _torch_load_compat(*args, **kwargs):
    _torch_load_calls["n"] += 1
    kwargs.setdefault("weights_only", False)
    return _orig_torch_load(*args, **kwargs)


torch.load = _torch_load_compat

torch.set_num_threads(ARGS.threads)

# RecBole imports (no recbole.quick_start -> no ray)
import recbole  # noqa: E402
from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.data.dataloader import FullSortEvalDataLoader  # noqa: E402
from recbole.data.dataset import Dataset  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import FeatureType, get_model, init_logger, init_seed  # noqa: E402

_anomaly_before = torch.is_anomaly_enabled()
MODEL_CLASS = get_model(ARGS.model)  # imports recbole.model.sequential_recommender (incl. SINE)
_anomaly_after_import = torch.is_anomaly_enabled()

# --- shim 5: SINE turns on autograd anomaly detection at import --------------
torch.autograd.set_detect_anomaly(False)
SHIMS.append({
    "name": "disable-autograd-anomaly-detection",
    "applied": True,
    "detail": {"enabled_before_import": _anomaly_before,
               "enabled_after_import": _anomaly_after_import,
               "enabled_now": torch.is_anomaly_enabled()},
    "why": "recbole/model/sequential_recommender/sine.py calls "
           "torch.autograd.set_detect_anomaly(True) at import time",
})
SHIMS.append({
    "name": "torch.load-weights_only-False",
    "applied": True,
    "detail": "torch.load wrapped in this process to default weights_only=False "
              "(call count filled in at the end)",
    "why": "torch>=2.6 defaults weights_only=True, which rejects RecBole checkpoints "
           "(they pickle the Config); Trainer.evaluate(load_best_model=True) reloads one",
})

# --- shim 3: pandas 3 ignores column fillna(inplace=True) ---------------------
FILL_NAN_REPORT = {"nan_before": {}, "nan_left_by_recbole": {}, "filled_by_shim": {}}
_orig_fill_nan = Dataset._fill_nan


def _fill_nan_compat(self):
    for feat_name in self.feat_name_list:
        feat = getattr(self, feat_name)
        for field in feat:
            if self.field2type[field] in (FeatureType.TOKEN, FeatureType.FLOAT):
                FILL_NAN_REPORT["nan_before"][f"{feat_name}.{field}"] = int(feat[field].isna().sum())
    means = {}
    for feat_name in self.feat_name_list:
        feat = getattr(self, feat_name)
        for field in feat:
            if self.field2type[field] == FeatureType.FLOAT:
                means[(feat_name, field)] = feat[field].mean()
    _orig_fill_nan(self)
    for feat_name in self.feat_name_list:
        feat = getattr(self, feat_name)
        for field in feat:
            ftype = self.field2type[field]
            if ftype not in (FeatureType.TOKEN, FeatureType.FLOAT):
                continue
            left = int(feat[field].isna().sum())
            FILL_NAN_REPORT["nan_left_by_recbole"][f"{feat_name}.{field}"] = left
            if left:
                value = 0 if ftype == FeatureType.TOKEN else means[(feat_name, field)]
                feat[field] = feat[field].fillna(value=value)
                FILL_NAN_REPORT["filled_by_shim"][f"{feat_name}.{field}"] = left


Dataset._fill_nan = _fill_nan_compat
SHIMS.append({
    "name": "pandas3-fillna-inplace",
    "applied": True,
    "detail": "Dataset._fill_nan wrapped: counts NaN, runs RecBole's version, fills what "
              "it left by assignment (see fill_nan_report; for ml-100k there is no NaN, so "
              "it changes nothing). Dataset._load_feat's fillna only touches *_seq fields, "
              "none of which are loaded for ml-100k, so it is not patched.",
    "why": "pandas>=3 copy-on-write: df[col].fillna(inplace=True) does not write back",
})


# ---------------------------------------------------------------------------
def atomic_write_json(path, obj):
    d = os.path.dirname(path) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    return str(o)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _clean_metrics(d):
    if d is None:
        return None
    return OrderedDict((k, float(v)) for k, v in d.items())


# One entry per model: RecBole 1.2.1's defaults for it (properties/model/<Model>.yaml, RecBole's
# names), the training settings that are not RecBole's defaults, and what differs from them.
_TRANSFORMER = dict(n_layers=2, n_heads=2, inner_size=256, hidden_act="gelu", layer_norm_eps=1e-12,
                    initializer_range=0.02)
MODELS = {
    "SASRec": dict(
        hyper=dict(hidden_size=64, **_TRANSFORMER, hidden_dropout_prob=0.5, attn_dropout_prob=0.5),
        differs_from_recbole_default=["train_batch_size 256 (RecBole: 2048)"],
        ours="configs/ml-100k/sasrec.yaml"),
    "GRU4Rec": dict(
        hyper=dict(embedding_size=64, hidden_size=128, num_layers=1, dropout_prob=0.3),
        differs_from_recbole_default=["train_batch_size 256 (RecBole: 2048)"],
        ours="configs/ml-100k/gru4rec.yaml"),
    "NARM": dict(
        hyper=dict(embedding_size=64, hidden_size=128, n_layers=1, dropout_probs=[0.25, 0.5]),
        differs_from_recbole_default=["train_batch_size 256 (RecBole: 2048)"],
        ours="configs/ml-100k/narm.yaml"),
    "Caser": dict(
        hyper=dict(embedding_size=64, nh=8, nv=4, dropout_prob=0.4, reg_weight=1e-4, MAX_ITEM_LIST_LENGTH=5),
        differs_from_recbole_default=[
            "MAX_ITEM_LIST_LENGTH 5 (RecBole's ml-100k.yaml: 50; configs/ml-100k/caser.yaml uses the paper's "
            "L = 5 for MovieLens, and RecBole's Caser docstring asks for a small value)",
            "train_batch_size 256 (RecBole: 2048; configs/ml-100k/caser.yaml: 256 windows, one target each)"],
        ours="configs/ml-100k/caser.yaml"),
    "CORE": dict(
        hyper=dict(embedding_size=64, **_TRANSFORMER, hidden_dropout_prob=0.5, attn_dropout_prob=0.5,
                   dnn_type="trm", sess_dropout=0.2, item_dropout=0.2, temperature=0.07),
        differs_from_recbole_default=["train_batch_size 256 (RecBole: 2048)"],
        ours="configs/ml-100k/core.yaml"),
    "BERT4Rec": dict(
        hyper=dict(hidden_size=64, **_TRANSFORMER, hidden_dropout_prob=0.2, attn_dropout_prob=0.2,
                   mask_ratio=0.2, ft_ratio=0.5, transform="mask_itemseq"),
        differs_from_recbole_default=["train_batch_size 256 (RecBole: 2048)"],
        ours="configs/ml-100k/bert4rec.yaml"),
}
MODEL = MODELS[ARGS.model]

HYPER = OrderedDict(
    model=ARGS.model,
    dataset="ml-100k",
    **MODEL["hyper"],
)
HYPER.setdefault("MAX_ITEM_LIST_LENGTH", 50)
HYPER.update(
    learning_rate=1e-3,
    learner="adam",
    weight_decay=0.0,
    train_batch_size=ARGS.train_batch_size,
    loss_type="CE",
    train_neg_sample_args=None,
    eval_args={"split": {"LS": "valid_and_test"}, "order": "TO",
               "mode": "full", "group_by": "user"},
    metrics=["Recall", "NDCG", "MRR", "Hit"],
    topk=[5, 10, 20, 50],
    valid_metric="NDCG@10",
    valid_metric_bigger=True,
    stopping_step=ARGS.patience,
    eval_step=1,
    epochs=ARGS.epochs,
    seed=ARGS.seed,
    reproducibility=True,
    use_gpu=False,
    show_progress=False,
    eval_batch_size=4096,
    shuffle=True,
    checkpoint_dir="saved",
    state="INFO",
)

REPORT = OrderedDict()
REPORT["complete"] = False
REPORT["stage"] = "starting"
REPORT["command"] = COMMAND
REPORT["cwd_at_launch"] = os.getcwd()
REPORT["workdir"] = WORKDIR
REPORT["versions"] = OrderedDict(
    recbole=recbole.__version__,
    torch=torch.__version__,
    numpy=np.__version__,
    pandas=pd.__version__,
    python=platform.python_version(),
)
REPORT["platform"] = OrderedDict(
    machine=platform.machine(), processor=platform.processor(), system=platform.platform(),
    cpu_count=os.cpu_count(),
)
REPORT["threads"] = OrderedDict(requested=ARGS.threads, torch_num_threads=torch.get_num_threads(),
                                torch_interop_threads=torch.get_num_interop_threads(),
                                env=THREAD_ENV)
REPORT["shims"] = SHIMS
REPORT["model"] = ARGS.model
REPORT["hyper_parameters"] = HYPER
REPORT["differs_from_recbole_default"] = MODEL["differs_from_recbole_default"]
REPORT["compare_with"] = MODEL["ours"]
REPORT["epoch_train_targets"] = []
REPORT["epoch_train_seconds"] = []
REPORT["epoch_eval_seconds"] = []
REPORT["epoch_train_loss_sum"] = []
REPORT["epoch_valid_metrics"] = []


def write_report():
    REPORT["peak_rss_mib"] = round(peak_rss_mib(), 1)
    REPORT["elapsed_seconds_since_start"] = round(time.perf_counter() - T_PROCESS0, 3)
    train_s = REPORT["epoch_train_seconds"]
    eval_s = REPORT["epoch_eval_seconds"]
    REPORT["epochs_run"] = len(train_s)
    if REPORT["epoch_train_targets"] and ARGS.model == "BERT4Rec":
        REPORT["train_targets_per_epoch"] = round(statistics.mean(REPORT["epoch_train_targets"]), 1)
    n_targets = REPORT.get("train_targets_per_epoch")
    if train_s and n_targets:
        med = statistics.median(train_s)
        REPORT["median_epoch_train_seconds"] = round(med, 4)
        REPORT["throughput_targets_per_second"] = round(n_targets / med, 2)
    best = REPORT.get("best_epoch")
    if best is not None:
        k = best + 1
        REPORT["wall_seconds_to_best"] = round(sum(train_s[:k]) + sum(eval_s[:k]), 3)
    REPORT["train_seconds_total"] = round(sum(train_s), 3)
    REPORT["eval_seconds_total"] = round(sum(eval_s), 3)
    atomic_write_json(OUT, REPORT)


class TimedTrainer(Trainer):
    """RecBole's Trainer with per-epoch timers and JSON progress."""

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        TARGETS["n"] = 0
        t0 = time.perf_counter()
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func,
                                    show_progress=show_progress)
        dt = time.perf_counter() - t0
        REPORT["epoch_train_seconds"].append(round(dt, 4))
        REPORT["epoch_train_targets"].append(TARGETS["n"])
        total = sum(loss) if isinstance(loss, tuple) else loss
        REPORT["epoch_train_loss_sum"].append(float(total))
        REPORT["stage"] = f"trained epoch {epoch_idx}"
        write_report()
        return loss

    def _valid_epoch(self, valid_data, show_progress=False):
        t0 = time.perf_counter()
        score, result = super()._valid_epoch(valid_data, show_progress=show_progress)
        dt = time.perf_counter() - t0
        REPORT["epoch_eval_seconds"].append(round(dt, 4))
        REPORT["epoch_valid_metrics"].append(_clean_metrics(result))
        return score, result

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        # Called by fit() exactly when the validation metric improved.
        if epoch >= 0:
            REPORT["best_epoch"] = int(epoch)
        return super()._save_checkpoint(epoch, verbose=verbose, **kwargs)


TARGETS = {"n": 0}


def count_targets(model):
    """Wrap ``model.calculate_loss`` (this instance only) to count the targets its loss covers."""
    original = model.calculate_loss

    def counted(interaction):
        if ARGS.model == "BERT4Rec":
            # BERT4Rec.calculate_loss weights each masked slot by (MASK_INDEX > 0): padding slots and
            # a mask drawn at index 0 carry no loss.
            TARGETS["n"] += int((interaction[model.MASK_INDEX] > 0).sum())
        else:
            TARGETS["n"] += len(interaction)  # one (prefix, next item) row = one CE target
        return original(interaction)

    model.calculate_loss = counted


def epoch_callback(epoch_idx, valid_score):
    REPORT["stage"] = f"evaluated epoch {epoch_idx}"
    REPORT["last_valid_score"] = float(valid_score)
    if REPORT.get("best_epoch") is not None:
        REPORT["best_valid_metrics"] = REPORT["epoch_valid_metrics"][REPORT["best_epoch"]]
    write_report()
    save_last(epoch_idx)


# ---- resuming (--resume) -----------------------------------------------------------------------
# RecBole saves a checkpoint only when validation improves, without the early-stopping counter's
# later steps or any random state; going on from it would redo epochs with other draws. So every
# epoch also writes its own last.pth (atomically).

RUN = {}  # the trainer and the training loader, for save_last / resume
PER_EPOCH = ("epoch_train_targets", "epoch_train_seconds", "epoch_eval_seconds", "epoch_train_loss_sum",
             "epoch_valid_metrics")


def last_path():
    return os.path.join(WORKDIR, "last.pth")


def save_last(epoch_idx, trained=False):
    """Write last.pth; ``trained``: fit() has returned (early stop or last epoch), so a resume goes
    straight to the test instead of training past the stop."""
    import random

    trainer, loader = RUN["trainer"], RUN["train_data"]
    state = {
        "epoch": epoch_idx, "cur_step": trainer.cur_step, "best_valid_score": trainer.best_valid_score,
        "best_valid_result": trainer.best_valid_result, "best_model_file": trainer.saved_model_file,
        "model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                "loader": loader.generator.get_state()},
        "report": {key: REPORT[key] for key in (*PER_EPOCH, "best_epoch", "resumed") if key in REPORT},
        "trained": trained,
    }
    partial = last_path() + ".partial"
    torch.save(state, partial)
    os.replace(partial, last_path())


def resume(trainer, loader):
    """Load last.pth into ``trainer`` and the report; returns whether training had finished."""
    import random

    if not os.path.exists(last_path()):
        print(f"--resume: no {last_path()}, starting from scratch", file=sys.stderr)
        return False
    state = torch.load(last_path(), weights_only=False)
    if state["epoch"] + 1 < len(state["report"]["epoch_train_seconds"]):  # pragma: no cover - defensive
        raise SystemExit(f"{last_path()}: its report holds more epochs than its checkpoint")
    trainer.start_epoch, trainer.cur_step = state["epoch"] + 1, state["cur_step"]
    trainer.best_valid_score, trainer.best_valid_result = state["best_valid_score"], state["best_valid_result"]
    trainer.saved_model_file = state["best_model_file"]  # the best model so far; later improvements overwrite it
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    loader.generator.set_state(state["rng"]["loader"])
    REPORT.update(state["report"])
    REPORT["resumed"] = [*REPORT.get("resumed", []), {"after_epoch": state["epoch"], "command": COMMAND}]
    if state.get("trained"):
        print(f"--resume: training had finished ({last_path()}); testing", file=sys.stderr)
        return True
    print(f"--resume: going on from epoch {trainer.start_epoch} ({last_path()})", file=sys.stderr)
    return False


def tie_order_check(dataset, test_ds, valid_ds, data_path):
    """Compare RecBole's per-user last two targets with a stable sort of the raw file."""
    raw = pd.read_csv(os.path.join(data_path, "ml-100k.inter"), sep="\t")
    raw.columns = ["user", "item", "rating", "timestamp"]
    raw["user"] = raw["user"].astype(str)
    raw["item"] = raw["item"].astype(str)
    s = raw.sort_values(["user", "timestamp"], kind="stable")
    last = s.groupby("user").tail(1).set_index("user")["item"]
    second = s.groupby("user").nth(-2).set_index("user")["item"]
    uid, iid = dataset.uid_field, dataset.iid_field

    def targets(ds):
        u = dataset.id2token(uid, ds.inter_feat[uid].numpy())
        i = dataset.id2token(iid, ds.inter_feat[iid].numpy())
        return pd.Series(np.asarray(i).astype(str), index=np.asarray(u).astype(str))

    rt, rv = targets(test_ds), targets(valid_ds)
    dup_mask = raw.duplicated(["user", "timestamp"], keep=False)
    lt = s.groupby("user")["timestamp"].transform("max")
    users_tie_at_last = raw.loc[(raw["timestamp"] == lt.reindex(raw.index)) & dup_mask, "user"].nunique()
    return OrderedDict(
        interactions_sharing_user_timestamp_with_another=int(dup_mask.sum()),
        users_with_tie_at_their_last_timestamp=int(users_tie_at_last),
        test_target_equals_stable_raw_sort_last=int((rt == last.reindex(rt.index)).sum()),
        valid_target_equals_stable_raw_sort_second_last=int((rv == second.reindex(rv.index)).sum()),
        users_compared=int(len(rt)),
        note="RecBole sorts with a stable argsort, so timestamp ties keep ml-100k.inter file "
             "order; but it sorts on the min-max-normalised float32 timestamp, which merges a "
             "few distinct timestamps, so a few users' targets differ from a stable sort on the "
             "raw integer timestamp.",
    )


def main():
    os.makedirs(WORKDIR, exist_ok=True)
    os.chdir(WORKDIR)  # RecBole writes ./log, ./log_tensorboard, ./saved
    write_report()

    config_dict = {k: v for k, v in HYPER.items() if k not in ("model", "dataset")}
    t0 = time.perf_counter()
    config = Config(model=ARGS.model, dataset="ml-100k", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    torch.set_num_threads(ARGS.threads)  # in case anything above reset it
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    REPORT["data_prep_seconds"] = round(time.perf_counter() - t0, 3)
    REPORT["data_path"] = config["data_path"]
    REPORT["resolved_config"] = OrderedDict(
        (k, config[k]) for k in (
            "normalize_all", "load_col", "user_inter_num_interval", "item_inter_num_interval",
            "rm_dup_inter", "val_interval", "filter_inter_by_user_or_item", "repeatable",
            "MODEL_INPUT_TYPE", "metric_decimal_place", "device", "eval_args",
            "train_neg_sample_args", "valid_neg_sample_args", "test_neg_sample_args",
            "MAX_ITEM_LIST_LENGTH", "train_batch_size", "transform")
    )
    REPORT["fill_nan_report"] = FILL_NAN_REPORT

    tr, va, te = train_data._dataset, valid_data._dataset, test_data._dataset
    REPORT["data"] = OrderedDict(
        users_in_dataset=int(dataset.user_num - 1),  # minus [PAD]
        items_in_dataset=int(dataset.item_num - 1),
        augmented_rows_total=int(len(dataset.inter_feat)),  # build() augments in place
        augmented_rows_train=int(len(tr)),
        valid_rows=int(len(va)),
        test_rows=int(len(te)),
        users_evaluated_valid=int(len(np.unique(va.inter_feat[va.uid_field].numpy()))),
        users_evaluated_test=int(len(np.unique(te.inter_feat[te.uid_field].numpy()))),
        train_batches_per_epoch=int(len(train_data)),
        max_item_list_length=int(config["MAX_ITEM_LIST_LENGTH"]),
        note="RecBole's SequentialDataset turns every interaction after a user's first into one "
             "(prefix -> next item) row (prefix truncated to the last MAX_ITEM_LIST_LENGTH items), then "
             "leave-one-out "
             "takes each user's last row as test and second-to-last as valid. No user/item "
             "filtering is configured for ml-100k (user_inter_num_interval / "
             "item_inter_num_interval are None).",
    )
    # One CE target per training row; BERT4Rec's count is the masked positions, set per epoch.
    REPORT["train_targets_per_epoch"] = None if ARGS.model == "BERT4Rec" else int(len(tr))
    REPORT["train_targets_counting"] = (
        "masked positions the loss covers, (MASK_INDEX > 0).sum() per batch, counted each epoch"
        if ARGS.model == "BERT4Rec" else "one (prefix, next item) row of the training set = one CE target")
    REPORT["history_masking_in_full_ranking"] = OrderedDict(
        masked=False,
        valid_loader_is_sequential=bool(getattr(valid_data, "is_sequential", None)),
        test_loader_is_sequential=bool(getattr(test_data, "is_sequential", None)),
        is_full_sort_loader=isinstance(test_data, FullSortEvalDataLoader),
        note="RecBole 1.2.1 does NOT mask the user's history for sequential models in full "
             "ranking: FullSortEvalDataLoader.collate_fn returns history_index=None when "
             "MODEL_TYPE is SEQUENTIAL, and Trainer._full_sort_batch_eval then only sets the "
             "padding item (id 0) to -inf. All 1682 real items are ranked.",
    )
    try:
        REPORT["timestamp_tie_order"] = tie_order_check(dataset, te, va, config["data_path"])
    except Exception as e:  # diagnostic only
        REPORT["timestamp_tie_order"] = {"error": repr(e)}
    REPORT["stage"] = "data ready"
    write_report()

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = MODEL_CLASS(config, tr).to(config["device"])
    count_targets(model)
    REPORT["model_parameters"] = int(sum(p.numel() for p in model.parameters()))
    trainer = TimedTrainer(config, model)
    RUN.update(trainer=trainer, train_data=train_data)
    trained = False
    if ARGS.resume:
        trained = resume(trainer, train_data)
    elif os.path.exists(last_path()):
        os.remove(last_path())  # a fresh run: an older run's last.pth must not be resumed later
    REPORT["recbole_checkpoint"] = os.path.abspath(trainer.saved_model_file)
    REPORT["recbole_log_file"] = next(
        (os.path.abspath(h.baseFilename) for h in __import__("logging").getLogger().handlers
         if hasattr(h, "baseFilename")), None)
    REPORT["stage"] = "training"
    write_report()

    if trained:  # killed after training ended: the restored best model is tested as it was
        best_valid_score, best_valid_result = trainer.best_valid_score, trainer.best_valid_result
    else:
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=True, show_progress=False, callback_fn=epoch_callback
        )
        save_last(len(REPORT["epoch_train_seconds"]) - 1, trained=True)
    REPORT["best_valid_score"] = float(best_valid_score)
    REPORT["best_valid_metrics"] = _clean_metrics(best_valid_result)
    n_epochs = len(REPORT["epoch_train_seconds"])
    REPORT["stopped_early"] = n_epochs < ARGS.epochs
    REPORT["stage"] = "testing"
    write_report()

    t0 = time.perf_counter()
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    REPORT["test_eval_seconds"] = round(time.perf_counter() - t0, 4)
    REPORT["test_metrics"] = _clean_metrics(test_result)
    for sh in SHIMS:
        if sh["name"] == "torch.load-weights_only-False":
            sh["detail"] = ("torch.load wrapped in this process to default weights_only=False; "
                            f"called {_torch_load_calls['n']} time(s) by RecBole")
    REPORT["ray_imported"] = "ray" in sys.modules
    REPORT["autograd_anomaly_enabled_at_end"] = torch.is_anomaly_enabled()
    REPORT["complete"] = True
    REPORT["stage"] = "done"
    write_report()
    if os.path.exists(last_path()):  # finished: nothing to go on from (a later --resume starts afresh)
        os.remove(last_path())
    print(json.dumps({k: REPORT.get(k) for k in (
        "epochs_run", "best_epoch", "median_epoch_train_seconds", "throughput_targets_per_second",
        "wall_seconds_to_best", "peak_rss_mib", "test_metrics")}, indent=2))


if __name__ == "__main__":
    main()
