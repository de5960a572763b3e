"""The data sets of section 4 (Table 1): pinned distribution files, their parsers, and the
paper's preprocessing (projection onto the top 200 singular directions of the training inputs).

Files are read from :func:`gaugelit.data_dir` (``GAUGELIT_DATA_DIR``), laid out as
``<dir>/mnist/<file>.gz``, ``<dir>/fashion-mnist/<file>.gz``, ``<dir>/emnist/gzip.zip`` and
``<dir>/cifar10/cifar-10-python.tar.gz``. Every file, local or downloaded, is checked against the
size and hashes pinned below before it is parsed; a missing file is fetched with pooch from the
mirrors below (only when it is missing), and a wrong one stops with an error that names the file,
the expected hash and the fix.
"""
from __future__ import annotations

import functools
import gzip
import io
import pickle
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..core.checks import float_dtype, integer, switch
from ..core.environment import data_dir

__all__ = ["DATASETS", "RemoteFile", "DatasetSpec", "DataFileMissing", "DataFileCorrupt",
           "Dataset", "fetch", "fetch_dataset", "verify", "read_idx", "read_emnist_zip", "read_cifar10_tarball",
           "load_raw", "load_dataset", "top_singular_directions", "project_top_singular"]


class DataFileMissing(FileNotFoundError):
    """A data file is absent and could not be downloaded; the message says how to provide it."""


class DataFileCorrupt(ValueError):
    """A data file exists but its size, hash or format is wrong; the message says how to fix it."""


@dataclass(frozen=True)
class RemoteFile:
    """One distribution file: its place under the data directory, where to get it, what it is.

    ``hashes`` are pooch-style ``"alg:hexdigest"`` strings; every one must match. ``size`` in bytes,
    or None where no trustworthy size is published.
    """
    name: str                   # relative to data_dir(), e.g. "mnist/train-images-idx3-ubyte.gz"
    urls: tuple[str, ...]       # mirrors, tried in order
    hashes: tuple[str, ...]
    size: int | None = None


def _mirrored(subdir: str, files: dict, bases: tuple[str, ...]) -> dict[str, RemoteFile]:
    return {key: RemoteFile(f"{subdir}/{fname}", tuple(base + fname for base in bases),
                            (f"sha256:{sha}", f"md5:{md5}"), size)
            for key, (fname, size, md5, sha) in files.items()}


