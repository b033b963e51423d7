"""Fashion-MNIST from the operating system's package (``apt-get install dataset-fashion-mnist``).

``load_mnist("fashion_mnist")`` uses that copy after checking the SHA-256 of each decompressed IDX file
against a pinned hash. These tests check the pins independently of themselves: the class counts (6,000
training and 1,000 test images per class) and the widely published training pixel mean 0.2860 and
standard deviation 0.3530 (on pixels scaled to [0, 1]). They are skipped where the package is not
installed (CI does not install it; no chapter needs it). A damaged copy is simulated on any machine.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from vae_lib import data

SYSTEM_DIR = Path(data.DATASETS["fashion_mnist"]["system_dirs"][0])
INSTALLED = all((SYSTEM_DIR / f).is_file() for f in data._FILES)
needs_package = pytest.mark.skipif(
    not INSTALLED,
    reason=f"the OS package dataset-fashion-mnist is not installed ({SYSTEM_DIR} lacks the four IDX files); "
    "`apt-get install dataset-fashion-mnist` as root installs it",
)


@pytest.fixture(scope="module")
def fashion():
    return data.load_mnist("fashion_mnist")


@needs_package
def test_system_copy_is_found_and_its_content_matches_the_pins(fashion):
    assert data._system_copy("fashion_mnist") is not None  # found, and every content hash matched
    assert fashion.x_train.shape == (60_000, 784) and fashion.x_test.shape == (10_000, 784)
    assert fashion.x_train.dtype == np.float32 and fashion.y_train.dtype == np.int64


@needs_package
def test_independent_properties_of_the_training_set(fashion):
    """Properties published with the data set, which do not depend on the pinned hashes."""
    np.testing.assert_array_equal(np.bincount(fashion.y_train), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(fashion.y_test), np.full(10, 1000))
    x = fashion.x_train.astype(np.float64)
    assert abs(x.mean() - 0.2860) < 5e-5  # published to 4 decimals; measured 0.28604
    assert abs(x.std() - 0.3530) < 5e-5  # measured 0.35302
    assert x.min() == 0.0 and x.max() == 1.0


@needs_package
def test_static_binarization_applies_to_the_system_copy():
    split = data.load_mnist("fashion_mnist", binarize_with="threshold")
    assert set(np.unique(split.x_test)) <= {0.0, 1.0}


def _fake_system_copy(tmp_path, monkeypatch, *, damage: bool):
    """A tiny Fashion-like data set in a folder registered as the system copy, with its content pinned."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "system"
    folder.mkdir()
    arrays = (
        rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 6, dtype=np.uint8),
        rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 4, dtype=np.uint8),
    )
    pins = []
    for fname, a in zip(data._FILES, arrays, strict=True):
        content = bytes([0, 0, 8, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape) + a.tobytes()
        pins.append(hashlib.sha256(content).hexdigest())
        with gzip.open(folder / fname, "wb", compresslevel=1) as f:  # recompressed: different .gz bytes
            f.write(content if not (damage and fname.startswith("t10k-labels")) else content[:-1] + b"\x09")
    spec = {"url": "http://127.0.0.1:9/", "sha256": ("0" * 64,) * 4, "idx_sha256": tuple(pins)}
    monkeypatch.setitem(data.DATASETS, "fake_fashion", {**spec, "system_dirs": (str(folder),)})
    return arrays


def test_a_verified_system_copy_is_used_without_any_download(tmp_path, monkeypatch):
    arrays = _fake_system_copy(tmp_path, monkeypatch, damage=False)
    split = data.load_mnist("fake_fashion")  # the URL is port 9 (discard): a download would fail
    np.testing.assert_array_equal(split.x_train, arrays[0].reshape(6, -1) / np.float32(255.0))
    np.testing.assert_array_equal(split.y_test, arrays[3].astype(np.int64))


def test_a_system_copy_with_other_content_is_refused_with_a_warning(tmp_path, monkeypatch):
    _fake_system_copy(tmp_path, monkeypatch, damage=True)
    monkeypatch.setenv("VAE_LIB_DATA_DIR", str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="does not match its pinned content hash"):
        with pytest.raises(data.DownloadError):  # not used: falls back to the (failing) download
            data.load_mnist("fake_fashion")


def test_an_explicit_cache_dir_ignores_the_system_copy(tmp_path, monkeypatch):
    _fake_system_copy(tmp_path, monkeypatch, damage=False)
    with pytest.raises(data.DownloadError):
        data.load_mnist("fake_fashion", cache_dir=tmp_path / "elsewhere")
