"""Data files: pinned hashes and clear errors, the IDX / EMNIST / CIFAR parsers on small synthetic
files written in the real formats, the top-k singular projection, and the real MNIST files."""
import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

import gaugelit as gl
from gaugelit.experiments import data as gd

ROOT = Path(__file__).resolve().parents[2]      # the repository


# --- writers for the real formats -------------------------------------------------------------

def idx_bytes(array: np.ndarray) -> bytes:
    codes = {np.dtype("uint8"): 0x08, np.dtype("int32"): 0x0C, np.dtype("float64"): 0x0E}
    code = codes[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx_gz(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(idx_bytes(array)))
    return path


def synthetic_images(n, rows=28, cols=28, n_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, rows, cols), dtype=np.uint8),
            rng.integers(0, n_classes, n).astype(np.uint8))


def write_emnist_zip(path: Path, n_train=60, n_test=20) -> tuple:
    """A small gzip.zip laid out like NIST's: gzip/emnist-balanced-*-idx*-ubyte.gz members."""
    tr, trl = synthetic_images(n_train, n_classes=47, seed=1)
    te, tel = synthetic_images(n_test, n_classes=47, seed=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for part, images, labels in (("train", tr, trl), ("test", te, tel)):
            z.writestr(f"gzip/emnist-balanced-{part}-images-idx3-ubyte.gz", gzip.compress(idx_bytes(images)))
            z.writestr(f"gzip/emnist-balanced-{part}-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(labels)))
        z.writestr("gzip/emnist-balanced-mapping.txt", "0 48\n")
    return tr, trl, te, tel


def write_cifar_tarball(path: Path, per_batch=8, payload=None) -> tuple:
    """A small cifar-10-python.tar.gz: Python pickles of dicts with bytes keys, as the authors'."""
    rng = np.random.default_rng(3)
    batches = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batches[name] = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, per_batch).tolist(),
                         b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                         b"filenames": [b"x.png"] * per_batch}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, batch in batches.items():
            blob = payload if (payload is not None and name == "data_batch_3") else pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return batches


def remote_for(path: Path, root: Path, urls=("http://127.0.0.1:9/none",)) -> gd.RemoteFile:
    raw = path.read_bytes()
    return gd.RemoteFile(str(path.relative_to(root)), tuple(urls),
                         (f"sha256:{hashlib.sha256(raw).hexdigest()}", f"md5:{hashlib.md5(raw).hexdigest()}"),
                         len(raw))


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("GAUGELIT_DATA_DIR", str(tmp_path))
    return tmp_path


# --- IDX --------------------------------------------------------------------------------------

@pytest.mark.parametrize("array", [
    synthetic_images(5)[0], synthetic_images(7)[1],
    np.arange(-6, 6, dtype=np.int32).reshape(3, 4), np.linspace(0, 1, 6).reshape(2, 3)])
def test_read_idx_round_trips(tmp_path, array):
    back = gd.read_idx(write_idx_gz(tmp_path / "a-idx.gz", array))
    assert back.shape == array.shape and back.dtype == array.dtype.newbyteorder("=")
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("raw, message", [
    (b"\x01\x00\x08\x01" + b"\x00" * 8, "not an IDX file"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x02xx", "unknown IDX type code 0x07"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", "header says dimensions (5,)"),
])
def test_read_idx_rejects_bad_headers(tmp_path, raw, message):
    path = tmp_path / "bad-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(gd.DataFileCorrupt, match=r"bad-idx1-ubyte\.gz") as err:
        gd.read_idx(path)
    assert message in str(err.value)


def test_read_idx_rejects_non_gzip_and_truncated_gzip(tmp_path):
    plain = tmp_path / "plain.gz"
    plain.write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(gd.DataFileCorrupt, match="plain.gz: not a valid gzip file"):
        gd.read_idx(plain)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(idx_bytes(synthetic_images(50)[0]))[:-40])
    with pytest.raises(gd.DataFileCorrupt, match="cut.gz: not a valid gzip file"):
        gd.read_idx(cut)


