"""A fedlr CNN's model.safetensors in PyTorch and in numpy.

Usage: test_cnn_interop.py MODEL.safetensors METRICS.jsonl DATA_DIR

MODEL was written by fedlr-sim --model cnn:conv5x5x8,pool2,conv5x5x16,pool2,fc32
after its last round, whose test loss and accuracy METRICS holds. Checked:
- the README's three lines load it into the equivalent torch.nn.Sequential
  (load_state_dict, strict), whose test loss and accuracy on the 10,000
  real Fashion-MNIST test images equal fedlr's own evaluation;
- a forward pass written here from scratch in numpy (zero padding, the
  convolution as sums of shifted products, 2x2 max pooling, NCHW
  flattening) gives the same logits as torch on real test images.
"""
import gzip
import json
import sys

import numpy as np

from checks import Checks

c = Checks()
model_path, metrics_path, data_dir = sys.argv[1:4]


def idx(path):
    with gzip.open(path, "rb") as f:
        b = f.read()
    nd = b[3]
    dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(b, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims)


x = (idx(data_dir + "/t10k-images-idx3-ubyte.gz").astype(np.float32) / np.float32(255)).reshape(-1, 1, 28, 28)
y = idx(data_dir + "/t10k-labels-idx1-ubyte.gz").astype(np.int64)
last = [json.loads(line) for line in open(metrics_path)][-1]

import torch  # noqa: E402

torch.set_num_threads(1)
# -- the README's three lines --
import fedlr.safetensors  # noqa: E402
net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                          torch.nn.Conv2d(8, 16, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                          torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in fedlr.safetensors.load(model_path)[0].items()})
# --
with torch.no_grad():
    logits = torch.cat([net(torch.from_numpy(x[i:i + 1000])) for i in range(0, len(x), 1000)])
    loss = torch.nn.functional.cross_entropy(logits.double(), torch.from_numpy(y)).item()
acc = float((logits.argmax(1).numpy() == y).mean())
c.check(abs(loss - last["test_loss"]) < 2e-5 and acc == last["test_accuracy"],
        "torch.nn.Sequential with fedlr's CNN weights: test loss %.6f, accuracy %.4f on 10,000 real images = "
        "fedlr's own evaluation (%.6f, %.4f)" % (loss, acc, last["test_loss"], last["test_accuracy"]),
        "fedlr %r" % last)

w, _ = fedlr.safetensors.load(model_path)


def conv_same(a, wt, b):
    n, cin, h, wd = a.shape
    k = wt.shape[2]
    p = (k - 1) // 2
    ap = np.zeros((n, cin, h + 2 * p, wd + 2 * p), dtype=np.float64)
    ap[:, :, p:p + h, p:p + wd] = a
    out = np.zeros((n, wt.shape[0], h, wd), dtype=np.float64) + b[None, :, None, None]
    for i in range(k):
        for j in range(k):
            out += np.einsum("nchw,oc->nohw", ap[:, :, i:i + h, j:j + wd], wt[:, :, i, j])
    return out


def pool2(a):
    n, ch, h, wd = a.shape
    return a[:, :, :h // 2 * 2, :wd // 2 * 2].reshape(n, ch, h // 2, 2, wd // 2, 2).max(axis=(3, 5))


def forward(a):
    a = pool2(np.maximum(conv_same(a, w["0.weight"].astype(np.float64), w["0.bias"]), 0))
    a = pool2(np.maximum(conv_same(a, w["3.weight"].astype(np.float64), w["3.bias"]), 0))
    a = a.reshape(len(a), -1)  # NCHW flattening
    a = np.maximum(a @ w["7.weight"].T.astype(np.float64) + w["7.bias"], 0)
    return a @ w["9.weight"].T.astype(np.float64) + w["9.bias"]


mine = forward(x[:500].astype(np.float64))
diff = float(np.abs(mine - logits[:500].numpy()).max())
c.check(diff < 1e-4 and (mine.argmax(1) == logits[:500].numpy().argmax(1)).all(),
        "numpy from scratch (zero padding, shifted products, 2x2 max, NCHW flatten) = torch's logits on 500 real "
        "test images (max |difference| %.2e)" % diff)
sys.exit(1 if c.failed else 0)
