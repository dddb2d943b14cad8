#!/usr/bin/python3
"""A PyTorch client for fedlr's built-in models (``--model softmax`` or
``mlp:H1,H2,...``) on Fashion-MNIST: it joins a ``fedlr-coordinator`` next to
``fedlr-client`` processes and trains the same model with the same rate,
local schedule and optimizer (fedlr.torch.Trainer).

fedlr's MLP is a stack of ``nn.Linear`` layers with ReLU between them; its
tensors are named ``layers.<l>.weight`` (out, in) and ``layers.<l>.bias``,
which is what ``torch.nn.ModuleList`` under the attribute ``layers`` gives.

    mlp_client.py --connect tcp://127.0.0.1:7070 --model mlp:200,200 \\
        --num-partitions 4 --partition-index 2

Each client takes share --partition-index of --num-partitions of the
training set (shuffled with --seed; see fmnist.client_split) and holds out
--holdout of it for federated evaluation.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))

import torch  # noqa: E402

import fedlr  # noqa: E402
import fedlr.torch  # noqa: E402
import fmnist  # noqa: E402


class FedlrMLP(torch.nn.Module):
    """fedlr's built-in model: Linear layers, ReLU between them."""

    def __init__(self, dims):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(dims, dims[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers):
                x = torch.relu(x)
        return x


def model_dims(spec, inputs=784, classes=10):
    """The layer widths of a fedlr model spec ("softmax", "mlp:200,200")."""
    if spec == "softmax":
        return [inputs, classes]
    if spec.startswith("mlp:"):
        try:
            hidden = [int(h) for h in spec[4:].split(",")]
        except ValueError:
            hidden = [0]
        if all(h > 0 for h in hidden):
            return [inputs] + hidden + [classes]
    raise SystemExit("mlp_client: --model %r: softmax or mlp:H1,H2,... (positive widths)" % spec)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connect", required=True, help="the coordinator's endpoint, tcp://HOST:PORT")
    p.add_argument("--model", default="mlp:200,200", help="the coordinator's --model (default mlp:200,200)")
    p.add_argument("--num-partitions", type=int, default=1)
    p.add_argument("--partition-index", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="at most this many examples in the share (0: all)")
    p.add_argument("--holdout", type=float, default=0.1, help="fraction held out for evaluation (default 0.1)")
    p.add_argument("--seed", type=int, default=1, help="seed of the split (default 1)")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX files (default %s)" % fmnist.DEFAULT_DIR)
    p.add_argument("--name", default=None)
    p.add_argument("--slot", type=int, default=None, help="ask for this client id (default: none)")
    p.add_argument("--shuffle", choices=("torch", "fedlr"), default="torch",
                   help="example order: torch's generator, or exactly fedlr-client's (slower)")
    p.add_argument("--curve-secret", default=None)
    p.add_argument("--coordinator-key", default=None)
    p.add_argument("--give-up", type=float, default=300.0)
    a = p.parse_args()

    torch.manual_seed(a.seed)
    x, y = fmnist.load("train", a.data_dir)
    xt, yt, xe, ye = fmnist.client_split(x, y, a.partition_index, a.num_partitions, a.holdout, a.limit, a.seed)
    model = FedlrMLP(model_dims(a.model))
    trainer = fedlr.torch.Trainer(model, shuffle=a.shuffle)
    xt, yt, xe, ye = map(torch.from_numpy, (xt, yt, xe, ye))

    def train(weights, info):
        return trainer.fit(weights, info, xt, yt)

    def evaluate(weights, info):
        return trainer.evaluate(weights, xe, ye)

    try:
        fedlr.run_client(a.connect, train, evaluate if len(ye) else None,
                         name=a.name or "py-mlp-%d" % a.partition_index, num_examples=len(xt),
                         num_eval_examples=len(ye), slot=a.slot, layout=fedlr.torch.layout(model),
                         curve_secret=a.curve_secret, coordinator_key=a.coordinator_key, give_up=a.give_up)
    except fedlr.FedlrError as e:
        print("mlp_client: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