# --- hashes, missing files, downloads -----------------------------------------------------------

def test_pinned_hashes_are_those_of_sources_md():
    """The registry carries the SHA-256 and MD5 of shared/data/SOURCES.md, for all eight files."""
    sources = ROOT.parent / "shared" / "data" / "SOURCES.md"
    if not sources.exists():
        pytest.skip(f"{sources} is not present in this checkout")
    text = sources.read_text()
    for name in ("mnist", "fashion-mnist"):
        for remote in gd.DATASETS[name].files.values():
            row = next(line for line in text.splitlines() if line.startswith(f"| {remote.name} |"))
            _, _, size, md5, sha, _ = row.split("|")
            assert remote.hashes == (f"sha256:{sha.strip()}", f"md5:{md5.strip()}")
            assert remote.size == int(size)


def test_data_md_states_exactly_the_pinned_hashes_and_sizes():
    """DATA.md (the repository's statement of its data sources) lists every file the loader pins,
    with the same SHA-256, MD5 and size, and nothing else."""
    text = (ROOT / "DATA.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 4:
            rows[cells[0]] = cells[1:]
    pinned = {remote.name: remote for spec in gd.DATASETS.values() for remote in spec.files.values()}
    assert set(rows) == set(pinned)
    for name, (size, sha, md5) in rows.items():
        remote = pinned[name]
        assert sorted(remote.hashes) == sorted((f"sha256:{sha}", f"md5:{md5}")), name
        assert (str(remote.size) if remote.size is not None else "not pinned") == size, name
    for spec in gd.DATASETS.values():               # and every mirror address
        for url in next(iter(spec.files.values())).urls:
            assert f"<{url.rsplit('/', 1)[0]}/>" in text, url


def test_hash_mismatch_names_file_expected_hash_and_fix(tmp_path):
    path = write_idx_gz(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", synthetic_images(4)[1])
    remote = gd.DATASETS["mnist"].files["train_labels"]
    remote = dataclasses.replace(remote, size=None)       # get past the size check to the hash
    with pytest.raises(gd.DataFileCorrupt) as err:
        gd.verify(path, remote, tmp_path)
    message = str(err.value)
    assert str(path) in message
    assert "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c" in message  # expected
    assert hashlib.sha256(path.read_bytes()).hexdigest() in message                      # actual
    assert "Delete it" in message and remote.urls[0] in message


def test_wrong_size_is_reported_before_hashing(tmp_path):
    path = write_idx_gz(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", synthetic_images(4)[1])
    with pytest.raises(gd.DataFileCorrupt, match=r"bytes, expected 4542 bytes \(sha256:f7ae60f9"):
        gd.verify(path, gd.DATASETS["mnist"].files["test_labels"], tmp_path)


def test_load_raw_checks_local_files(data_root):
    """A corrupt file in the data directory stops the loader before parsing, naming the file."""
    for remote in gd.DATASETS["mnist"].files.values():
        write_idx_gz(data_root / remote.name, synthetic_images(3)[0])
    with pytest.raises(gd.DataFileCorrupt, match=r"mnist/train-images-idx3-ubyte\.gz.*expected 9912422"):
        gd.load_raw("mnist")


def test_missing_file_without_download(data_root):
    with pytest.raises(gd.DataFileMissing) as err:
        gd.load_raw("fashion-mnist", download=False)
    message = str(err.value)
    assert str(data_root / "fashion-mnist" / "train-images-idx3-ubyte.gz") in message
    assert "sha256:3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84" in message
    assert "GAUGELIT_DATA_DIR" in message and "fashion-mnist.s3-website" in message


@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server over tmp_path/'served' (no network needed)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_fetch_downloads_missing_file_from_the_next_mirror(tmp_path, http_server):
    served, base = http_server
    source = write_idx_gz(served / "good" / "x-idx1-ubyte.gz", synthetic_images(9)[1])
    remote = dataclasses.replace(remote_for(source, served), name="set/x-idx1-ubyte.gz",
                                 urls=(base + "absent/x-idx1-ubyte.gz", base + "good/x-idx1-ubyte.gz"))
    root = tmp_path / "data"
    path = gd.fetch(remote, root=root)
    assert path == root / "set" / "x-idx1-ubyte.gz"
    assert path.read_bytes() == source.read_bytes()
    assert gd.fetch(remote, root=root, download=False) == path   # now found locally


def test_fetch_refuses_a_mirror_with_wrong_bytes(tmp_path, http_server):
    served, base = http_server
    source = write_idx_gz(served / "x-idx1-ubyte.gz", synthetic_images(9)[1])
    remote = dataclasses.replace(remote_for(source, served), urls=(base + "x-idx1-ubyte.gz",))
    source.write_bytes(b"tampered")
    root = tmp_path / "data"
    with pytest.raises(gd.DataFileMissing, match="no mirror could provide it") as err:
        gd.fetch(remote, root=root)
    assert remote.hashes[0] in str(err.value)
    assert not (root / remote.name).exists()     # nothing half-downloaded left behind


# --- EMNIST and CIFAR-10 on synthetic distribution files -----------------------------------------

def test_read_emnist_zip(tmp_path):
    tr, trl, te, tel = write_emnist_zip(tmp_path / "gzip.zip")
    Xtr, ytr, Xte, yte = gd.read_emnist_zip(tmp_path / "gzip.zip")
    # EMNIST stores images transposed; the reader turns them upright.
    np.testing.assert_array_equal(Xtr, tr.transpose(0, 2, 1).reshape(len(tr), -1))
    np.testing.assert_array_equal(Xte, te.transpose(0, 2, 1).reshape(len(te), -1))
    np.testing.assert_array_equal(ytr, trl)
    np.testing.assert_array_equal(yte, tel)


def test_read_emnist_zip_errors(tmp_path):
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(gd.DataFileCorrupt, match="no member gzip/emnist-balanced-train-images"):
        gd.read_emnist_zip(tmp_path / "other.zip")
    (tmp_path / "not.zip").write_bytes(b"PK but not really")
    with pytest.raises(gd.DataFileCorrupt, match="not a valid zip archive"):
        gd.read_emnist_zip(tmp_path / "not.zip")


def test_read_cifar10_tarball(tmp_path):
    batches = write_cifar_tarball(tmp_path / "cifar.tar.gz")
    Xtr, ytr, Xte, yte = gd.read_cifar10_tarball(tmp_path / "cifar.tar.gz")
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    np.testing.assert_array_equal(Xtr, np.concatenate([b[b"data"] for b in train]))
    np.testing.assert_array_equal(ytr, np.concatenate([b[b"labels"] for b in train]))
    np.testing.assert_array_equal(Xte, batches["test_batch"][b"data"])
    np.testing.assert_array_equal(yte, batches["test_batch"][b"labels"])
    assert Xtr.dtype == np.uint8 and Xtr.shape == (40, 3072) and ytr.dtype == np.int64


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_reader_refuses_code_in_pickles(tmp_path):
    write_cifar_tarball(tmp_path / "evil.tar.gz", payload=pickle.dumps({b"data": _Exploit()}, protocol=2))
    with pytest.raises(gd.DataFileCorrupt, match="data_batch_3: not a CIFAR batch .*refusing to load"):
        gd.read_cifar10_tarball(tmp_path / "evil.tar.gz")


def test_pinned_archives_reject_synthetic_files(data_root):
    """The real EMNIST and CIFAR-10 archives are pinned: a stand-in at their place is refused."""
    write_emnist_zip(data_root / "emnist" / "gzip.zip")
    with pytest.raises(gd.DataFileCorrupt, match="expected fb9bb67e33772a9cc0b895e4ecf36d2c"):
        gd.load_raw("emnist-balanced", download=False)
    write_cifar_tarball(data_root / "cifar10" / "cifar-10-python.tar.gz")
    with pytest.raises(gd.DataFileCorrupt, match=r"expected 170498071 bytes \(md5:c58f30108f718f92"):
        gd.load_raw("cifar10", download=False)


@pytest.mark.parametrize("name, writer, n_train, n_test, dim", [
    ("emnist-balanced", lambda p: write_emnist_zip(p, 60, 20), 60, 20, 784),
    ("cifar10", lambda p: write_cifar_tarball(p, per_batch=12), 60, 12, 3072),
])
def test_load_dataset_pipeline_on_synthetic_archives(data_root, monkeypatch, name, writer, n_train, n_test, dim):
    """The whole loader (check, parse, scale, project) with the pins swapped for the stand-in's."""
    spec = gd.DATASETS[name]
    remote = spec.files["archive"]
    writer(data_root / remote.name)
    fake = remote_for(data_root / remote.name, data_root)
    monkeypatch.setitem(gd.DATASETS, name, dataclasses.replace(spec, files={"archive": fake}))
    X_train, y_train, X_test, y_test = gl.load_dataset(name, k=10, download=False)
    assert X_train.shape == (n_train, 10) and X_test.shape == (n_test, 10)
    assert X_train.dtype == np.float32 and y_train.dtype == np.int64
    raw = gd.load_raw(name, download=False)
    assert raw[0].shape == (n_train, dim)
    V = gd.top_singular_directions(raw[0] / 255.0, 10)
    np.testing.assert_allclose(X_test, (raw[2] / 255.0) @ V, rtol=1e-5, atol=1e-4)


# --- the projection ----------------------------------------------------------------------------

def test_top_singular_directions_are_orthonormal_and_match_the_svd():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 40)) @ np.diag(np.linspace(5, 0.1, 40))
    V = gd.top_singular_directions(X, 12)
    np.testing.assert_allclose(V.T @ V, np.eye(12), atol=1e-12)
    _, _, Vt = np.linalg.svd(X, full_matrices=False)
    np.testing.assert_allclose(np.abs(Vt[:12] @ V), np.eye(12), atol=1e-8)   # same up to sign
    assert np.all(V[np.abs(V).argmax(axis=0), np.arange(12)] > 0)               # sign convention


def test_top_singular_directions_with_fewer_rows_than_columns():
    """n < d takes the n x n Gram matrix; the directions are the same."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((30, 90)) * np.linspace(3, 0.5, 90)
    V = gd.top_singular_directions(X, 10)
    np.testing.assert_allclose(V.T @ V, np.eye(10), atol=1e-10)
    _, _, Vt = np.linalg.svd(X, full_matrices=False)
    np.testing.assert_allclose(np.abs(Vt[:10] @ V), np.eye(10), atol=1e-8)


def test_projection_is_fitted_on_the_training_set_only():
    rng = np.random.default_rng(1)
    X_train, X_test = rng.random((200, 30)), rng.random((50, 30))
    Z_train, Z_test = gd.project_top_singular(X_train, X_test, k=5)
    Z_train2, Z_test2 = gd.project_top_singular(X_train, 10 * rng.random((80, 30)), k=5)
    np.testing.assert_array_equal(Z_train, Z_train2)          # the test set does not move the fit
    V = gd.top_singular_directions(X_train, 5)
    np.testing.assert_allclose(Z_test, X_test @ V)
    np.testing.assert_allclose(Z_train, X_train @ V)
    # Projection onto the top-k directions keeps the best rank-k part of the training matrix.
    U, s, _ = np.linalg.svd(X_train, full_matrices=False)
    np.testing.assert_allclose(np.linalg.norm(Z_train, axis=0), s[:5])


def test_centred_projection_is_principal_components():
    rng = np.random.default_rng(4)
    X_train, X_test = rng.random((200, 30)) + 3.0, rng.random((50, 30)) + 3.0   # far from zero mean
    Z_train, Z_test = gd.project_top_singular(X_train, X_test, k=5, centre=True)
    mean = X_train.mean(axis=0)
    V = gd.top_singular_directions(X_train - mean, 5)
    np.testing.assert_allclose(Z_train, (X_train - mean) @ V)
    np.testing.assert_allclose(Z_test, (X_test - mean) @ V)             # the training mean, not the test's
    np.testing.assert_allclose(Z_train.mean(axis=0), 0, atol=1e-10)
    # Uncentred, the first direction is the mean's: its projections are all of one sign and far from zero.
    U_train, _ = gd.project_top_singular(X_train, X_test, k=5)
    assert abs(U_train[:, 0].mean()) > 10 * U_train[:, 0].std()


def test_projection_rejects_bad_k_and_shapes():
    X = np.random.default_rng(2).random((20, 8))
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, min\(n, d\)\] = \[1, 8\]"):
        gd.project_top_singular(X, X, k=9)
    with pytest.raises(ValueError, match="rank below k=4"):
        gd.top_singular_directions(np.outer(np.ones(20), np.arange(8.0)) + 0 * X, 4)
    with pytest.raises(ValueError, match="X_test must have 8 columns"):
        gd.project_top_singular(X, X[:, :5], k=3)


def test_load_dataset_validates_arguments(data_root):
    with pytest.raises(ValueError, match="unknown data set 'svhn'"):
        gl.load_dataset("svhn")
    with pytest.raises(TypeError, match="float16"):
        gl.load_dataset("mnist", dtype="float16")


# --- the real MNIST and Fashion-MNIST files ------------------------------------------------------

def _real_data_dir():
    root = gl.data_dir()
    have = all((root / r.name).exists() for r in gd.DATASETS["mnist"].files.values())
    return root if have and "GAUGELIT_DATA_DIR" in os.environ else None


needs_real_data = pytest.mark.skipif(
    _real_data_dir() is None,
    reason="GAUGELIT_DATA_DIR does not point at a directory holding mnist/*.gz (CI sets it to "
           "../shared/data); the real-file test would otherwise have to download 11 MB")

# Published class counts of MNIST (LeCun et al.); Fashion-MNIST is balanced.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@needs_real_data
def test_load_dataset_mnist_real_files():
    X_train, y_train, X_test, y_test = gl.load_dataset("mnist")
    assert X_train.shape == (60000, 200) and X_test.shape == (10000, 200)
    assert X_train.dtype == np.float32 and y_train.dtype == np.int64
    assert np.bincount(y_train).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(y_test).tolist() == MNIST_TEST_COUNTS
    # The projection keeps most of the pixels' energy: 200 of 784 directions hold about 98% of it.
    images = gd.load_raw("mnist")[0] / 255.0
    kept = (X_train.astype(np.float64) ** 2).sum() / (images ** 2).sum()
    assert 0.975 < kept <= 1.0 + 1e-6


@needs_real_data
def test_load_dataset_fashion_subset_real_files():
    X_train, y_train, X_test, y_test = gl.load_dataset("fashion-mnist", n_train=1000, n_test=500, k=50)
    assert X_train.shape == (1000, 50) and X_test.shape == (500, 50)
    assert np.bincount(gd.load_raw("fashion-mnist")[1]).tolist() == [6000] * 10


def test_fetch_dataset_checks_every_file_and_never_downloads_when_told(data_root):
    with pytest.raises(gd.DataFileMissing, match=r"mnist/train-images-idx3-ubyte\.gz is missing"):
        gd.fetch_dataset("mnist", download=False)
    remote = gd.DATASETS["mnist"].files["train_images"]
    (data_root / "mnist").mkdir()
    (data_root / remote.name).write_bytes(b"\0" * remote.size)          # right size, wrong bytes
    with pytest.raises(gd.DataFileCorrupt, match="train-images"):
        gd.fetch_dataset("mnist", download=False, root=data_root)
    with pytest.raises(ValueError, match="unknown data set"):
        gd.fetch_dataset("svhn")
