"""Checkpoints: save and restore pytrees of arrays plus JSON metadata, safely and atomically.

The format is a NumPy ``.npz`` archive read with ``allow_pickle=False`` (no code runs on load): one
entry per leaf, named by its tree path, and a JSON string of metadata. PRNG keys are stored as their raw
``key_data``. A file is written to a temporary name in the same folder, flushed to disk, then renamed
over the old one (``os.replace`` is atomic), so a crash mid-write leaves the previous checkpoint intact.
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

_META = "__metadata__"


def _flatten(tree: Any) -> dict[str, np.ndarray]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    out = {}
    for path, leaf in leaves:
        name = "leaf" + jax.tree_util.keystr(path)
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out[name] = np.asarray(leaf)
    return out


def save_checkpoint(path: str | os.PathLike, tree: Any, metadata: dict | None = None) -> Path:
    """Write ``tree`` (any pytree of arrays) and JSON-serializable ``metadata`` to ``path`` atomically.

    Returns:
      The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = _flatten(tree)
    arrays[_META] = np.array(json.dumps(metadata or {}))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, like: Any) -> tuple[Any, dict]:
    """Read a checkpoint written by ``save_checkpoint`` into the structure of ``like``.

    Args:
      path: the file.
      like: a pytree with the structure, shapes and dtypes to restore (for example a freshly initialized
        training state); PRNG-key leaves are restored as keys of the same implementation.

    Returns:
      ``(tree, metadata)``.

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: the file is not a checkpoint, or its arrays do not match ``like``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            stored = {k: f[k] for k in f.files}
    except Exception as e:
        raise ValueError(f"{path} is not a readable checkpoint ({e})") from e
    if _META not in stored:
        raise ValueError(f"{path} is not a vae_lib checkpoint (no metadata entry)")
    metadata = json.loads(str(stored.pop(_META)))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    if len(leaves) != len(stored):
        raise ValueError(f"checkpoint {path} has {len(stored)} arrays, the target structure has {len(leaves)}")
    restored = []
    for p, ref in leaves:
        name = "leaf" + jax.tree_util.keystr(p)
        if name not in stored:
            raise ValueError(f"checkpoint {path} has no entry {name!r}; was it written for another model?")
        a = stored[name]
        if hasattr(ref, "dtype") and jnp.issubdtype(ref.dtype, jax.dtypes.prng_key):
            restored.append(jax.random.wrap_key_data(a, impl=jax.random.key_impl(ref)))
            continue
        ref_shape, ref_dtype = np.shape(ref), np.asarray(ref).dtype if not hasattr(ref, "dtype") else ref.dtype
        if a.shape != tuple(ref_shape) or a.dtype != ref_dtype:
            raise ValueError(
                f"checkpoint entry {name!r} has shape {a.shape} and dtype {a.dtype}, "
                f"expected {tuple(ref_shape)} and {ref_dtype}"
            )
        restored.append(jnp.asarray(a))
    return jax.tree_util.tree_unflatten(treedef, restored), metadata
