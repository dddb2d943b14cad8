"""fedlr.torch.Trainer against fedlr's built-in trainer (client/fl_trainer.c).

Usage: test_torch_vs_c.py BUILD_DIR TMP_DIR

For each optimizer kind, with local schedules per step and per epoch,
weight decay and keep_state over two rounds: one run of fedlr-coordinator
with a fedlr-client on a CSV file, one with a Python client
(torch_csv_client.py: fedlr.torch.Trainer with shuffle="fedlr") on the
same file, same flags and seed. The two final models must agree to float
rounding: the same rate at every step, the same optimizer semantics, the
same example order. A run with torch's own shuffle is the control: it must
differ by far more. FedProx (--prox-mu) is among the configurations: the
proximal term of fedlr.torch is the C trainer's. Before the runs,
fedlr.torch.Trainer's FedProx step is checked on its own against autograd
on the FedProx objective loss + mu/2 ||w - w_global||^2.
"""

import os
import socket
import subprocess
import sys

import numpy as np
import torch

from checks import Checks

import fedlr
import fedlr.torch as ft
from fedlr import safetensors, schedules
from fedlr.rng import epoch_orders
from fedlr.wire import OptimizerConfig

C = Checks()
BUILD, TMP = sys.argv[1], sys.argv[2]
PY = sys.executable
HERE = os.path.dirname(os.path.abspath(__file__))
TOL = 2e-5  # absolute, on weights of magnitude ~1: float rounding after ~100 steps

# Data with values k/64 (exact in float32 and in decimal, so C's strtof and
# numpy read the same numbers).
rng = np.random.default_rng(5)
centers = rng.integers(-64, 64, (3, 20)) / 64
train = os.path.join(TMP, "train.csv")
test = os.path.join(TMP, "test.csv")
for path, n in ((train, 160), (test, 90)):
    y = rng.integers(0, 3, n)
    x = np.round((centers[y] + rng.normal(0, 1, (n, 20))) * 64) / 64
    with open(path, "w") as f:
        for i in range(n):
            f.write("%d,%s\n" % (y[i], ",".join(repr(float(v)) for v in x[i])))

CONFIGS = [
    # (optimizer, local schedule, unit, epochs, rounds, FedProx mu)
    ("sgd,wd=0.001", "exp:gamma=0.97", "step", 2, 1, 0),
    ("momentum:0.9", "cos:T=3", "epoch", 3, 2, 0),
    ("nesterov:0.8,wd=0.01", "warmup:5+linear:T=40,end=0.001", "step", 2, 1, 0),
    ("adagrad", "piecewise:20=0.5,30=0.25", "step", 2, 1, 0),
    ("adagrad:eps=1e-6,keep", "const", "epoch", 1, 2, 0),
    ("rmsprop:alpha=0.9", "inv:T=10,p=0.5", "step", 2, 1, 0),
    ("momentum:0.9,wd=0.01", "const", "epoch", 3, 2, 0.5),
    ("adam:keep", "step:gamma=0.5,every=1", "epoch", 2, 2, 0),
    ("momentum:0.5,keep", "poly:T=50,power=2", "step", 1, 3, 0),
]


