"""The on-disk cache: converted backbones and item embeddings.

Location: ``$RECSYS_CACHE``, else ``$XDG_CACHE_HOME/recsys``, else ``~/.cache/recsys``.
Every write is crash- and race-safe: directories are built under a temporary name and
renamed into place while holding a file lock (two processes never both convert, a killed
one never leaves a half-written directory), and embeddings live in SQLite, whose
transactions are atomic; entries are verified (size, finite values) when read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from filelock import FileLock

from recsys.data.atomic import as_if_created


def cache_dir() -> Path:
    """The recsys cache directory (created on first use)."""
    root = os.environ.get("RECSYS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "recsys")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def fingerprint(value) -> str:
    """A short stable hash of any JSON-serialisable value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_directory(name: str, build: Callable[[Path], None]) -> Path:
    """``cache_dir()/name``, built once by ``build(tmp_dir)`` if missing.

    ``build`` writes into an empty temporary directory, which is renamed into place only
    when it returns; concurrent callers wait on a lock and then reuse the finished copy.
    """
    target = cache_dir() / name
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / ".complete").exists():
            return target
        if target.exists():  # left by a process killed before it finished: never trust it
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            as_if_created(tmp, directory=True)
            build(tmp)
            (tmp / ".complete").touch()
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


class EmbeddingCache:
    """Vectors keyed by (namespace, text) in one SQLite file.

    The namespace names everything besides the text that decides a vector (backbone and
    its source, pooling, max length); see :func:`recsys.llm.encoder.embed_texts`.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else cache_dir() / "embeddings.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS vectors (namespace TEXT, key TEXT, dim INTEGER, data BLOB,"
                       " PRIMARY KEY (namespace, key))")

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=120)
        try:
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def get(self, namespace: str, texts: Sequence[str]) -> dict[int, np.ndarray]:
        """Cached vectors by position in ``texts``; corrupt or missing entries are absent."""
        keys = [self._key(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        with self._connect() as db:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                rows = db.execute(
                    f"SELECT key, dim, data FROM vectors WHERE namespace = ? AND key IN ({','.join('?' * len(chunk))})",
                    [namespace, *chunk])
                for key, dim, data in rows:
                    if not isinstance(data, bytes) or len(data) != 4 * dim:
                        continue  # truncated or foreign entry: recompute rather than trust it
                    vector = np.frombuffer(data, dtype=np.float32)
                    if np.isfinite(vector).all():
                        found[key] = vector
        return {i: found[k] for i, k in enumerate(keys) if k in found}

    def put(self, namespace: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(texts) != len(vectors):
            raise ValueError(f"{len(texts)} texts but {len(vectors)} vectors")
        rows = [(namespace, self._key(t), int(v.shape[0]), v.tobytes()) for t, v in zip(texts, vectors)]
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)", rows)

    def clear(self, namespace: str | None = None) -> None:
        with self._connect() as db:
            if namespace is None:
                db.execute("DELETE FROM vectors")
            else:
                db.execute("DELETE FROM vectors WHERE namespace = ?", [namespace])
