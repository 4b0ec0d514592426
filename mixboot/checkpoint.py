"""Checkpoints: a run's finished replicates kept on disk, so that it can resume and grow.

A checkpoint is a directory: ``manifest.json`` names the run (its identity:
model, data, options, statistic, package version) and its seed; ``chunk-*.pkl``
files hold finished chunks; ``lock`` is held by the run using the directory.
Every file is written atomically (temporary file, fsync, rename) with a SHA-256
checksum, so a run killed at any moment leaves complete files only, and a
damaged file is noticed and computed again.  :mod:`mixboot.runner` decides what
to compute; this module only stores and reads.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import pickle
import tempfile
import time
import warnings
from typing import Any

import numpy as np

from ._version import __version__

__all__ = ["Checkpoint", "CHECKPOINT_INTERVAL"]

# Finished chunks are written at most this often (seconds): each write is a file,
# an fsync and a rename; a killed run loses at most this much work.
CHECKPOINT_INTERVAL = 2.0
_FORMAT = "mixboot.checkpoint"
_FORMAT_VERSION = 1


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the whole new one."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _canonical(obj) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=_jsonable))


def _jsonable(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, (np.ndarray, tuple)):
        return np.asarray(obj).tolist()
    if isinstance(obj, np.bool_):
        return bool(obj)
    raise TypeError(f"{obj!r} cannot be stored in a checkpoint manifest")


class Checkpoint:
    """A directory of finished chunks and a manifest naming the job and seed.

    Files: ``manifest.json``; ``chunk-<digest>.pkl`` holding ``sha256 hex\\n``
    then a pickle of the chunks written together; ``lock``, held by the run
    that uses the directory.  Every file
    is written atomically (temporary file, fsync, rename), so a run killed at
    any moment leaves complete files only; temporary files it left are removed
    by the next run.
    """

    def __init__(self, path, identity: dict):
        self.path = os.path.abspath(os.fspath(path))
        self.identity = _canonical(identity)
        self.pending: list[tuple[np.ndarray, dict]] = []
        self.last_write = time.monotonic()

    def open(
        self, root: np.random.SeedSequence | None, *, from_generator: bool = False
    ) -> np.random.SeedSequence:
        """Lock the directory, check (or write) its manifest; return the run's root seed.

        ``root``: the caller's root SeedSequence, or None to take the stored one
        (a new checkpoint then gets a fresh one).  ``from_generator``: the root
        was drawn from a numpy Generator, so only its entropy can resume the run.
        """
        os.makedirs(self.path, exist_ok=True)
        self._lock()
        try:
            return self._start(root, from_generator)
        except BaseException:
            self.lock.close()
            raise

    def _start(self, root, from_generator) -> np.random.SeedSequence:
        # Temporary files are a killed run's unfinished writes (the lock says no
        # other run is writing here).
        for tmp in glob.glob(os.path.join(self.path, ".tmp-*")):
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        manifest_path = os.path.join(self.path, "manifest.json")
        if os.path.exists(manifest_path):
            with open(manifest_path, "rb") as fh:
                manifest = json.loads(fh.read())
            if manifest.get("format") != _FORMAT:
                raise ValueError(f"{self.path!r} is not a mixboot checkpoint")
            stored = manifest["identity"]
            if stored != self.identity:
                raise ValueError(
                    f"checkpoint {self.path!r} belongs to another run: "
                    + _differences(stored, self.identity)
                    + "; use another directory (or delete this one)"
                )
            saved = np.random.SeedSequence(
                int(manifest["seed_entropy"]), spawn_key=tuple(manifest["spawn_key"])
            )
            if root is None:
                return saved
            if (root.entropy, tuple(root.spawn_key)) != (saved.entropy, tuple(saved.spawn_key)):
                raise ValueError(
                    f"checkpoint {self.path!r} was made with seed {saved.entropy}, "
                    f"not {root.entropy}: pass seed={saved.entropy} (or seed=None) "
                    "to resume it, or use another directory"
                )
            return root
        root = np.random.SeedSequence() if root is None else root
        if from_generator:
            warnings.warn(
                "a checkpoint with seed=<Generator> can only be resumed with "
                f"seed={root.entropy} (or seed=None)",
                UserWarning,
                stacklevel=4,
            )
        manifest = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "created_by": f"mixboot {__version__}",
            "identity": self.identity,
            "seed_entropy": int(root.entropy),
            "spawn_key": list(root.spawn_key),
        }
        _write_atomic(manifest_path, json.dumps(manifest, indent=1).encode())
        return root

    def _lock(self) -> None:
        """Hold the directory for this run: two runs must not write one checkpoint."""
        self.lock = open(os.path.join(self.path, "lock"), "a+")
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return
        try:
            fcntl.flock(self.lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.lock.close()
            raise RuntimeError(
                f"checkpoint {self.path!r} is in use by another run; wait for "
                "it to finish or use another directory"
            ) from None

    def close(self) -> None:
        """Write what is pending and let other runs use the directory."""
        try:
            self.flush()
        finally:
            self.lock.close()

    def load(self, B: int) -> list[tuple[np.ndarray, dict]]:
        """The stored chunks, cut to replicates below B; a damaged file is skipped (and said)."""
        out = []
        for path in sorted(glob.glob(os.path.join(self.path, "chunk-*.pkl"))):
            try:
                with open(path, "rb") as fh:
                    head, _, body = fh.read().partition(b"\n")
                if head.decode("ascii", "replace") != _digest(body):
                    raise ValueError("checksum mismatch")
                chunks = pickle.loads(body)
            except Exception as exc:  # noqa: BLE001 - a damaged file is recomputed
                warnings.warn(
                    f"checkpoint file {path!r} is damaged ({exc}); its replicates "
                    "are computed again",
                    RuntimeWarning,
                    stacklevel=4,
                )
                with contextlib.suppress(OSError):
                    os.unlink(path)
                continue
            for reps, part in chunks:
                keep = reps < B
                if keep.all():
                    out.append((reps, part))
                elif keep.any():
                    out.append((reps[keep], _below(part, keep, reps)))
        return out

    def add(self, reps: np.ndarray, out: dict) -> None:
        self.pending.append((reps, out))
        if time.monotonic() - self.last_write >= CHECKPOINT_INTERVAL:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        body = pickle.dumps(self.pending, protocol=pickle.HIGHEST_PROTOCOL)
        # Named by content: chunks finish out of order, so a file holds no one range.
        name = f"chunk-{_digest(body)[:20]}.pkl"
        _write_atomic(os.path.join(self.path, name), _digest(body).encode() + b"\n" + body)
        self.pending = []
        self.last_write = time.monotonic()


def _differences(stored: dict, current: dict) -> str:
    keys = sorted(set(stored) | set(current))
    diffs = [
        f"{k}: checkpoint has {stored.get(k)!r}, this call has {current.get(k)!r}"
        for k in keys
        if stored.get(k) != current.get(k)
    ]
    return "; ".join(diffs)


def _below(out: dict, keep: np.ndarray, reps: np.ndarray) -> dict:
    """A chunk's output cut to the replicates ``reps[keep]``."""
    kept = set(int(r) for r in reps[keep])
    res = {k: v[keep] for k, v in out.items() if k != "failures"}
    res["failures"] = [f for f in out["failures"] if int(f[0]) in kept]
    return res
