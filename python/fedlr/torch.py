"""fedlr.torch: train a PyTorch model in a fedlr round as fedlr trains its own.

Importing this module imports torch (Debian's python3-torch). The pieces:

- :func:`layout`, :func:`to_wire`, :func:`load_wire`: a model's
  ``state_dict`` to and from the wire tensors. Names are the state_dict keys
  (so fedlr's ``model.safetensors`` holds them under the same names); values
  float32. Only floating-point entries travel: integer buffers such as
  BatchNorm's ``num_batches_tracked`` are not in the layout and stay local
  (each client keeps its own count). Float buffers (BatchNorm's running mean
  and variance) travel and are averaged like parameters.
- :func:`make_optimizer`: the ``torch.optim`` optimizer a RoundStart asks
  for, with fedlr's hyper-parameters (``fedlr.OptimizerConfig``): SGD,
  momentum, Nesterov (dampening 0), Adagrad (lr_decay 0, initial
  accumulator 0), RMSprop (uncentered, no momentum), Adam (no amsgrad);
  ``weight_decay`` is L2 added to the gradient, as torch.optim's.
- :func:`set_lr`: the rate of one step, ``info.step_lr(epoch, step)``: the
  round's rate under the local schedule, t = the epoch index (local unit
  "epoch") or the step index counted across the round ("step"), computed in
  double and applied as float32, exactly as ``client/fl_trainer.c``.
- :func:`proximal_anchor`, :func:`add_proximal_grad`: FedProx (Li et al.
  2020, protocol version 3): with ``info.prox_mu`` > 0 the round trains on
  loss(w) + mu/2 ||w - w_global||^2, i.e. ``mu * (w - w_global)`` is added to
  every parameter's gradient after ``backward()`` and before
  ``optimizer.step()`` (weight decay then acts on the whole gradient), as
  the FedProx reference code and fedlr's C trainer do; the reported
  training loss stays the data loss.
- :class:`Trainer`: all of it, the built-in trainer's loop on tensors you
  hold: keeps the optimizer across rounds (its state is reset at every round
  start unless the RoundStart says ``keep_state``), loads the global
  weights, runs ``local_epochs`` epochs of minibatches of ``batch_size``
  (the last batch of an epoch may be smaller) in a fresh order each epoch,
  sets each step's rate, applies FedProx's term when the round asks for it,
  and returns the update (local - global) with the example-weighted mean
  training loss::

      trainer = fedlr.torch.Trainer(model)          # loss: cross-entropy
      fedlr.run_client(endpoint,
                       lambda w, info: trainer.fit(w, info, x_train, y_train),
                       lambda w, info: trainer.evaluate(w, x_test, y_test),
                       num_examples=len(x_train), num_eval_examples=len(x_test),
                       layout=fedlr.torch.layout(model))

  With ``shuffle="fedlr"`` the examples are visited in exactly the C
  trainer's order (``fedlr.rng``), so on the same data a Python client and a
  ``fedlr-client`` compute the same update up to float rounding.

Your own loop (a DataLoader, mixed precision, ...) uses the pieces::

    opt = trainer.optimizer_for(info)     # or make_optimizer(model.parameters(), info.optimizer)
    load_wire(model, weights)
    anchor = proximal_anchor(model)       # FedProx's w_global (only needed if info.prox_mu > 0)
    step = 0
    for epoch in range(info.local_epochs):
        for xb, yb in loader:
            info.check_cancelled()
            set_lr(opt, info.step_lr(epoch, step))
            ...; loss.backward()
            add_proximal_grad(anchor, info.prox_mu)
            opt.step(); step += 1
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .client import EvalResult, RoundInfo, TrainResult
from .rng import epoch_orders
from .wire import Layout, OptimizerConfig

__all__ = ["layout", "to_wire", "load_wire", "save_init", "make_optimizer", "configure_optimizer", "set_lr",
           "proximal_anchor", "add_proximal_grad", "Trainer"]

StateLike = Union[torch.nn.Module, Mapping[str, torch.Tensor]]


def _state(m: StateLike) -> Mapping[str, torch.Tensor]:
    return m.state_dict() if isinstance(m, torch.nn.Module) else m


def _travels(t: torch.Tensor) -> bool:
    return torch.is_floating_point(t)


def layout(model: StateLike) -> Layout:
    """The wire layout of a model: {state_dict key: shape} of its
    floating-point entries, in state_dict order."""
    return {k: tuple(v.shape) for k, v in _state(model).items() if _travels(v)}


def to_wire(model: StateLike) -> Dict[str, np.ndarray]:
    """The model's floating-point state_dict entries as float32 numpy arrays
    (copies, on the CPU), in state_dict order."""
    return {k: v.detach().to("cpu", torch.float32).numpy().copy() for k, v in _state(model).items() if _travels(v)}


def load_wire(model: torch.nn.Module, weights: Mapping[str, np.ndarray]) -> None:
    """Copies wire tensors into the model's state_dict entries of the same
    names, in place (dtype and device of the model kept). Every
    floating-point entry must be given, with its shape; other entries are
    left alone."""
    state = model.state_dict()
    want = layout(state)
    missing = [k for k in want if k not in weights]
    extra = [k for k in weights if k not in want]
    if missing or extra:
        raise ValueError("weights do not match the model: missing %s, not in the model %s" % (missing[:5], extra[:5]))
    with torch.no_grad(), warnings.catch_warnings():
        # Wire arrays are read-only views of the received message; they are
        # only read here.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for k, shape in want.items():
            a = weights[k]
            if tuple(a.shape) != shape:
                raise ValueError("'%s' has shape %s, the model's is %s" % (k, list(a.shape), list(shape)))
            state[k].copy_(torch.from_numpy(np.asarray(a, dtype=np.float32)))


def save_init(model: StateLike, path: str, metadata: Optional[Mapping[str, str]] = None) -> None:
    """Writes the model's wire tensors to a safetensors file for
    ``fedlr-coordinator --init FILE``."""
    from . import safetensors

    safetensors.save(path, to_wire(model), metadata)


def _check(cfg: OptimizerConfig) -> None:
    """fl_optim_validate's ranges, with its messages."""
    k = cfg.kind
    if not (cfg.weight_decay >= 0 and math.isfinite(cfg.weight_decay)):
        raise ValueError("optimizer %s: wd=%g must be finite and >= 0" % (k, cfg.weight_decay))
    if k == "momentum" and not 0 <= cfg.momentum < 1:
        raise ValueError("optimizer %s: momentum=%g must be in [0, 1)" % (k, cfg.momentum))
    if k == "nesterov" and not 0 < cfg.momentum < 1:
        raise ValueError("optimizer %s: momentum=%g must be in (0, 1)" % (k, cfg.momentum))
    if k == "rmsprop" and not 0 <= cfg.alpha < 1:
        raise ValueError("optimizer %s: alpha=%g must be in [0, 1)" % (k, cfg.alpha))
    if k == "adam":
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(cfg, name) < 1:
                raise ValueError("optimizer %s: %s=%g must be in [0, 1)" % (k, name, getattr(cfg, name)))
    if k in ("adagrad", "rmsprop", "adam") and not (cfg.eps > 0 and math.isfinite(cfg.eps)):
        raise ValueError("optimizer %s: eps=%g must be finite and > 0" % (k, cfg.eps))
    if k not in ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"):
        raise ValueError("optimizer: unknown kind %r" % k)


