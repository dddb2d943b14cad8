#!/usr/bin/python3
"""A PyTorch CNN on Fashion-MNIST, trained by a fedlr coordinator with Python clients.

fedlr does not know this model: the example exports its initial weights to a
safetensors file, ``fedlr-coordinator --init FILE`` starts from them and
aggregates whatever the clients send, and each client trains the CNN on its
own share of the data with the round's rate and local schedule
(fedlr.torch.Trainer). The clients evaluate every new global model on their
held-out examples (federated evaluation): the coordinator has no test set of
its own, so its ``plateau`` round schedule follows the federated loss.
At the end the coordinator's ``model.safetensors`` is loaded back into
torch and evaluated.

Subcommands:

  run BUILD_DIR [--clients 2] [--rounds 5] [--out out/cnn] ...
        everything below, as processes on this machine; prints a summary
  init --out FILE          the initial model, for fedlr-coordinator --init
  client --connect EP --index I --clients N
                           one client: share I of N of the training set
  final --model FILE --clients N [--metrics FILE]
                           load the coordinator's model into torch; its accuracy
                           on the clients' held-out examples (compared with the
                           last round's fed_eval_accuracy) and on the test set

The data is Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist,
or FEDLR_DATA_DIR). --limit N gives each client at most N examples (a quick
run); --holdout F of a client's share is held out for evaluation.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import fedlr  # noqa: E402
import fedlr.safetensors  # noqa: E402
import fedlr.torch  # noqa: E402
import fmnist  # noqa: E402


class CNN(nn.Module):
    """Two 3x3 conv blocks (the first with BatchNorm), then two dense layers:
    about 52,000 parameters. BatchNorm's running mean and variance are float
    buffers and travel with the weights; its num_batches_tracked (an
    integer) stays with each client (fedlr.torch.layout leaves it out)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 7 * 7, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = x.view(-1, 1, 28, 28)
        x = torch.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def shares(a):
    """Every client's (x_train, y_train, x_eval, y_eval), as tensors."""
    x, y = fmnist.load("train", a.data_dir)
    out = []
    for i in range(a.clients):
        parts = fmnist.client_split(x, y, i, a.clients, a.holdout, a.limit, a.split_seed)
        out.append(tuple(torch.from_numpy(p) for p in parts))
    return out


def cmd_init(a):
    torch.manual_seed(a.seed)
    model = CNN()
    fedlr.torch.save_init(model, a.out, {"producer": "examples/python/cnn_fashion_mnist.py"})
    n = sum(int(np.prod(s)) for s in fedlr.torch.layout(model).values())
    print("cnn: wrote %s: %d tensors, %d values" % (a.out, len(fedlr.torch.layout(model)), n), file=sys.stderr)


def cmd_client(a):
    torch.manual_seed(a.seed + a.index)
    x, y = fmnist.load("train", a.data_dir)
    xt, yt, xe, ye = map(torch.from_numpy, fmnist.client_split(x, y, a.index, a.clients, a.holdout, a.limit, a.split_seed))
    model = CNN()
    trainer = fedlr.torch.Trainer(model)
    try:
        fedlr.run_client(
            a.connect,
            lambda weights, info: trainer.fit(weights, info, xt, yt),
            lambda weights, info: trainer.evaluate(weights, xe, ye),
            name="cnn-%d" % a.index, slot=a.index, num_examples=len(xt), num_eval_examples=len(xe),
            layout=fedlr.torch.layout(model), give_up=a.give_up)
    except fedlr.FedlrError as e:
        print("cnn client %d: %s" % (a.index, e), file=sys.stderr)
        return 1
    return 0


def final_eval(a):
    """Loads the coordinator's model into a fresh CNN; returns its accuracy
    and loss on the clients' held-out examples and on the test set."""
    tensors, meta = fedlr.safetensors.load(a.model, require_checksum=True)
    model = CNN()
    fedlr.torch.load_wire(model, tensors)
    held = shares(a)
    xe = torch.cat([s[2] for s in held])
    ye = torch.cat([s[3] for s in held])
    loss, acc, n = fedlr.torch.evaluate_model(model, xe, ye)
    xt, yt = fmnist.load("t10k", a.data_dir)
    tloss, tacc, tn = fedlr.torch.evaluate_model(model, torch.from_numpy(xt), torch.from_numpy(yt))
    return {"heldout_accuracy": acc, "heldout_loss": loss, "heldout_examples": n,
            "test_accuracy": tacc, "test_loss": tloss, "test_examples": tn, "model_metadata": meta}


def cmd_final(a):
    r = final_eval(a)
    print("final model %s in torch: held-out accuracy %.4f (loss %.4f, %d examples of %d clients), "
          "test accuracy %.4f (loss %.4f, %d examples)" % (a.model, r["heldout_accuracy"], r["heldout_loss"],
                                                           r["heldout_examples"], a.clients, r["test_accuracy"],
                                                           r["test_loss"], r["test_examples"]))
    if a.metrics:
        rows = [json.loads(line) for line in open(a.metrics) if line.strip()]
        last = rows[-1]
        print("the coordinator's last round (%d): fed_eval_accuracy %.6f, fed_eval_loss %.6f on %d examples"
              % (last["round"], last["fed_eval_accuracy"], last["fed_eval_loss"], last["fed_eval_examples"]))
        r["fed_eval_accuracy"] = last["fed_eval_accuracy"]
        r["fed_eval_loss"] = last["fed_eval_loss"]
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