# Sizes, MD5 and SHA-256 as stated in DATA.md (checked against the authors'
# published MD5s and the git blob ids of public copies).
_MNIST = _mirrored("mnist", {
    "train_images": ("train-images-idx3-ubyte.gz", 9912422, "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                     "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train_labels": ("train-labels-idx1-ubyte.gz", 28881, "d53e105ee54ea40749a09fcbcd1e9432",
                     "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "test_images": ("t10k-images-idx3-ubyte.gz", 1648877, "9fb629c4189551a2d022fa330f9573f3",
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", 4542, "ec29112dd5afa0611ce80d1b7f02629c",
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}, ("https://ossci-datasets.s3.amazonaws.com/mnist/",       # torchvision's mirror
    "https://storage.googleapis.com/cvdf-datasets/mnist/"))  # TFDS' and Keras' mirror

_FASHION = _mirrored("fashion-mnist", {
    "train_images": ("train-images-idx3-ubyte.gz", 26421880, "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                     "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    "train_labels": ("train-labels-idx1-ubyte.gz", 29515, "25c81989df183df01b3e8a0aad5dffbe",
                     "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    "test_images": ("t10k-images-idx3-ubyte.gz", 4422102, "bef4ecab320f06d8554ea6380940ec79",
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", 5148, "bb300cfdad3c16e7a12a480ee83cd310",
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
}, ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/"))

# EMNIST-balanced is published only inside NIST's gzip.zip (about 0.5 GB). The archive could not be
# obtained on the machines that built gaugelit, so neither hash was verified here: the MD5 is the
# one torchvision pins for this URL, the SHA-256 the one TensorFlow Datasets and several
# independent loaders pin. No size is pinned (the one published figure, 561753746 bytes, has a
# single source).
_EMNIST = {"archive": RemoteFile(
    "emnist/gzip.zip",
    ("https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip",
     "http://www.itl.nist.gov/iaui/vip/cs_links/EMNIST/gzip.zip"),
    ("sha256:fb9bb67e33772a9cc0b895e4ecf36d2cf35be8b709693c3564cea2a019fcda8e",
     "md5:58c8d27c78d21e728a6bc7b3cc06412e"))}

# CIFAR-10, python version. Size and MD5 are the authors' (DATA.md; confirmed by git-annex
# pointers); the SHA-256 is the one Keras pins for this URL (not verified here: the file could not
# be obtained on the machines that built gaugelit).
_CIFAR10 = {"archive": RemoteFile(
    "cifar10/cifar-10-python.tar.gz",
    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    ("md5:c58f30108f718f92721af3b95e74349a",
     "sha256:6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),
    170498071)}


@dataclass(frozen=True)
class DatasetSpec:
    """A data set of Table 1: its files, the paper's abbreviation, and the shape of its examples."""
    name: str
    abbrev: str
    files: dict
    n_classes: int
    n_train: int
    n_test: int
    image_shape: tuple[int, ...]
    citation: str


DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("mnist", "DIGITS", _MNIST, 10, 60000, 10000, (28, 28),
                "LeCun, Bottou, Bengio & Haffner (1998)"),
    DatasetSpec("fashion-mnist", "FASHION", _FASHION, 10, 60000, 10000, (28, 28),
                "Xiao, Rasul & Vollgraf (2017)"),
    DatasetSpec("emnist-balanced", "CHARS", _EMNIST, 47, 112800, 18800, (28, 28),
                "Cohen, Afshar, Tapson & van Schaik (2017)"),
    DatasetSpec("cifar10", "CIFAR10", _CIFAR10, 10, 50000, 10000, (3, 32, 32),
                "Krizhevsky (2009)"),
)}


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


# ---------------------------------------------------------------------------------------------
# Finding, downloading and checking files


def _how_to_provide(remote: RemoteFile, root: Path) -> str:
    return (f"Put the original file at {root / remote.name} (GAUGELIT_DATA_DIR={root}; see "
            f"DATA.md in the gaugelit repository), or let gaugelit download it from {remote.urls[0]}.")


def verify(path, remote: RemoteFile, root: Path | None = None) -> Path:
    """Check ``path`` against the size and every hash of ``remote``; return it, or raise
    :class:`DataFileCorrupt` naming the file, the expected and actual values and the fix."""
    import pooch

    path, root = Path(path), Path(root) if root is not None else data_dir()
    fix = (f"The file is corrupt, truncated or not the original distribution file. Delete it so that "
           f"gaugelit downloads it again from {remote.urls[0]}, or replace it by the original.")
    if remote.size is not None and path.stat().st_size != remote.size:
        raise DataFileCorrupt(f"{path}: {path.stat().st_size} bytes, expected {remote.size} bytes "
                              f"({remote.hashes[0]}). {fix}")
    for expected in remote.hashes:
        alg, digest = expected.split(":")
        actual = pooch.file_hash(str(path), alg=alg)
        if actual != digest:
            raise DataFileCorrupt(f"{path}: {alg} is {actual}, expected {digest}. {fix}")
    return path


def fetch(remote: RemoteFile, *, download: bool = True, root=None, progressbar: bool = False) -> Path:
    """The checked local path of ``remote``: read from the data directory, downloaded with pooch
    (mirrors in order) only when it is missing. Raises :class:`DataFileMissing` when absent and not
    downloadable, :class:`DataFileCorrupt` when present but wrong."""
    root = Path(root) if root is not None else data_dir()
    path = root / remote.name
    if path.exists():
        return verify(path, remote, root)
    if not download:
        raise DataFileMissing(f"{path} is missing (expected {remote.hashes[0]}). "
                              + _how_to_provide(remote, root))
    import pooch

    failures = []
    for url in remote.urls:
        try:
            # pooch downloads to a temporary file, checks the hash, then moves it into place.
            pooch.retrieve(url, known_hash=remote.hashes[0], fname=path.name, path=path.parent,
                           progressbar=progressbar)
        except Exception as err:  # network errors, HTTP errors, pooch's hash-mismatch ValueError
            failures.append(f"{url}: {type(err).__name__}: {err}")
            continue
        return verify(path, remote, root)
    raise DataFileMissing(f"{path} is missing and no mirror could provide it (expected "
                          f"{remote.hashes[0]}):\n  " + "\n  ".join(failures) + "\n"
                          + _how_to_provide(remote, root))


# ---------------------------------------------------------------------------------------------
# Parsers

# IDX type codes (third byte of the magic number): http://yann.lecun.com/exdb/mnist/
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _parse_idx(raw: bytes, where: str) -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataFileCorrupt(f"{where}: not an IDX file (magic number {raw[:4].hex() or 'missing'}; "
                              "expected 0x0000 followed by a type code and the number of dimensions)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        raise DataFileCorrupt(f"{where}: unknown IDX type code 0x{code:02x}; "
                              f"expected one of {', '.join(f'0x{c:02x}' for c in _IDX_TYPES)}")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataFileCorrupt(f"{where}: IDX header of {ndim} dimensions is truncated")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(_IDX_TYPES[code])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataFileCorrupt(f"{where}: header says dimensions {dims} ({expected} bytes of data), "
                              f"but the file holds {len(raw) - header} bytes after the header")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _gunzip(data_or_file, where: str) -> bytes:
    try:
        if isinstance(data_or_file, bytes):
            return gzip.decompress(data_or_file)
        with gzip.open(data_or_file, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
        raise DataFileCorrupt(f"{where}: not a valid gzip file ({err})") from None


def read_idx(path) -> np.ndarray:
    """Parse a gzip-compressed IDX file (MNIST's format): magic number, big-endian dimensions, data."""
    path = Path(path)
    return _parse_idx(_gunzip(path, str(path)), str(path))


def _check_images_labels(images, labels, n_classes, where):
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataFileCorrupt(f"{where}: images {images.shape} and labels {labels.shape} do not match "
                              "(expected (n, rows, cols) images and n labels)")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise DataFileCorrupt(f"{where}: labels outside [0, {n_classes})")


def _read_idx_pair(images_path, labels_path, n_classes):
    images, labels = read_idx(images_path), read_idx(labels_path)
    _check_images_labels(images, labels, n_classes, f"{images_path} / {labels_path}")
    return images.reshape(images.shape[0], -1), labels.astype(np.int64)


EMNIST_MEMBER = "gzip/emnist-{split}-{part}-{kind}-idx{d}-ubyte.gz"


def read_emnist_zip(path, split: str = "balanced"):
    """The ``split`` of EMNIST from NIST's ``gzip.zip``, read in memory without extracting it.

    Returns ``(train_images, train_labels, test_images, test_labels)``, images flattened to 784
    columns. EMNIST stores each image transposed relative to MNIST; it is transposed back here so
    that images display upright (the projection and learning do not depend on it).
    """
    path = Path(path)
    arrays = []
    try:
        with zipfile.ZipFile(path) as archive:
            for part in ("train", "test"):
                pair = []
                for kind, d in (("images", 3), ("labels", 1)):
                    member = EMNIST_MEMBER.format(split=split, part=part, kind=kind, d=d)
                    where = f"{path}:{member}"
                    try:
                        raw = archive.read(member)  # checks the member's CRC
                    except KeyError:
                        raise DataFileCorrupt(f"{path}: no member {member} (is this NIST's EMNIST "
                                              "gzip.zip?)") from None
                    pair.append(_parse_idx(_gunzip(raw, where), where))
                images, labels = pair
                n_classes = DATASETS["emnist-balanced"].n_classes if split == "balanced" else 256
                _check_images_labels(images, labels, n_classes, f"{path}:{part}")
                arrays += [images.transpose(0, 2, 1).reshape(images.shape[0], -1),
                           labels.astype(np.int64)]
    except zipfile.BadZipFile as err:
        raise DataFileCorrupt(f"{path}: not a valid zip archive ({err})") from None
    return tuple(arrays)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches, refusing every global but the few NumPy needs (pickle can run code)."""
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy", "ndarray"), ("numpy", "dtype"),
                ("_codecs", "encode")}  # how Python 3 writes bytes in protocol-2 pickles

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        if module.startswith("numpy.core"):  # NumPy 2 renamed numpy.core to numpy._core
            module = "numpy._core" + module[len("numpy.core"):]
        return super().find_class(module, name)


CIFAR10_TRAIN_BATCHES = tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "cifar-10-batches-py/test_batch"


def _read_cifar_batch(archive: tarfile.TarFile, member: str, where: str):
    try:
        f = archive.extractfile(member)
    except KeyError:
        raise DataFileCorrupt(f"{where}: no member {member} (is this cifar-10-python.tar.gz?)") from None
    try:
        batch = _CifarUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except Exception as err:
        raise DataFileCorrupt(f"{where}:{member}: not a CIFAR batch ({err})") from None
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if data is None or labels is None:
        raise DataFileCorrupt(f"{where}:{member}: a CIFAR batch needs the keys b'data' and b'labels'")
    data, labels = np.asarray(data), np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataFileCorrupt(f"{where}:{member}: expected uint8 data (n, 3072) and n labels, got "
                              f"{data.dtype} {data.shape} and {labels.shape}")
    return data, labels


def read_cifar10_tarball(path):
    """CIFAR-10 from the authors' python tarball: ``(train_images, train_labels, test_images,
    test_labels)``, images as rows of 3072 bytes (red, green, blue planes of 32x32)."""
    path = Path(path)
    try:
        with tarfile.open(path, "r:gz") as archive:
            train = [_read_cifar_batch(archive, m, str(path)) for m in CIFAR10_TRAIN_BATCHES]
            test = _read_cifar_batch(archive, CIFAR10_TEST_BATCH, str(path))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataFileCorrupt(f"{path}: not a valid .tar.gz archive ({err})") from None
    labels = np.concatenate([l for _, l in train] + [test[1]])
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataFileCorrupt(f"{path}: CIFAR-10 labels outside [0, 10)")
    return (np.concatenate([d for d, _ in train]), np.concatenate([l for _, l in train]),
            test[0], test[1])


# ---------------------------------------------------------------------------------------------
# Loading


def fetch_dataset(name: str, *, download: bool = True, root=None) -> dict[str, Path]:
    """Every file of a data set, checked (see :func:`fetch`): ``{key: path}``."""
    return {key: fetch(remote, download=download, root=root) for key, remote in _spec(name).files.items()}


@functools.lru_cache(maxsize=4)
def _load_raw_cached(name: str, root: str, download: bool):
    spec, f = _spec(name), fetch_dataset(name, download=download, root=root)
    if name in ("mnist", "fashion-mnist"):
        arrays = (*_read_idx_pair(f["train_images"], f["train_labels"], spec.n_classes),
                  *_read_idx_pair(f["test_images"], f["test_labels"], spec.n_classes))
    elif name == "emnist-balanced":
        arrays = read_emnist_zip(f["archive"], "balanced")
    else:
        arrays = read_cifar10_tarball(f["archive"])
    for a in arrays:
        a.flags.writeable = False  # shared by every caller of the cache
    return arrays


def load_raw(name: str, *, download: bool = True):
    """``(train_images, train_labels, test_images, test_labels)`` of a data set as distributed:
    uint8 images flattened to rows, int64 labels. Read-only arrays, cached per process."""
    return _load_raw_cached(name, str(data_dir()), bool(download))


def top_singular_directions(X, k: int = 200):
    """The top-``k`` right singular vectors of ``X`` (n x d), as the columns of a d x k matrix.

    Computed in float64 from the smaller Gram matrix, ``X^T X`` (d x d) or ``X X^T`` (n x n), by one
    symmetric eigendecomposition: fast for the 784 or 3072 columns here even with 60000 rows. Each
    direction's sign is fixed so that its largest entry is positive, which makes it deterministic.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be a matrix (n, d), got shape {X.shape}")
    n, d = X.shape
    k = integer(k, "k")
    if not 1 <= k <= min(n, d):
        raise ValueError(f"k must be an integer in [1, min(n, d)] = [1, {min(n, d)}], got {k}")
    X = X.astype(np.float64, copy=False)
    eigenvalues, vectors = np.linalg.eigh(X.T @ X if d <= n else X @ X.T)   # ascending
    eigenvalues, vectors = eigenvalues[::-1][:k], vectors[:, ::-1][:, :k]
    if eigenvalues[-1] <= 1e-12 * max(eigenvalues[0], 1e-300):
        raise ValueError(f"X has rank below k={k}: the trailing directions would be arbitrary")
    # X X^T u = s^2 u  =>  v = X^T u / s is the matching right singular vector.
    V = vectors if d <= n else (X.T @ vectors) / np.sqrt(eigenvalues)
    signs = np.sign(V[np.abs(V).argmax(axis=0), np.arange(V.shape[1])])
    return V * signs


def project_top_singular(X_train, X_test, k: int = 200, *, centre: bool = False):
    """Project both sets onto the top-``k`` right singular directions of the *training* inputs.

    The paper only says "singular value decomposition"; gaugelit takes the SVD of the uncentred
    training matrix by default. Without centring the projection stays linear (no offset), so a
    network whose hidden biases are frozen at zero remains positively homogeneous in the raw
    pixels. ``centre=True`` subtracts the training inputs' mean from both sets first (principal
    components; the training projections then have zero mean). Returns ``(Z_train, Z_test)`` in
    float64.
    """
    X_train = np.asarray(X_train, dtype=np.float64)
    X_test = np.asarray(X_test, dtype=np.float64)
    if centre:
        if X_train.ndim != 2:
            raise ValueError(f"X must be a matrix (n, d), got shape {X_train.shape}")
        mean = X_train.mean(axis=0)
        X_train, X_test = X_train - mean, X_test - mean
    V = top_singular_directions(X_train, k)
    if X_test.ndim != 2 or X_test.shape[1] != V.shape[0]:
        raise ValueError(f"X_test must have {V.shape[0]} columns like X_train, got shape {X_test.shape}")
    return X_train @ V, X_test @ V


class Dataset(NamedTuple):
    """Training and test inputs ready for :func:`gaugelit.train`; unpacks as four arrays."""
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def _first(n, total, what):
    if n is None:
        return total
    return integer(n, what, low=1, high=total)


def load_dataset(name: str, *, n_train: int | None = None, n_test: int | None = None, k: int = 200,
                 dtype="float32", download: bool = True, centre: bool = False) -> Dataset:
    """A data set of Table 1, preprocessed as in section 4.1.

    Pixels are scaled to [0, 1] and projected onto the top ``k`` singular directions of the
    training inputs (:func:`project_top_singular`, fitted on the training set only; ``centre``
    subtracts the training mean first, which the paper does not say it did). ``n_train``
    and ``n_test`` keep the first examples of each set (the CI scale trains on a subset; the
    directions are then fitted on that subset, the training set actually used).
    Returns ``Dataset(X_train, y_train, X_test, y_test)``: NumPy ``dtype`` inputs, int64 labels.
    """
    dtype = float_dtype(dtype)
    k = integer(k, "k", low=1)
    download = switch(download, "download")
    train_images, train_labels, test_images, test_labels = load_raw(name, download=download)
    n_train = _first(n_train, len(train_labels), "n_train")
    n_test = _first(n_test, len(test_labels), "n_test")
    Z_train, Z_test = project_top_singular(train_images[:n_train] / 255.0,
                                           test_images[:n_test] / 255.0, k, centre=centre)
    return Dataset(Z_train.astype(dtype), train_labels[:n_train].copy(),
                   Z_test.astype(dtype), test_labels[:n_test].copy())
