"""A fedlr CNN on 3-channel images loads into the equivalent nn.Sequential.

Usage: test_shape_interop.py MODEL.safetensors METRICS.jsonl TEST.csv

MODEL was written by fedlr-sim --input-shape 3x8x8 --model
cnn:conv3x3x8,pool2,fc16 (4 classes) after its last round, whose test loss
and accuracy METRICS holds; TEST.csv is its test set (label, then 192
features in NCHW order). Checked: the weights load (strict) into
nn.Sequential(Conv2d(3, 8, 3, padding=1), ReLU(), MaxPool2d(2), Flatten(),
Linear(128, 16), ReLU(), Linear(16, 4)), whose loss and accuracy on the
test set, read as (N, 3, 8, 8), are fedlr's own.
"""
import json
import sys

import numpy as np

from checks import Checks

c = Checks()
model_path, metrics_path, test_path = sys.argv[1:4]
data = np.loadtxt(test_path, delimiter=",", dtype=np.float32)
x, y = data[:, 1:].reshape(-1, 3, 8, 8), data[:, 0].astype(np.int64)
last = [json.loads(line) for line in open(metrics_path)][-1]

import torch  # noqa: E402

import fedlr.safetensors  # noqa: E402

torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                          torch.nn.Flatten(), torch.nn.Linear(128, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in fedlr.safetensors.load(model_path)[0].items()})
with torch.no_grad():
    logits = net(torch.from_numpy(x))
    loss = torch.nn.functional.cross_entropy(logits.double(), torch.from_numpy(y)).item()
acc = float((logits.argmax(1).numpy() == y).mean())
c.check(abs(loss - last["test_loss"]) < 2e-5 and acc == last["test_accuracy"],
        "nn.Sequential(Conv2d(3, 8, 3, padding=1), ...) with fedlr's 3x8x8 CNN: test loss %.6f, accuracy %.4f "
        "= fedlr's (%.6f, %.4f)" % (loss, acc, last["test_loss"], last["test_accuracy"]), "fedlr %r" % last)
sys.exit(1 if c.failed else 0)
