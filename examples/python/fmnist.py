"""Fashion-MNIST for the Python examples: the IDX files of Debian's
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), read with
numpy, and a client's share of them.

Pixels are scaled to [0, 1] as fedlr's C code does (common/fl_data.c:
value / 255 in float32), so a Python client sees the same numbers as a
``fedlr-client``. :func:`client_split` gives client ``index`` of ``count`` a
disjoint slice of the training set and splits it into training and held-out
(evaluation) examples.
"""

import gzip
import os
import struct

import numpy as np

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"


def _open(path):
    if os.path.exists(path + ".gz"):
        return gzip.open(path + ".gz", "rb")
    if os.path.exists(path):
        return open(path, "rb")
    raise FileNotFoundError("%s(.gz) not found (install the Debian package dataset-fashion-mnist, "
                            "or pass the directory of the IDX files)" % path)


def load(split="train", data_dir=None):
    """(x, y): x float32 (n, 784) in [0, 1], y int64 (n,), for split
    "train" (60,000) or "t10k" (10,000)."""
    d = data_dir or os.environ.get("FEDLR_DATA_DIR") or DEFAULT_DIR
    with _open(os.path.join(d, "%s-images-idx3-ubyte" % split)) as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 0x803:
            raise ValueError("%s: not an IDX image file (magic %#x)" % (split, magic))
        x = np.frombuffer(f.read(n * rows * cols), dtype=np.uint8)
        if x.size != n * rows * cols:
            raise ValueError("%s images: truncated" % split)
    with _open(os.path.join(d, "%s-labels-idx1-ubyte" % split)) as f:
        magic, m = struct.unpack(">II", f.read(8))
        y = np.frombuffer(f.read(m), dtype=np.uint8)
        if magic != 0x801 or m != n or y.size != n:
            raise ValueError("%s labels: bad header or count" % split)
    # x / 255 in float32, as fl_data.c's lookup table (float)i / 255.0f.
    lut = np.arange(256, dtype=np.float32) / np.float32(255.0)
    return lut[x].reshape(n, rows * cols), y.astype(np.int64)


def client_split(x, y, index, count, holdout=0.1, limit=None, seed=1):
    """Client `index` of `count`: a disjoint share of (x, y) after a shuffle
    by `seed`, at most `limit` examples if given, split into
    (x_train, y_train, x_eval, y_eval) with a `holdout` fraction held out."""
    if not 0 <= index < count:
        raise ValueError("client index %d is not in [0, %d)" % (index, count))
    order = np.random.default_rng(seed).permutation(len(x))
    share = np.array_split(order, count)[index]
    if limit:
        share = share[:limit]
    k = int(round(len(share) * holdout))
    train, held = share[k:], share[:k]
    return x[train], y[train], x[held], y[held]