def cmd_run(a):
    build = os.path.abspath(a.build)
    os.makedirs(a.out, exist_ok=True)
    init = os.path.join(a.out, "init.safetensors")
    me = [sys.executable, os.path.abspath(__file__)]
    common = ["--clients", str(a.clients), "--holdout", str(a.holdout), "--limit", str(a.limit),
              "--split-seed", str(a.split_seed)] + (["--data-dir", a.data_dir] if a.data_dir else [])
    subprocess.run(me + ["init", "--out", init, "--seed", str(a.seed)], check=True)
    metrics = os.path.join(a.out, "metrics.jsonl")
    if os.path.exists(metrics):
        os.unlink(metrics)
    coord_log = open(os.path.join(a.out, "coord.log"), "w")
    endpoint = "tcp://127.0.0.1:%d" % a.port
    coord = subprocess.Popen([os.path.join(build, "fedlr-coordinator"), "--bind", endpoint, "--init", init,
                              "--clients", str(a.clients), "--start-clients", str(a.clients), "--fraction", "1",
                              "--rounds", str(a.rounds), "--local-epochs", str(a.epochs), "--batch-size", str(a.batch),
                              "--lr", str(a.lr), "--optimizer", a.optimizer, "--schedule", a.schedule,
                              "--local-schedule", a.local_schedule, "--local-unit", a.local_unit,
                              "--seed", str(a.seed), "--start-timeout", "120",
                              "--metrics", metrics, "--out", a.out], stderr=coord_log)
    t0 = time.monotonic()
    clients = []
    for i in range(a.clients):
        log = open(os.path.join(a.out, "client-%d.log" % i), "w")
        clients.append(subprocess.Popen(me + ["client", "--connect", endpoint, "--index", str(i), "--seed", str(a.seed)]
                                        + common, stderr=log))
    status = 0
    for name, p in [("coordinator", coord)] + [("client %d" % i, c) for i, c in enumerate(clients)]:
        rc = p.wait()
        if rc != 0:
            print("cnn: %s exited %d (see %s)" % (name, rc, a.out), file=sys.stderr)
            status = 1
    dt = time.monotonic() - t0
    rows = [json.loads(line) for line in open(metrics)] if os.path.exists(metrics) else []
    for r in rows:
        print("round %d: lr %.5f, %d clients, train loss %.4f, federated eval: loss %.4f accuracy %.4f "
              "(%d examples, %d clients), %.2f s" % (r["round"], r["lr"], r["clients_reported"], r["train_loss"],
                                                    r["fed_eval_loss"], r["fed_eval_accuracy"], r["fed_eval_examples"],
                                                    r["fed_eval_clients"], r["seconds"]))
    print("cnn: %d rounds in %.1f s" % (len(rows), dt))
    if status == 0:
        subprocess.run(me + ["final", "--model", os.path.join(a.out, "model.safetensors"), "--metrics", metrics,
                             "--json", os.path.join(a.out, "final.json")] + common, check=True)
    return status


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="cmd", required=True)

    def data_args(q):
        q.add_argument("--clients", type=int, default=2, help="clients (shares of the training set)")
        q.add_argument("--limit", type=int, default=0, help="at most this many examples a client (0: whole share)")
        q.add_argument("--holdout", type=float, default=0.1, help="fraction of a share held out for evaluation")
        q.add_argument("--split-seed", type=int, default=1)
        q.add_argument("--data-dir", default=None)

    q = sub.add_parser("run", help="the whole example: coordinator, clients, final evaluation")
    q.add_argument("build", help="the build directory holding fedlr-coordinator")
    q.add_argument("--out", default="out/cnn")
    q.add_argument("--rounds", type=int, default=5)
    q.add_argument("--epochs", type=int, default=1)
    q.add_argument("--batch", type=int, default=32)
    q.add_argument("--lr", type=float, default=0.05)
    q.add_argument("--optimizer", default="momentum:0.9")
    q.add_argument("--schedule", default="plateau:patience=1,factor=0.5")
    q.add_argument("--local-schedule", default="cos:T=1")
    q.add_argument("--local-unit", default="epoch")
    q.add_argument("--seed", type=int, default=1)
    q.add_argument("--port", type=int, default=7272)
    data_args(q)
    q = sub.add_parser("init", help="write the initial model for fedlr-coordinator --init")
    q.add_argument("--out", required=True)
    q.add_argument("--seed", type=int, default=1)
    q = sub.add_parser("client", help="one client")
    q.add_argument("--connect", required=True)
    q.add_argument("--index", type=int, required=True)
    q.add_argument("--seed", type=int, default=1)
    q.add_argument("--give-up", type=float, default=60.0)
    data_args(q)
    q = sub.add_parser("final", help="evaluate the coordinator's model.safetensors in torch")
    q.add_argument("--model", required=True)
    q.add_argument("--metrics", default=None, help="the run's metrics.jsonl (prints its last fed_eval_*)")
    q.add_argument("--json", default=None, help="write the figures to this file")
    data_args(q)
    a = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    return {"run": cmd_run, "init": cmd_init, "client": cmd_client, "final": cmd_final}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
