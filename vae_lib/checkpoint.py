"""Checkpoints: save and restore pytrees of arrays plus JSON metadata, safely and atomically.

The format is a NumPy ``.npz`` archive written with ``allow_pickle=False`` and read with
``allow_pickle=False`` (no code runs on load, and object arrays are refused both ways): one entry per
leaf, named by its tree path, and a JSON string of metadata. PRNG keys are stored as their raw
``key_data``. A file is written to a temporary name in the same folder, flushed to disk, then renamed
over the old one (``os.replace`` is atomic), so a crash mid-write leaves the previous checkpoint intact
and no temporary file behind.

Reading trusts nothing in the file: the archive's directory (member names, declared sizes, compression)
is checked against the target structure before any entry is read, each entry's ``.npy`` header (dtype,
shape, memory order) before its data, and no entry may be larger than the array it must hold (plus a
header), so a crafted file costs at most about the memory of the model it claims to be. Leaves are
stored only with a dtype that NumPy reads back as itself (booleans, integers, float16/32/64, complex);
bfloat16 or string leaves are refused when saving.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vae_lib import _checks

_META = "__metadata__"
_MAX_HEADER = 4096  # bytes: np.savez writes a header of 128 bytes or a few multiples of it
_MAX_METADATA = 64 * 2**20  # bytes of JSON metadata (the history of about 10^5 epochs)
_STORABLE = frozenset(
    np.dtype(t)
    for t in (
        "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "float16", "float32", "float64", "complex64", "complex128",
    )
)  # fmt: skip


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
        _check_storable(name, a.dtype)
        out[name] = a
    return out


def _check_storable(name: str, dtype) -> None:
    if np.dtype(dtype) not in _STORABLE:
        raise TypeError(
            f"tree leaf {name} has dtype {dtype}, which a checkpoint cannot store and read back as itself "
            "(an .npz holds booleans, integers, float16/32/64 and complex numbers); cast it, e.g. to "
            "float32, or keep it out of the checkpointed state"
        )


def check_storable(tree: Any) -> None:
    """Raise ``TypeError`` now if ``save_checkpoint`` would refuse a leaf of ``tree`` (``fit`` calls this
    before its first epoch, so a model that cannot be checkpointed fails before any training)."""
    _flatten(tree)


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

    The file is checked before it is read (see the module docstring): member names against ``like``'s
    leaves, the sizes the zip directory declares against the arrays' sizes, each entry's dtype and shape
    against ``like``'s. Memory used is about that of ``like`` plus the metadata (at most 64 MiB).

    Args:
      path: the file.
      like: a pytree with the structure, shapes and dtypes to restore (for example a freshly initialized
        training state); PRNG-key leaves are restored as keys of the same implementation.

    Returns:
      ``(tree, metadata)``; the arrays are bitwise those that were saved; ``metadata`` is a dict.

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: the file is not a checkpoint (garbage, truncated, holds pickled objects, sizes or
        metadata that do not fit), its arrays do not match ``like`` (a checkpoint of another model
        architecture or optimizer), or an array holds NaN or infinite values.
    """
    path = Path(_checks.path("path", path))
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    names = ["leaf" + jax.tree_util.keystr(p) for p, _ in leaves]
    wanted = {}  # entry name -> (shape, dtype) expected
    for name, (_, ref) in zip(names, leaves, strict=True):
        is_key = _is_key(ref)
        if is_key:
            ref = jax.random.key_data(ref)
        dtype = np.dtype(ref.dtype) if hasattr(ref, "dtype") else np.asarray(ref).dtype
        if dtype not in _STORABLE:
            raise ValueError(f"like's leaf {name} has dtype {dtype}, which a checkpoint cannot hold")
        wanted[name] = (tuple(np.shape(ref)), dtype, is_key)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = _checked_directory(path, zf, wanted)
            metadata = _read_metadata(path, zf, infos[_META])
            stored = {name: _read_entry(path, zf, infos[name], *wanted[name]) for name in names}
    except ValueError:
        raise
    except Exception as e:  # zipfile.BadZipFile (a bad CRC too), OSError, EOFError, a zlib error, ...
        raise ValueError(
            f"{path} is not a readable vae_lib checkpoint: {type(e).__name__}: {e}. It may be truncated, "
            "corrupted, or not an .npz file"
        ) from e
    restored = []
    for name, (_, ref) in zip(names, leaves, strict=True):
        a = stored[name]
        if _is_key(ref):
            restored.append(jax.random.wrap_key_data(a, impl=jax.random.key_impl(ref)))
            continue
        _checks.check_finite(f"checkpoint {path} entry {name!r}", a)
        restored.append(jnp.asarray(a))
    return jax.tree_util.tree_unflatten(treedef, restored), metadata


