"""``vae_lib.data.load_mnist`` without the internet: a local HTTP server on 127.0.0.1 serves small fake
IDX files, registered with their SHA-256 under a test-only data set name.

Covered: a download and parse (shapes, dtypes, scaling, labels), reuse of the cache (no second request),
a corrupted or truncated cached file detected by its hash and fetched again, a server sending wrong bytes
(``DownloadError`` naming the SHA-256 check, nothing kept), a missing file (HTTP 404), no server at all
(one ``DownloadError`` saying how to get the files or use ``load_mnist5k``), and ``read_idx`` on truncated
or foreign files. The server listens on 127.0.0.1 only and is shut down after each test.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import threading
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from vae_lib import data

FILES = data._FILES  # the four file names of MNIST
N_TRAIN, N_TEST = 6, 4


def _idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format (magic 0x00000803 for 3-D, 0x00000801 for 1-D)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _gz(raw: bytes) -> bytes:
    return gzip.compress(raw, mtime=0)


def _fake_mnist(seed: int = 0) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    arrays = {
        FILES[0]: rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        FILES[1]: rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        FILES[2]: rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        FILES[3]: rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }
    arrays[FILES[0]][0, 0, 0], arrays[FILES[0]][0, 0, 1] = 0, 255  # both ends of the pixel range
    return {f: _gz(_idx(a)) for f, a in arrays.items()}, arrays


def _sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


class _Server:
    """``http.server`` serving one folder on 127.0.0.1 (an OS-chosen port) in a thread, counting requests."""

    def __init__(self, folder: Path):
        self.requests: Counter[str] = Counter()
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                server.requests[self.path.lstrip("/")] += 1
                super().do_GET()

            def log_message(self, *args):  # keep the test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(Handler, directory=str(folder))
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()


@pytest.fixture
def no_proxy(monkeypatch):
    """Requests honours proxy variables; the test server is local, so bypass any proxy."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def fake(tmp_path, monkeypatch, no_proxy):
    """Serve fake MNIST files and register them as the data set ``"fake"`` (with their real hashes)."""
    served = tmp_path / "served"
    served.mkdir()
    files, arrays = _fake_mnist()
    for name, content in files.items():
        (served / name).write_bytes(content)
    server = _Server(served)
    monkeypatch.setitem(
        data.DATASETS, "fake", {"url": server.url, "sha256": tuple(_sha256(files[f]) for f in FILES)}
    )
    yield {"server": server, "served": served, "files": files, "arrays": arrays, "cache": tmp_path / "cache"}
    server.close()


def test_download_parse_shapes_and_scaling(fake):
    split = data.load_mnist("fake", cache_dir=fake["cache"])
    a = fake["arrays"]
    assert split.x_train.shape == (N_TRAIN, 784) and split.x_test.shape == (N_TEST, 784)
    assert split.x_train.dtype == np.float32 and split.y_train.dtype == np.int64
    np.testing.assert_allclose(split.x_train, a[FILES[0]].reshape(N_TRAIN, 784) / 255.0, rtol=1e-7)
    np.testing.assert_allclose(split.x_test, a[FILES[2]].reshape(N_TEST, 784) / 255.0, rtol=1e-7)
    assert split.x_train[0, 0] == 0.0 and split.x_train[0, 1] == 1.0  # row-major flattening, [0, 1] scale
    np.testing.assert_array_equal(split.y_train, a[FILES[1]])
    np.testing.assert_array_equal(split.y_test, a[FILES[3]])
    assert fake["server"].requests == Counter({f: 1 for f in FILES})
    assert sorted(p.name for p in fake["cache"].iterdir()) == sorted(FILES)

    binary = data.load_mnist("fake", cache_dir=fake["cache"], binarize_with="threshold")
    np.testing.assert_array_equal(binary.x_train, (split.x_train > 0.5).astype(np.float32))


def test_cached_files_are_reused_without_a_request(fake):
    first = data.load_mnist("fake", cache_dir=fake["cache"])
    second = data.load_mnist("fake", cache_dir=fake["cache"])
    assert sum(fake["server"].requests.values()) == 4  # the second call asked for nothing
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]), id="one-byte-flipped"),
        pytest.param(lambda b: b"", id="empty"),
    ],
)
def test_a_damaged_cached_file_is_detected_and_fetched_again(fake, damage):
    data.load_mnist("fake", cache_dir=fake["cache"])
    cached = fake["cache"] / FILES[2]
    cached.write_bytes(damage(cached.read_bytes()))
    split = data.load_mnist("fake", cache_dir=fake["cache"])
    assert fake["server"].requests[FILES[2]] == 2  # fetched again, and only that file
    assert sum(fake["server"].requests.values()) == 5
    assert cached.read_bytes() == fake["files"][FILES[2]]
    np.testing.assert_allclose(split.x_test, fake["arrays"][FILES[2]].reshape(N_TEST, 784) / 255.0, rtol=1e-7)


def test_wrong_bytes_from_the_server_fail_the_sha256_check(fake):
    (fake["served"] / FILES[1]).write_bytes(_gz(_idx(np.zeros(N_TRAIN, np.uint8))))  # valid IDX, other bytes
    with pytest.raises(data.DownloadError, match=rf"{FILES[1]} of 'fake' .*failed its SHA-256 check") as info:
        data.load_mnist("fake", cache_dir=fake["cache"])
    assert "load_mnist5k" in str(info.value)
    assert not (fake["cache"] / FILES[1]).exists()  # the bad download was not kept
    assert not [p for p in fake["cache"].iterdir() if p.name not in FILES]  # nor any temporary file


