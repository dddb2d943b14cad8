"""fedlr's server optimizers (common/fl_server_optim.c, run through
tests/tools/fl_sopt_dump) against torch.optim where an equivalent exists,
and against the formulas of Reddi et al. 2021 (Algorithm 2) written here
from scratch in float64 where none does.

Usage: test_server_optim_torch.py PATH/TO/fl_sopt_dump

The pseudo-gradient d_t is minus a gradient, so a server step with rate eta
is a torch optimizer's step with lr eta on grad = -d_t:
  fedavg                   torch.optim.SGD(lr=eta)
  fedavgm:momentum=B       torch.optim.SGD(lr=eta, momentum=B)  (dampening 0)
  fedadagrad:beta1=0,tau=T torch.optim.Adagrad(lr=eta, eps=T,
                           initial_accumulator_value=T^2)
fedadam and fedyogi have no torch twin (torch's Adam corrects the moments'
bias, the paper's does not; torch has no Yogi): they are checked against
the paper's update rules.
"""

import subprocess
import sys

import numpy as np

from checks import Checks

c = Checks()
DUMP = sys.argv[1]
rng = np.random.default_rng(7)
N, T = 257, 12
x0 = rng.normal(0, 0.5, N).astype(np.float32)
# Pseudo-gradients of mixed scales, a few exact zeros (Yogi's sign(0)).
ds = (rng.normal(0, 1, (T, N)) * np.exp(rng.uniform(-6, 0, (T, N)))).astype(np.float32)
ds[:, :5] = 0


def fedlr(spec, eta):
    text = "%s %r %d %d\n" % (spec, eta, N, T)
    text += " ".join(float(v).hex() for v in x0) + "\n"
    for d in ds:
        text += " ".join(float(v).hex() for v in d) + "\n"
    out = subprocess.run([DUMP], input=text, capture_output=True, text=True, check=True).stdout
    rows = [[float.fromhex(v) for v in line.split()] for line in out.splitlines()]
    if len(rows) != T:
        raise SystemExit("fl_sopt_dump: %r" % out[:200])
    return np.array(rows, dtype=np.float64)


def close(a, b, rel=1e-5, abs_=1e-6):
    err = np.abs(a - b) - (abs_ + rel * np.abs(b))
    return bool(np.all(err <= 0)), float(np.max(np.abs(a - b)))


def torch_run(make_opt, eta):
    import torch
    p = torch.nn.Parameter(torch.tensor(x0))
    opt = make_opt([p], eta)
    rows = []
    for d in ds:
        opt.zero_grad()
        p.grad = -torch.tensor(d)
        opt.step()
        rows.append(p.detach().numpy().astype(np.float64).copy())
    return np.array(rows)


def paper(kind, eta, b1=0.9, b2=0.99, tau=1e-3, mom=0.9):
    x = x0.astype(np.float64)
    m = np.zeros(N)
    v = np.full(N, tau * tau)
    rows = []
    for d in ds.astype(np.float64):
        if kind == "fedavgm":
            m = mom * m + d
            x = x + eta * m
        else:
            m = b1 * m + (1 - b1) * d
            if kind == "fedadagrad":
                v = v + d * d
            elif kind == "fedadam":
                v = b2 * v + (1 - b2) * d * d
            else:
                v = v - (1 - b2) * d * d * np.sign(v - d * d)
            x = x + eta * m / (np.sqrt(v) + tau)
        rows.append(x.copy())
    return np.array(rows)


try:
    import torch
    torch.set_num_threads(1)
    have_torch = True
except ImportError:
    have_torch = False
    c.skip("torch.optim comparisons: python3-torch is not installed (bash scripts/deps.sh)")

if have_torch:
    cases = [
        ("fedavg", 0.7, lambda ps, eta: torch.optim.SGD(ps, lr=eta), "SGD(lr)"),
        ("fedavgm:momentum=0.9", 0.3,
         lambda ps, eta: torch.optim.SGD(ps, lr=eta, momentum=0.9), "SGD(lr, momentum=0.9)"),
        ("fedavgm:momentum=0.5", 1.0,
         lambda ps, eta: torch.optim.SGD(ps, lr=eta, momentum=0.5), "SGD(lr, momentum=0.5)"),
        ("fedadagrad:beta1=0,tau=0.001", 0.05,
         lambda ps, eta: torch.optim.Adagrad(ps, lr=eta, eps=1e-3, initial_accumulator_value=1e-6),
         "Adagrad(lr, eps=tau, initial_accumulator_value=tau^2)"),
        ("fedadagrad:beta1=0,tau=0.1", 0.5,
         lambda ps, eta: torch.optim.Adagrad(ps, lr=eta, eps=0.1, initial_accumulator_value=0.01),
         "Adagrad(lr, eps=tau, initial_accumulator_value=tau^2)"),
    ]
    for spec, eta, make, what in cases:
        a, b = fedlr(spec, eta), torch_run(make, eta)
        good, worst = close(a, b)
        c.check(good, "%s, eta %g, %d steps of %d values = torch.optim.%s" % (spec, eta, T, N, what),
                "max |difference| %.3g" % worst)

# Every kind against the paper's rules in float64 (fedlr: double arithmetic
# on float state, so within float rounding).
for spec, kind, kw, eta in [
    ("fedavgm:momentum=0.9", "fedavgm", dict(mom=0.9), 0.3),
    ("fedadagrad:beta1=0.9,tau=0.01", "fedadagrad", dict(b1=0.9, tau=0.01), 0.1),
    ("fedadam", "fedadam", {}, 0.01),
    ("fedadam:beta1=0.5,beta2=0.9,tau=0.1", "fedadam", dict(b1=0.5, b2=0.9, tau=0.1), 0.2),
    ("fedyogi", "fedyogi", {}, 0.01),
    ("fedyogi:beta1=0,beta2=0.999,tau=1e-4", "fedyogi", dict(b1=0, b2=0.999, tau=1e-4), 0.003),
]:
    a, b = fedlr(spec, eta), paper(kind, eta, **kw)
    good, worst = close(a, b, rel=2e-5, abs_=2e-6)
    c.check(good, "%s, eta %g: the paper's Algorithm 2 in float64, %d steps" % (spec, eta, T),
            "max |difference| %.3g" % worst)

out = subprocess.run([DUMP], input="fedadam:tau=0 1 1 1\n0\n0\n", capture_output=True, text=True).stdout
c.check(out.startswith("err ") and "tau=0 must be > 0" in out, "tau 0 refused with a clear error", out)
sys.exit(1 if c.failed else 0)
