"""Checkpoints: save and restore pytrees of arrays plus JSON metadata, safely and atomically.

The format is a NumPy ``.npz`` archive written with ``allow_pickle=False`` and read with
``allow_pickle=False`` (no code runs on load, and object arrays are refused both ways): one entry per
leaf, named by its tree path, and a JSON string of metadata. PRNG keys are stored as their raw
``key_data``. A file is written to a temporary name in the same folder, flushed to disk, then renamed
over the old one (``os.replace`` is atomic), so a crash mid-write leaves the previous checkpoint intact
and no temporary file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vae_lib import _checks

_META = "__metadata__"


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _flatten(tree: Any) -> dict[str, np.ndarray]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    out = {}
    for path, leaf in leaves:
        name = "leaf" + jax.tree_util.keystr(path)
        if _is_key(leaf):
            leaf = jax.random.key_data(leaf)
        a = np.asarray(leaf)
        if a.dtype == object:
            raise TypeError(f"tree leaf {name} must be an array or a number, got {type(leaf).__name__}")
        out[name] = a
    return out


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, tree: Any, metadata: dict | None = None) -> Path:
    """Write ``tree`` (any pytree of arrays) and JSON-serializable ``metadata`` to ``path`` atomically.

    Args:
      path: the file to write (its folder is created if needed); an existing file is replaced only
        once the new one is completely on disk.
      tree: a pytree whose leaves are arrays, numbers or PRNG keys.
      metadata: a JSON-serializable dict (epoch, history, configuration, ...).

    Returns:
      The path written.

    Raises:
      TypeError: a leaf is not numeric, or ``metadata`` is not a JSON-serializable dict.
    """
    path = Path(_checks.path("path", path))
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    try:
        meta = json.dumps(metadata or {}, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise TypeError(f"metadata must be JSON-serializable ({e})") from e
    arrays = _flatten(tree)
    arrays[_META] = np.array(meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | os.PathLike, like: Any) -> tuple[Any, dict]:
    """Read a checkpoint written by ``save_checkpoint`` into the structure of ``like``.

    Args:
      path: the file.
      like: a pytree with the structure, shapes and dtypes to restore (for example a freshly initialized
        training state); PRNG-key leaves are restored as keys of the same implementation.

    Returns:
      ``(tree, metadata)``; the arrays are bitwise those that were saved.

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: the file is not a checkpoint (garbage, truncated, holds pickled objects), its arrays
        do not match ``like`` (a checkpoint of another model architecture or optimizer), or an array
        holds NaN or infinite values.
    """
    path = Path(_checks.path("path", path))
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise ValueError("it holds a single array, not an .npz archive")
            stored = {k: f[k] for k in f.files}
    except Exception as e:
        raise ValueError(
            f"{path} is not a readable vae_lib checkpoint: {type(e).__name__}: {e}. It may be truncated, "
            "corrupted, not an .npz file, or hold pickled objects (refused: loading them could run code)"
        ) from e
    if _META not in stored:
        raise ValueError(f"{path} is not a vae_lib checkpoint (no {_META} entry)")
    try:
        metadata = json.loads(str(stored.pop(_META)))
    except ValueError as e:
        raise ValueError(f"{path} is not a vae_lib checkpoint: its metadata is not valid JSON ({e})") from e
    if not isinstance(metadata, dict):
        raise ValueError(f"{path} is not a vae_lib checkpoint: its metadata is not a JSON object")
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    names = ["leaf" + jax.tree_util.keystr(p) for p, _ in leaves]
    hint = "it was written for a model of another architecture (or another optimizer)"
    missing = [n for n in names if n not in stored]
    extra = sorted(set(stored) - set(names))
    if missing or extra:
        raise ValueError(
            f"checkpoint {path} does not match the target structure: {len(stored)} arrays stored, "
            f"{len(names)} expected; missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''}; {hint}"
        )
    restored = []
    for name, (_, ref) in zip(names, leaves, strict=True):
        a = stored[name]
        if _is_key(ref):
            want = jax.random.key_data(ref)
            if a.shape != want.shape or a.dtype != want.dtype:
                raise ValueError(
                    f"checkpoint entry {name!r} is not a PRNG key of the expected kind: shape {a.shape} "
                    f"dtype {a.dtype}, expected {want.shape} {want.dtype}"
                )
            restored.append(jax.random.wrap_key_data(a, impl=jax.random.key_impl(ref)))
            continue
        ref_shape = tuple(np.shape(ref))
        ref_dtype = np.dtype(ref.dtype) if hasattr(ref, "dtype") else np.asarray(ref).dtype
        if a.shape != ref_shape or a.dtype != ref_dtype:
            raise ValueError(
                f"checkpoint {path} does not match: entry {name!r} has shape {a.shape} and dtype {a.dtype}, "
                f"expected {ref_shape} and {ref_dtype}; {hint}"
            )
        _checks.check_finite(f"checkpoint {path} entry {name!r}", a)
        restored.append(jnp.asarray(a))
    return jax.tree_util.tree_unflatten(treedef, restored), metadata