# ---- FedProx in fedlr.torch.Trainer, against autograd on its objective ----
def prox_fit(mu, reference):
    """One round of 2 epochs (momentum, weight decay) on a small MLP: the
    final weights from Trainer.fit, or (reference) from a loop that lets
    autograd differentiate loss + mu/2 ||w - w_global||^2."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(60, 20, generator=g), torch.randint(0, 3, (60,), generator=g)
    weights = ft.to_wire(model)
    for k in weights:  # a global model away from the init, so the term matters
        weights[k] = weights[k] + np.float32(0.1)
    info = fedlr.RoundInfo(round=1, attempt=1, lr=np.float32(0.05).item(), local_schedule="", local_unit="epoch",
                           schedule=schedules.Schedule(), optimizer=OptimizerConfig("momentum", momentum=0.9,
                                                                                    weight_decay=0.01),
                           local_epochs=2, batch_size=8, seed=3, model="custom", client_id=0, num_examples=60,
                           prox_mu=mu)
    if not reference:
        res = ft.Trainer(model, shuffle="fedlr").fit(weights, info, x, y)
        return {k: np.asarray(weights[k]) + res.weights[k] for k in weights}, res.train_loss
    ft.load_wire(model, weights)
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = ft.make_optimizer(model.parameters(), info.optimizer, info.lr)
    loss_sum = seen = 0
    for order in epoch_orders(info.seed, 60, 2):
        for b0 in range(0, 60, 8):
            idx = torch.tensor(order[b0:b0 + 8])
            opt.zero_grad()
            data = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            prox = sum(((p - p0) ** 2).sum() for p, p0 in zip(model.parameters(), w0))
            (data + mu / 2 * prox).backward()
            opt.step()
            loss_sum += float(data) * len(idx)
            seen += len(idx)
    return ft.to_wire(model), loss_sum / seen


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start(tag, opt, sched, unit, epochs, rounds, client, mu):
    """Starts a run (coordinator and client); returns a function that waits
    for it and returns its final model."""
    out = os.path.join(TMP, tag)
    ep = "tcp://127.0.0.1:%d" % free_port()
    coord = subprocess.Popen(
        [os.path.join(BUILD, "fedlr-coordinator"), "--bind", ep, "--dataset", train, "--test-data", test,
         "--model", "mlp:16", "--clients", "1", "--fraction", "1", "--rounds", str(rounds), "--lr", "0.05",
         "--optimizer", opt, "--local-schedule", sched, "--local-unit", unit, "--local-epochs", str(epochs),
         "--batch-size", "8", "--seed", "3", "--prox-mu", str(mu), "--out", out, "--quiet", "--start-timeout", "30"],
        stderr=open(out + ".coord.log", "w"))
    if client == "c":
        cl = [os.path.join(BUILD, "fedlr-client"), "--connect", ep, "--data", train, "--give-up", "30"]
    else:
        cl = [PY, os.path.join(HERE, "torch_csv_client.py"), ep, train, "20,16,3", client]
    cp = subprocess.Popen(cl, stderr=open(out + ".client.log", "w"))

    def wait():
        crc = cp.wait(timeout=60)
        rc = coord.wait(timeout=60)
        if rc or crc:
            raise RuntimeError("%s: coordinator exit %d, client exit %d (logs in %s.*.log)" % (tag, rc, crc, out))
        return safetensors.load(os.path.join(out, "model.safetensors"))[0]

    return wait


def maxdiff(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


got, got_loss = prox_fit(0.5, False)
want, want_loss = prox_fit(0.5, True)
plain, plain_loss = prox_fit(0.0, False)
d, moved = maxdiff(got, want), maxdiff(got, plain)
C.check(d <= 1e-5 and moved > 1000 * max(d, 1e-9),
        "FedProx: Trainer.fit with prox_mu 0.5 = autograd on loss + mu/2 ||w - w_global||^2 (max |difference| %.2g; "
        "%.2g from prox_mu 0)" % (d, moved), "above 1e-5, or the term does not matter")
C.check(abs(got_loss - want_loss) <= 1e-6 * abs(want_loss),
        "FedProx: the reported train_loss is the data loss (%.6f), without the term" % got_loss,
        "%r vs %r" % (got_loss, want_loss))


for i, (opt, sched, unit, epochs, rounds, mu) in enumerate(CONFIGS):
    what = "%s, local %s per %s, %d epochs, %d round%s%s" % (opt, sched, unit, epochs, rounds, "s" if rounds > 1 else "",
                                                             ", FedProx mu %g" % mu if mu else "")
    control = i == len(CONFIGS) - 2
    try:
        # The two runs at once (the coordinator lingers 2 s after a run).
        runs = [start("%s%d" % (k, i), opt, sched, unit, epochs, rounds, k2, mu)
                for k, k2 in (("c", "c"), ("p", "fedlr")) + ((("t", "torch"),) if control else ())]
        models = [w() for w in runs]
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        C.bad("%s: %s" % (what, e))
        continue
    d = maxdiff(models[0], models[1])
    C.check(d <= TOL, "torch helper = C trainer (%s): max |difference| %.2g" % (what, d), "above %g" % TOL)
    if control:
        dt = maxdiff(models[0], models[2])
        C.check(dt > 100 * max(d, 1e-9), "control: with torch's shuffle instead of fedlr's order the models differ by %.2g (%.0fx more)" % (dt, dt / max(d, 1e-12)))
sys.exit(1 if C.failed else 0)