def test_a_missing_file_on_the_server_is_a_download_error(fake):
    (fake["served"] / FILES[3]).unlink()
    with pytest.raises(data.DownloadError, match=rf"could not download {FILES[3]}.*404.*load_mnist5k"):
        data.load_mnist("fake", cache_dir=fake["cache"])


def test_offline_gives_one_clear_download_error(tmp_path, monkeypatch, no_proxy):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setitem(
        data.DATASETS, "fake", {"url": f"http://127.0.0.1:{port}/", "sha256": ("0" * 64,) * 4}
    )
    with pytest.raises(data.DownloadError) as info:
        data.load_mnist("fake", cache_dir=tmp_path / "cache")
    msg = str(info.value)
    assert f"could not download {FILES[0]} of 'fake'" in msg
    assert "ConnectionError" in msg and "offline" in msg
    assert "copy the four files" in msg and str(tmp_path / "cache") in msg  # how to get them by hand
    assert "vae_lib.data.load_mnist5k()" in msg  # or what to use instead
    assert info.value.__cause__ is not None  # the underlying error is chained, not lost


def test_files_placed_by_hand_are_used_offline(tmp_path, monkeypatch, no_proxy):
    files, arrays = _fake_mnist(seed=3)
    cache = tmp_path / "cache"
    cache.mkdir()
    for name, content in files.items():
        (cache / name).write_bytes(content)
    monkeypatch.setitem(
        data.DATASETS,
        "fake",
        {"url": "http://127.0.0.1:9/", "sha256": tuple(_sha256(files[f]) for f in FILES)},
    )
    split = data.load_mnist("fake", cache_dir=cache)  # port 9 (discard): would fail if it were contacted
    np.testing.assert_array_equal(split.y_test, arrays[FILES[3]])


def test_a_truncated_idx_with_a_matching_hash_is_a_parse_error(fake):
    truncated = _gz(_idx(fake["arrays"][FILES[0]])[:-100])  # the hash matches, the content is short
    (fake["served"] / FILES[0]).write_bytes(truncated)
    data.DATASETS["fake"]["sha256"] = (_sha256(truncated),) + data.DATASETS["fake"]["sha256"][1:]
    with pytest.raises(ValueError, match=rf"{FILES[0]} is truncated or corrupted: its header \(6, 28, 28\)"):
        data.load_mnist("fake", cache_dir=fake["cache"])


def test_mismatched_image_and_label_counts_are_refused(fake):
    labels = _gz(_idx(np.zeros(N_TRAIN + 1, np.uint8)))
    (fake["served"] / FILES[1]).write_bytes(labels)
    sha = data.DATASETS["fake"]["sha256"]
    data.DATASETS["fake"]["sha256"] = (sha[0], _sha256(labels), *sha[2:])
    with pytest.raises(ValueError, match="the train files of 'fake' .* do not fit together"):
        data.load_mnist("fake", cache_dir=fake["cache"])


@pytest.mark.parametrize(
    "content, message",
    [
        pytest.param(
            _gz(_idx(np.zeros((3, 4, 4), np.uint8)))[:-8], "not a readable gzip file", id="gzip-cut"
        ),
        pytest.param(b"\x1f\x8b garbage", "not a readable gzip file", id="gzip-garbage"),
        pytest.param(_gz(b"\x00\x00\x0d\x01" + bytes(8)), "not an unsigned-byte IDX file", id="float-idx"),
        pytest.param(
            _gz(b"\x00\x00\x08\x03\x00\x00"), "header announces 3 dimensions but ends early", id="header-cut"
        ),
        pytest.param(
            _gz(_idx(np.zeros((3, 4, 4), np.uint8))[:-1]),
            r"truncated or corrupted.*needs 48 values, "
            "found 47",
            id="body-cut",
        ),
    ],
)
def test_read_idx_rejects_damaged_files(tmp_path, content, message):
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        data.read_idx(path)


def test_read_idx_round_trip_uncompressed(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a-idx3-ubyte").write_bytes(_idx(a))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a-idx3-ubyte"), a)


def test_download_false_never_makes_a_request(fake):
    with pytest.raises(data.DownloadError, match=r"not on disk in .*download=False.*load_mnist5k"):
        data.load_mnist("fake", cache_dir=fake["cache"], download=False)
    assert sum(fake["server"].requests.values()) == 0
    first = data.load_mnist("fake", cache_dir=fake["cache"])  # now the cache holds them
    cached = fake["cache"] / FILES[2]
    again = data.load_mnist("fake", cache_dir=fake["cache"], download=False)
    assert sum(fake["server"].requests.values()) == 4  # the second call asked for nothing
    np.testing.assert_array_equal(first.x_test, again.x_test)
    cached.write_bytes(cached.read_bytes()[:-1])  # a damaged file is not fetched again either
    with pytest.raises(data.DownloadError, match=rf"{FILES[2]} of 'fake' not on disk"):
        data.load_mnist("fake", cache_dir=fake["cache"], download=False)
    assert sum(fake["server"].requests.values()) == 4
