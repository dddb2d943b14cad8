"""A fedlr.torch client of fedlr's built-in MLP on a CSV file (label,
features...), for python/tests/test_torch_vs_c.py.

Usage: torch_csv_client.py ENDPOINT FILE.csv WIDTHS SHUFFLE
(WIDTHS: "20,16,3" = inputs, hidden..., classes; SHUFFLE: fedlr or torch)."""

import sys

import checks  # noqa: F401  (puts this tree's python/ on sys.path)
import numpy as np
import torch

import fedlr
import fedlr.torch as ft

torch.set_num_threads(1)
endpoint, path, widths, shuffle = sys.argv[1:5]
d = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
x = torch.tensor(d[:, 1:], dtype=torch.float32)
y = torch.tensor(d[:, 0], dtype=torch.long)
dims = [int(w) for w in widths.split(",")]


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(dims, dims[1:]))

    def forward(self, v):
        for i, layer in enumerate(self.layers):
            v = layer(v)
            if i + 1 < len(self.layers):
                v = torch.relu(v)
        return v


model = MLP()
trainer = ft.Trainer(model, shuffle=shuffle)
fedlr.run_client(endpoint, lambda w, info: trainer.fit(w, info, x, y), num_examples=len(x), name="py-csv",
                 layout=ft.layout(model), give_up=30)