def _hyper(cfg: OptimizerConfig) -> dict:
    k = cfg.kind
    h = {"weight_decay": cfg.weight_decay}
    if k == "sgd":
        h.update(momentum=0.0, dampening=0.0, nesterov=False)
    elif k in ("momentum", "nesterov"):
        h.update(momentum=cfg.momentum, dampening=0.0, nesterov=k == "nesterov")
    elif k == "adagrad":
        h.update(eps=cfg.eps, lr_decay=0.0)
    elif k == "rmsprop":
        h.update(alpha=cfg.alpha, eps=cfg.eps, momentum=0.0, centered=False)
    elif k == "adam":
        h.update(betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, amsgrad=False)
    return h


_CLASSES = {"sgd": torch.optim.SGD, "momentum": torch.optim.SGD, "nesterov": torch.optim.SGD,
            "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam}


def make_optimizer(params, cfg: OptimizerConfig, lr: float = 0.0) -> torch.optim.Optimizer:
    """A new torch.optim optimizer for ``cfg`` (fedlr's semantics, above).
    Raises ValueError for values fedlr would refuse."""
    _check(cfg)
    extra = {"initial_accumulator_value": 0.0} if cfg.kind == "adagrad" else {}
    return _CLASSES[cfg.kind](params, lr=lr, **_hyper(cfg), **extra)


def configure_optimizer(opt: torch.optim.Optimizer, cfg: OptimizerConfig) -> None:
    """Sets ``cfg``'s hyper-parameters on an optimizer of the same kind
    (state kept)."""
    _check(cfg)
    for g in opt.param_groups:
        g.update(_hyper(cfg))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Sets the rate of every parameter group (use ``info.step_lr(epoch, step)``)."""
    for g in opt.param_groups:
        g["lr"] = lr


Anchor = List[Tuple[torch.nn.Parameter, torch.Tensor]]


def proximal_anchor(model: torch.nn.Module) -> Anchor:
    """FedProx's anchor: each trainable parameter with a detached copy of
    its value now. Take it right after :func:`load_wire` (the round's
    global weights), before the first step."""
    return [(p, p.detach().clone()) for p in model.parameters() if p.requires_grad]


def add_proximal_grad(anchor: Anchor, mu: float) -> None:
    """FedProx's proximal gradient: adds ``mu * (w - w_global)`` to each
    anchored parameter's ``grad`` in place (a parameter that ``backward()``
    left without one gets it alone), what autograd would add for the term
    ``mu/2 ||w - w_global||^2``. Call it after ``backward()`` and before
    ``optimizer.step()``. Nothing happens for ``mu`` <= 0."""
    if not mu > 0:
        return
    with torch.no_grad():
        for p, w0 in anchor:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.add_(p - w0, alpha=mu)


class Trainer:
    """fedlr's built-in trainer loop for a PyTorch model (see the module doc).

    ``loss_fn(outputs, targets)`` returns the mean loss of a batch (default
    cross-entropy on logits). ``shuffle``: "torch" (a torch.Generator seeded
    with the round's seed) or "fedlr" (the C trainer's exact order; slower
    for large data: Python integers). ``device``: where batches go (default
    the model's)."""

    def __init__(self, model: torch.nn.Module, loss_fn: Optional[Callable] = None, shuffle: str = "torch",
                 device: Optional[Union[str, torch.device]] = None):
        if shuffle not in ("torch", "fedlr"):
            raise ValueError("shuffle %r: 'torch' or 'fedlr'" % shuffle)
        self.model = model
        self.loss_fn = loss_fn or F.cross_entropy
        self.shuffle = shuffle
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self._kind: Optional[str] = None

    def optimizer_for(self, info: RoundInfo) -> torch.optim.Optimizer:
        """The optimizer for this round: the one of earlier rounds if the
        kind is the same (hyper-parameters updated), else a new one; its
        state cleared unless ``info.optimizer.keep_state``, as fedlr's
        built-in trainer does."""
        cfg = info.optimizer
        # A fresh optimizer is fresh state for every kind (torch's Adagrad
        # creates its state at construction, so clearing it would not do).
        if self.optimizer is None or self._kind != cfg.kind or not cfg.keep_state:
            self.optimizer = make_optimizer(self.model.parameters(), cfg, info.lr)
            self._kind = cfg.kind
        else:
            configure_optimizer(self.optimizer, cfg)
        return self.optimizer

    def _tensor(self, a, dtype=None) -> torch.Tensor:
        t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
        return t.to(self.device, dtype) if dtype is not None else t.to(self.device)

    def fit(self, weights: Mapping[str, np.ndarray], info: RoundInfo, x, y) -> TrainResult:
        """Trains the round on examples ``x`` (n, ...) with targets ``y``
        (n, ...), tensors or arrays, FedProx's term included when
        ``info.prox_mu`` > 0: returns the update (local - global, as a
        delta) with the examples, steps and mean data loss. Checks
        ``info.cancelled`` between steps (raises fedlr.RoundCancelled)."""
        n = len(x)
        if n == 0 or len(y) != n:
            raise ValueError("fit: %d examples and %d targets" % (n, len(y)))
        model = self.model
        load_wire(model, weights)
        mu = info.prox_mu
        anchor = proximal_anchor(model) if mu > 0 else []
        opt = self.optimizer_for(info)
        x = self._tensor(x)
        y = self._tensor(y)
        B = min(info.batch_size, n)
        model.train()
        if self.shuffle == "fedlr":
            orders = (torch.tensor(o, dtype=torch.long) for o in epoch_orders(info.seed, n, info.local_epochs))
        else:
            g = torch.Generator().manual_seed(info.seed & 0x7FFF_FFFF_FFFF_FFFF)
            orders = (torch.randperm(n, generator=g) for _ in range(info.local_epochs))
        loss_sum, seen, step = 0.0, 0, 0
        for epoch, order in enumerate(orders):
            order = order.to(self.device)
            for b0 in range(0, n, B):
                info.check_cancelled()
                idx = order[b0:b0 + B]
                set_lr(opt, info.step_lr(epoch, step))
                opt.zero_grad(set_to_none=True)
                loss = self.loss_fn(model(x[idx]), y[idx])
                loss.backward()
                add_proximal_grad(anchor, mu)
                opt.step()
                loss_sum += float(loss) * len(idx)
                seen += len(idx)
                step += 1
        local = to_wire(model)
        delta = {k: local[k] - np.asarray(weights[k], dtype=np.float32) for k in local}
        return TrainResult(delta, num_examples=n, train_loss=loss_sum / seen, steps=step, is_delta=True)

    @torch.no_grad()
    def evaluate(self, weights: Mapping[str, np.ndarray], x, y, batch_size: int = 500) -> EvalResult:
        """Loads ``weights`` and evaluates on (x, y): the mean loss (summed
        per example in double) and, for class targets, the metric
        "accuracy" (the fraction whose arg-max output is the target)."""
        load_wire(self.model, weights)
        loss, acc, n = evaluate_model(self.model, x, y, self.loss_fn, batch_size, self.device)
        return EvalResult(loss, num_examples=n, metrics={"accuracy": acc} if acc is not None else {})


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, x, y, loss_fn: Optional[Callable] = None, batch_size: int = 500,
                   device=None):
    """(mean loss, accuracy or None, examples) of ``model`` on (x, y), in
    eval mode. Loss: ``loss_fn`` with reduction "sum" over each batch, added
    in double; accuracy when ``y`` holds class indices."""
    loss_fn = loss_fn or F.cross_entropy
    device = device or next(model.parameters()).device
    model.eval()
    x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    y = y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
    n = len(x)
    total, correct = 0.0, 0
    classes = not torch.is_floating_point(y)
    for b0 in range(0, n, batch_size):
        xb, yb = x[b0:b0 + batch_size].to(device), y[b0:b0 + batch_size].to(device)
        out = model(xb)
        total += float(loss_fn(out, yb, reduction="sum"))
        if classes:
            correct += int((out.argmax(1) == yb).sum())
    return total / n, (correct / n if classes else None), n