def _checked_directory(path: Path, zf: zipfile.ZipFile, wanted: dict) -> dict[str, zipfile.ZipInfo]:
    """The archive's entries by name, after checking names, compression and declared sizes (nothing read)."""
    infos: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            raise ValueError(
                f"{path} is not a vae_lib checkpoint: it holds {info.filename!r}, not an .npy entry"
            )
        name = info.filename[: -len(".npy")]
        if name in infos:
            raise ValueError(f"{path} is not a vae_lib checkpoint: the entry {name!r} appears twice")
        infos[name] = info
    if not infos:
        raise ValueError(f"{path} is not a readable vae_lib checkpoint: an archive with no entries")
    if _META not in infos:
        raise ValueError(f"{path} is not a vae_lib checkpoint (no {_META} entry)")
    missing = [n for n in wanted if n not in infos]
    extra = sorted(set(infos) - set(wanted) - {_META})
    if missing or extra:
        hint = "it was written for a model of another architecture (or another optimizer)"
        raise ValueError(
            f"checkpoint {path} does not match the target structure: {len(infos) - 1} arrays stored, "
            f"{len(wanted)} expected; missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {[e[:60] for e in extra[:3]]}{'...' if len(extra) > 3 else ''}; {hint}"
        )
    for name, info in infos.items():
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ValueError(
                f"{path} is not a readable vae_lib checkpoint: entry {name!r} uses an unsupported "
                f"compression ({info.compress_type})"
            )
        if name == _META:
            limit = _MAX_METADATA + _MAX_HEADER
        else:
            shape, dtype, _ = wanted[name]
            limit = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize + _MAX_HEADER
        if info.file_size > limit:
            raise ValueError(
                f"checkpoint {path} does not match: entry {name!r} declares {info.file_size} bytes, more "
                f"than the {limit} its array can take; the file is corrupted or crafted"
            )
    return infos


def _read_header(path: Path, f, name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f, max_header_size=_MAX_HEADER)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(f, max_header_size=_MAX_HEADER)
    except Exception as e:  # the header is parsed by NumPy's safe literal reader: SyntaxError, TokenError...
        raise ValueError(
            f"{path} is not a readable vae_lib checkpoint: entry {name!r} has no valid .npy header "
            f"({type(e).__name__}: {e})"
        ) from e
    raise ValueError(
        f"{path} is not a readable vae_lib checkpoint: entry {name!r} has .npy format version {version}"
    )


def _read_data(path: Path, f, name: str, shape, fortran: bool, dtype: np.dtype) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64))
    data = f.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize or f.read(1):  # reading to the end also checks the CRC
        raise ValueError(
            f"{path} is not a readable vae_lib checkpoint: entry {name!r} holds {len(data)} bytes of data, "
            f"not the {count * dtype.itemsize} "
            "its header declares (truncated or corrupted)"
        )
    return np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order="F" if fortran else "C").copy()


def _read_entry(path: Path, zf: zipfile.ZipFile, info, shape, dtype, is_key: bool) -> np.ndarray:
    """One array entry, checked against the expected ``shape`` and ``dtype`` before its data is read."""
    name = info.filename[: -len(".npy")]
    with zf.open(info) as f:
        got_shape, fortran, got_dtype = _read_header(path, f, name)
        if got_dtype.hasobject:
            raise ValueError(
                f"{path} is not a readable vae_lib checkpoint: entry {name!r} holds pickled objects "
                "(refused: loading them could run code)"
            )
        if is_key and (tuple(got_shape) != shape or got_dtype != dtype):
            raise ValueError(
                f"checkpoint entry {name!r} is not a PRNG key of the expected kind: shape {tuple(got_shape)} "
                f"dtype {got_dtype}, expected {shape} {dtype}"
            )
        if tuple(got_shape) != shape or got_dtype != dtype:
            raise ValueError(
                f"checkpoint {path} does not match: entry {name!r} has shape {tuple(got_shape)} and dtype "
                f"{got_dtype}, expected {shape} and {dtype}; it was written for a model of another "
                "architecture (or another optimizer)"
            )
        return _read_data(path, f, name, shape, fortran, dtype)


def _read_metadata(path: Path, zf: zipfile.ZipFile, info) -> dict:
    """The JSON metadata: a 0-d unicode array holding a JSON object."""
    with zf.open(info) as f:
        shape, fortran, dtype = _read_header(path, f, _META)
        if dtype.kind != "U" or tuple(shape) != () or dtype.itemsize > _MAX_METADATA:
            raise ValueError(
                f"{path} is not a vae_lib checkpoint: its metadata entry is {dtype} {tuple(shape)}, "
                "not a JSON string"
            )
        text = str(_read_data(path, f, _META, (), fortran, dtype)[()])
    try:
        metadata = json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: deeply nested JSON
        raise ValueError(f"{path} is not a vae_lib checkpoint: its metadata is not valid JSON ({e})") from e
    if not isinstance(metadata, dict):
        raise ValueError(f"{path} is not a vae_lib checkpoint: its metadata is not a JSON object")
    return metadata
