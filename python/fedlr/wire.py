"""fedlr.wire: fedlr's messages (proto/fedlr.proto) to and from bytes.

Every message on the wire is one ``fedlr.Envelope`` in one ZeroMQ frame.
This module encodes what a client sends (Join, Heartbeat, Update,
EvalResult) and decodes what a coordinator sends (Welcome, RoundStart,
Evaluate, Heartbeat, Stop) into plain Python values, and checks everything
that arrives against protocol version 3's limits (the coordinator's own
codec, ``common/fl_wire.c``, applies the same): one body, string lengths,
tensor names, shapes and counts, finite values, ranges (FedProx's
``prox_mu`` among them). A bad message raises :class:`WireError` saying
what was wrong.

Tensors are numpy float32 arrays. Decoding does not copy them: each is a
read-only ``np.frombuffer`` view of the packed ``data`` field inside the
received bytes (a sender that splits a tensor's data into several fields,
which protobuf allows, gets a copy). Encoding an Update writes each tensor's
bytes once, without going through protobuf's per-value containers.

The generated protobuf module is ``fedlr.fedlr_pb2`` (protoc 3.21 from
``proto/fedlr.proto``; ``python/tests/test_wire.py`` checks it is up to
date).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from google.protobuf.message import DecodeError

from . import fedlr_pb2 as pb

__all__ = [
    "PROTOCOL_VERSION",
    "MIN_PROTOCOL_VERSION",
    "WireError",
    "Welcome",
    "OptimizerConfig",
    "RoundStart",
    "Evaluate",
    "Stop",
    "Heartbeat",
    "decode",
    "encode_join",
    "encode_heartbeat",
    "encode_update",
    "encode_eval_result",
    "check_client_name",
    "check_tensor_name",
    "check_metric_name",
    "check_tensors",
    "layout_of",
]

PROTOCOL_VERSION = 4  # the highest version this package speaks (3: RoundStart.prox_mu, FedProx;
#                      4: Welcome.input_shape, a CNN's input image)
MIN_PROTOCOL_VERSION = 2  # the lowest (version 1's Welcome has no model layout)
MAX_STRING = 256  # bytes of a spec, reason, run id or tensor name on the wire
MAX_NAME = 64  # bytes of a client name (UTF-8)
MAX_TENSOR_NAME = 255  # a model's tensor names (fl_layout)
MAX_EXAMPLES = 2**32  # examples a client may declare or claim
MAX_EPOCHS = 1000
MAX_BATCH = 65536
MAX_DIMS = 8
MAX_TENSORS = 4096
MAX_VALUES = 2**28  # floats of a model
MAX_METRICS = 16
MAX_METRIC_NAME = 32
MAX_VERSIONS = 16
MAX_LOSS = 1e30  # the coordinator rejects a train_loss, evaluation loss or metric beyond
MAX_PROX_MU = 1e4  # FedProx's mu (RoundStart.prox_mu, --prox-mu)
CONTROL_MAX_MESSAGE = 2 << 20  # bytes of a message before the Welcome said the model

OPTIMIZER_KINDS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
LOCAL_UNITS = ("epoch", "step")


class WireError(ValueError):
    """A message that is not valid fedlr protocol (what was wrong is in the message)."""


Layout = Dict[str, Tuple[int, ...]]  # a model's tensors in order: name -> shape


@dataclass(frozen=True)
class Welcome:
    """The coordinator accepted the Join."""

    client_id: int
    run_id: str
    model: str  # "mlp:200,200", "softmax", or "custom" (a model from --init)
    input_dim: int  # built-in models: features per example (0 for custom)
    num_classes: int  # built-in models (0 for custom)
    heartbeat_ms: int  # send a Heartbeat at least this often
    rounds: int  # the run's round limit
    protocol_version: int  # the version of this session
    layout: Layout  # the model's tensors, in wire order
    # version 4: a built-in CNN's input image (C, H, W), NCHW; () for other
    # models and from an older coordinator
    input_shape: Tuple[int, ...] = ()


@dataclass(frozen=True)
class OptimizerConfig:
    """The optimizer a RoundStart asks for, with PyTorch semantics
    (common/fl_optim.h). Values are the float32 values sent."""

    kind: str = "sgd"  # sgd, momentum, nesterov, adagrad, rmsprop, adam
    momentum: float = 0.0  # momentum, nesterov
    beta1: float = 0.0  # adam
    beta2: float = 0.0  # adam
    eps: float = 0.0  # adagrad, rmsprop, adam
    weight_decay: float = 0.0  # L2, added to the gradient (torch.optim's weight_decay)
    alpha: float = 0.0  # rmsprop smoothing constant
    keep_state: bool = False  # False: optimizer state reset at every round start


@dataclass(frozen=True)
class RoundStart:
    """Train this round: the global model and how to train it."""

    round: int  # 1-based
    attempt: int  # 1 on the round's first attempt, 2 on its first retry, ... (0: not sent)
    lr: float  # the round's rate (a float32 value)
    local_schedule: str  # spec over local time ("" = const), see fedlr.schedules
    local_unit: str  # "epoch": t = local epoch index; "step": t = step index within the round
    optimizer: OptimizerConfig
    local_epochs: int
    batch_size: int
    seed: int  # per client, round and attempt (shuffling)
    model: str
    weights: Dict[str, np.ndarray]  # the global model, in layout order (read-only arrays)
    # v3, FedProx: add prox_mu * (w - w_global) to every local gradient
    # (a float32 value in [0, 1e4]; 0, or a version 2 session: off)
    prox_mu: float = 0.0


@dataclass(frozen=True)
class Evaluate:
    """Evaluate this global model (the one round `round` produced) on your held-out data."""

    round: int
    model: str
    weights: Dict[str, np.ndarray]


@dataclass(frozen=True)
class Stop:
    """The run is over (error False), the Join was refused (error True), or
    the coordinator does not know this client (rejoin True: Join again)."""

    reason: str
    error: bool
    rejoin: bool
    supported_versions: Tuple[int, ...]


@dataclass(frozen=True)
class Heartbeat:
    client_id: int
    round: int  # the coordinator's current round


# ---- raw protobuf scanning (for zero-copy tensors) ----


def _varint(buf: memoryview, i: int, end: int) -> Tuple[int, int]:
    v = shift = 0
    while True:
        if i >= end or shift > 63:
            raise WireError("truncated or over-long varint")
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, i
        shift += 7


def _fields(buf: memoryview, start: int, end: int):
    """(field number, wire type, value start, value end) of each field in
    buf[start:end]; for varints the value start is the value itself."""
    i = start
    while i < end:
        tag, i = _varint(buf, i, end)
        num, wt = tag >> 3, tag & 7
        if wt == 0:
            v, i = _varint(buf, i, end)
            yield num, wt, v, i
        elif wt == 1:
            yield num, wt, i, i + 8
            i += 8
        elif wt == 2:
            n, i = _varint(buf, i, end)
            yield num, wt, i, i + n
            i += n
        elif wt == 5:
            yield num, wt, i, i + 4
            i += 4
        else:
            raise WireError("unsupported protobuf wire type %d" % wt)
        if i > end:
            raise WireError("truncated field")


def _tensor_views(buf: memoryview, env_field: int, weights_field: int) -> Optional[List[Optional[Tuple[int, int]]]]:
    """Byte ranges of each tensor's packed data in an envelope whose body is
    field `env_field` and whose tensors are its repeated field
    `weights_field`: a list (None for a tensor whose data is not one packed
    field), or None if the message is not in the plain shape protobuf
    encoders write (then the caller copies from the parsed message)."""
    try:
        body = [(s, e) for num, wt, s, e in _fields(buf, 0, len(buf)) if wt == 2 and 1 <= num <= 8]
        if len(body) != 1:
            return None
        out: List[Optional[Tuple[int, int]]] = []
        for num, wt, s, e in _fields(buf, body[0][0], body[0][1]):
            if num != weights_field:
                continue
            if wt != 2:
                return None
            chunks = [(ws, we, wwt) for wnum, wwt, ws, we in _fields(buf, s, e) if wnum == 3]
            out.append((chunks[0][0], chunks[0][1]) if len(chunks) == 1 and chunks[0][2] == 2 else None)
        return out
    except WireError:
        return None  # a shape protobuf accepts but this scanner does not know: copy


# ---- checks ----


def check_client_name(name: str) -> None:
    """A client name: 1 to 64 bytes of UTF-8 text without control
    characters, line separators or bidirectional overrides (the coordinator's
    rule). Raises ValueError."""
    if not isinstance(name, str) or not name:
        raise ValueError("the client name is empty")
    b = name.encode("utf-8", "surrogatepass")
    if len(b) > MAX_NAME:
        raise ValueError("the client name %r is longer than %d bytes" % (name, MAX_NAME))
    for i, ch in enumerate(name):
        cp = ord(ch)
        why = None
        if 0xD800 <= cp <= 0xDFFF:
            why = "is not valid UTF-8"
        elif cp < 0x20 or 0x7F <= cp <= 0x9F:
            why = "has a control character"
        elif cp in (0x2028, 0x2029):
            why = "has a line separator"
        elif 0x202A <= cp <= 0x202E or 0x2066 <= cp <= 0x2069:
            why = "has a bidirectional override"
        if why:
            raise ValueError(
                "the client name %r %s at character %d (names are 1 to %d bytes of UTF-8 text)"
                % (name, why, i, MAX_NAME)
            )


def check_tensor_name(name: str) -> None:
    """A tensor name: 1 to 255 bytes of printable ASCII without space, '"'
    or '\\' (PyTorch state_dict keys such as "conv1.weight")."""
    if not isinstance(name, str) or not name:
        raise ValueError("a tensor has an empty name")
    if len(name) > MAX_TENSOR_NAME:
        raise ValueError("tensor name %r is longer than %d bytes" % (name[:40] + "...", MAX_TENSOR_NAME))
    for i, c in enumerate(name):
        if not (0x21 <= ord(c) <= 0x7E) or c in '"\\':
            raise ValueError(
                "tensor name %r has %r at byte %d (names are printable ASCII without space, "
                "'\"' or '\\\\')" % (name, c, i)
            )


def check_metric_name(name: str) -> None:
    """A metric name: 1 to 32 bytes of letters, digits, '_', '.' and '-'
    (it becomes part of a JSON key, fed_eval_NAME)."""
    if not isinstance(name, str) or not name:
        raise ValueError("a metric has no name")
    if len(name.encode()) > MAX_METRIC_NAME:
        raise ValueError("metric name %r is longer than %d bytes" % (name, MAX_METRIC_NAME))
    for i, c in enumerate(name):
        if not (c.isascii() and (c.isalnum() or c in "_.-")):
            raise ValueError(
                "metric name %r has %r at byte %d (names are letters, digits, '_', '.' and '-')"
                % (name, c, i)
            )


def _check_string(kind: str, what: str, s: str) -> str:
    if len(s.encode("utf-8")) > MAX_STRING:
        raise WireError("%s: %s is longer than %d bytes" % (kind, what, MAX_STRING))
    return s


def _shape(kind: str, idx: int, name: str, shape: Sequence[int]) -> Tuple[int, ...]:
    if len(shape) > MAX_DIMS:
        raise WireError("%s: tensor %d '%s' has %d dimensions, at most %d" % (kind, idx, name, len(shape), MAX_DIMS))
    if any(d == 0 for d in shape):
        raise WireError("%s: tensor %d '%s' has a zero dimension %s" % (kind, idx, name, list(shape)))
    return tuple(int(d) for d in shape)


def _first_nonfinite(a: np.ndarray) -> Optional[int]:
    ok = np.isfinite(a)
    if ok.all():
        return None
    return int(np.argmin(ok.reshape(-1)))


def _decode_tensors(kind: str, tensors, raw: memoryview, ranges, max_values: int) -> Dict[str, np.ndarray]:
    if len(tensors) == 0:
        raise WireError("%s: no weights" % kind)
    if len(tensors) > MAX_TENSORS:
        raise WireError("%s: %d tensors, limit is %d" % (kind, len(tensors), MAX_TENSORS))
    out: Dict[str, np.ndarray] = {}
    total = 0
    for i, t in enumerate(tensors):
        name = t.name
        if not name:
            raise WireError("%s: tensor %d has no name" % (kind, i))
        if len(name.encode()) > MAX_STRING:
            raise WireError("%s: tensor %d name is longer than %d bytes" % (kind, i, MAX_STRING))
        shape = _shape(kind, i, name, t.shape)
        count = math.prod(shape)
        n = len(t.data)
        if n != count:
            raise WireError("%s: tensor %d '%s' has %d values, shape %s needs %d" % (kind, i, name, n, list(shape), count))
        total += n
        if total > max_values:
            raise WireError("%s: tensors hold more than %d values (limit)" % (kind, max_values))
        if name in out:
            raise WireError("%s: tensor %d '%s' appears twice" % (kind, i, name))
        r = ranges[i] if ranges is not None and i < len(ranges) else None
        if r is not None and r[1] - r[0] == 4 * n:
            a = np.frombuffer(raw, dtype="<f4", count=n, offset=r[0])
        else:
            a = np.array(t.data, dtype="<f4")
            a.flags.writeable = False
        a = a.reshape(shape)
        bad = _first_nonfinite(a)
        if bad is not None:
            v = a.reshape(-1)[bad]
            raise WireError("%s: tensor %d '%s' value %d is %s" % (kind, i, name, bad, "NaN" if np.isnan(v) else "infinite"))
        out[name] = a
    return out


def _decode_layout(w) -> Layout:
    if len(w.layout) > MAX_TENSORS:
        raise WireError("welcome: %d tensors, limit is %d" % (len(w.layout), MAX_TENSORS))
    layout: Layout = {}
    total = 0
    for i, t in enumerate(w.layout):
        if not t.name:
            raise WireError("welcome: tensor %d has no name" % i)
        try:
            check_tensor_name(t.name)
        except ValueError as e:
            raise WireError("welcome: %s" % e) from None
        if len(t.data):
            raise WireError("welcome: layout tensor %d '%s' carries %d values (none allowed)" % (i, t.name, len(t.data)))
        shape = _shape("welcome", i, t.name, t.shape)
        total += math.prod(shape)
        if total > MAX_VALUES:
            raise WireError("welcome: the layout holds more than %d values (limit)" % MAX_VALUES)
        if t.name in layout:
            raise WireError("welcome: tensor %d '%s' appears twice" % (i, t.name))
        layout[t.name] = shape
    return layout


def _decode_optimizer(o) -> OptimizerConfig:
    if o.kind not in range(len(OPTIMIZER_KINDS)):
        raise WireError("round_start: unknown optimizer kind %d" % o.kind)
    vals = dict(momentum=o.momentum, beta1=o.beta1, beta2=o.beta2, eps=o.eps, weight_decay=o.weight_decay, alpha=o.alpha)
    for k, v in vals.items():
        if not math.isfinite(v):
            raise WireError("round_start: optimizer %s is not finite" % k)
    return OptimizerConfig(kind=OPTIMIZER_KINDS[o.kind], keep_state=bool(o.keep_state), **vals)


def _check_input_shape(w) -> Tuple[int, ...]:
    """A Welcome's input_shape: none, or C, H, W from 1 to 65536 whose
    product is input_dim (as common/fl_wire.c checks it)."""
    s = tuple(w.input_shape)
    if s and (len(s) != 3 or not all(1 <= v <= 65536 for v in s) or s[0] * s[1] * s[2] != w.input_dim):
        raise WireError("welcome: input_shape %s is not C, H, W from 1 to 65536 with C H W = input_dim %d"
                        % (list(s), w.input_dim))
    return s


def decode(data: Union[bytes, bytearray, memoryview], max_values: int = MAX_VALUES,
           max_message: Optional[int] = None):
    """Decodes and checks one message a coordinator sends: a
    :class:`Welcome`, :class:`RoundStart`, :class:`Evaluate`,
    :class:`Heartbeat` or :class:`Stop`. ``max_values`` bounds the floats of
    its tensors (a client passes its model's size), ``max_message`` its
    bytes. Tensors view ``data`` (keep it alive; it is, through them).
    Raises :class:`WireError`."""
    raw = memoryview(data).cast("B")
    if max_message is not None and len(raw) > max_message:
        raise WireError("message of %d bytes exceeds the limit of %d" % (len(raw), max_message))
    env = pb.Envelope()
    try:
        env.ParseFromString(raw)
    except DecodeError as e:
        raise WireError("undecodable message (%d bytes): %s" % (len(raw), e)) from None
    kind = env.WhichOneof("body")
    if kind is None:
        raise WireError("envelope: no message body set")
    if kind == "welcome":
        w = env.welcome
        return Welcome(
            client_id=w.client_id,
            run_id=_check_string("welcome", "run_id", w.run_id),
            model=_check_string("welcome", "model", w.model),
            input_dim=w.input_dim,
            num_classes=w.num_classes,
            heartbeat_ms=w.heartbeat_ms,
            rounds=w.rounds,
            protocol_version=w.protocol_version or 1,
            layout=_decode_layout(w),
            input_shape=_check_input_shape(w),
        )
    if kind == "round_start":
        r = env.round_start
        if r.round < 1:
            raise WireError("round_start: round 0 (rounds start at 1)")
        if not math.isfinite(r.lr):
            raise WireError("round_start: learning rate not finite")
        if r.lr < 0:
            raise WireError("round_start: learning rate %g is negative" % r.lr)
        if not math.isfinite(r.prox_mu):
            raise WireError("round_start: prox_mu (FedProx's mu) is %s, not a number in [0, %g]"
                            % ("NaN" if math.isnan(r.prox_mu) else "infinite", MAX_PROX_MU))
        if not 0 <= r.prox_mu <= MAX_PROX_MU:
            raise WireError("round_start: prox_mu (FedProx's mu) %g outside [0, %g]" % (r.prox_mu, MAX_PROX_MU))
        if not 1 <= r.local_epochs <= MAX_EPOCHS:
            raise WireError("round_start: local_epochs %d outside [1, %d]" % (r.local_epochs, MAX_EPOCHS))
        if not 1 <= r.batch_size <= MAX_BATCH:
            raise WireError("round_start: batch_size %d outside [1, %d]" % (r.batch_size, MAX_BATCH))
        if r.local_unit not in (0, 1):
            raise WireError("round_start: unknown local_unit %d" % r.local_unit)
        if not r.HasField("optimizer"):
            raise WireError("round_start: no optimizer settings")
        opt = _decode_optimizer(r.optimizer)
        weights = _decode_tensors("round_start", r.weights, raw, _tensor_views(raw, 3, 10), max_values)
        return RoundStart(
            round=r.round,
            attempt=r.attempt,
            lr=r.lr,
            local_schedule=_check_string("round_start", "local_schedule", r.local_schedule),
            local_unit=LOCAL_UNITS[r.local_unit],
            optimizer=opt,
            local_epochs=r.local_epochs,
            batch_size=r.batch_size,
            seed=r.seed,
            model=_check_string("round_start", "model", r.model),
            weights=weights,
            prox_mu=r.prox_mu,
        )
    if kind == "evaluate":
        ev = env.evaluate
        if ev.round < 1:
            raise WireError("evaluate: round 0 (rounds start at 1)")
        return Evaluate(
            round=ev.round,
            model=_check_string("evaluate", "model", ev.model),
            weights=_decode_tensors("evaluate", ev.weights, raw, _tensor_views(raw, 7, 3), max_values),
        )
    if kind == "heartbeat":
        return Heartbeat(client_id=env.heartbeat.client_id, round=env.heartbeat.round)
    if kind == "stop":
        st = env.stop
        if len(st.supported_versions) > MAX_VERSIONS:
            raise WireError("stop: %d supported versions, at most %d" % (len(st.supported_versions), MAX_VERSIONS))
        return Stop(
            reason=_check_string("stop", "reason", st.reason),
            error=st.error,
            rejoin=st.rejoin,
            supported_versions=tuple(st.supported_versions),
        )
    raise WireError("a message of kind %s: not one a coordinator sends" % kind)


# ---- encoding ----


def _env(**body) -> bytes:
    return pb.Envelope(**body).SerializeToString()


def encode_join(name: str, num_examples: int, num_eval_examples: int = 0, slot: Optional[int] = None,
                versions: Tuple[int, int] = (MIN_PROTOCOL_VERSION, PROTOCOL_VERSION)) -> bytes:
    """A Join: ``versions`` is (lowest, highest) spoken."""
    check_client_name(name)
    if not 1 <= num_examples <= MAX_EXAMPLES:
        raise ValueError("num_examples %d: a client declares 1 to %d" % (num_examples, MAX_EXAMPLES))
    if not 0 <= num_eval_examples <= MAX_EXAMPLES:
        raise ValueError("num_eval_examples %d: a client declares 0 to %d" % (num_eval_examples, MAX_EXAMPLES))
    j = pb.Join(protocol_version=versions[1], min_protocol_version=versions[0], name=name,
                num_examples=num_examples, num_eval_examples=num_eval_examples)
    if slot is not None:
        j.want_slot = True
        j.slot = slot
    return _env(join=j)


def encode_heartbeat(client_id: int, round: int) -> bytes:
    return _env(heartbeat=pb.Heartbeat(client_id=client_id, round=round))


def _key(num: int, wt: int) -> bytes:
    return _uvarint(num << 3 | wt)


def _uvarint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _tensor_parts(name: str, a: np.ndarray) -> List:
    """A Tensor message's bytes as parts to join: name, packed shape, and
    the array's own buffer as the packed data (no per-value work)."""
    nb = name.encode()
    parts: List = [_key(1, 2), _uvarint(len(nb)), nb]
    if a.ndim:
        shape = b"".join(_uvarint(d) for d in a.shape)
        parts += [_key(2, 2), _uvarint(len(shape)), shape]
    parts += [_key(3, 2), _uvarint(4 * a.size), memoryview(a).cast("B")]
    return parts


def _as_f32(a) -> np.ndarray:
    # np.ascontiguousarray would make a scalar 1-d.
    a = np.asarray(a, dtype="<f4")
    return a if a.flags.c_contiguous else a.copy(order="C")


def check_tensors(weights: Union[Mapping[str, "np.typing.ArrayLike"], Sequence], layout: Layout,
                  what: str = "weights") -> Dict[str, np.ndarray]:
    """``weights`` (a mapping name -> array, or a sequence of arrays in
    layout order) as float32 arrays in layout order, checked to have
    exactly the layout's names and shapes. Raises ValueError naming the
    first difference. Values are not checked here."""
    if isinstance(weights, Mapping):
        missing = [n for n in layout if n not in weights]
        extra = [n for n in weights if n not in layout]
        if missing or extra:
            raise ValueError(
                "%s do not match the model: %s%s%s" % (
                    what,
                    "missing %s" % ", ".join(missing[:5]) if missing else "",
                    "; " if missing and extra else "",
                    "not in the model: %s" % ", ".join(extra[:5]) if extra else "",
                )
            )
        items = [(n, weights[n]) for n in layout]
    else:
        seq = list(weights)
        if len(seq) != len(layout):
            raise ValueError("%s: %d arrays, the model has %d tensors (%s)" % (what, len(seq), len(layout), ", ".join(list(layout)[:5])))
        items = list(zip(layout, seq))
    out: Dict[str, np.ndarray] = {}
    for name, a in items:
        arr = _as_f32(a)
        if arr.shape != layout[name]:
            raise ValueError("%s: '%s' has shape %s, the model's is %s" % (what, name, list(arr.shape), list(layout[name])))
        out[name] = arr
    return out


def layout_of(weights: Mapping[str, "np.typing.ArrayLike"]) -> Layout:
    """The layout (name -> shape) of a mapping of arrays, names checked."""
    out: Layout = {}
    for name, a in weights.items():
        check_tensor_name(name)
        shape = tuple(int(d) for d in np.shape(a))
        if len(shape) > MAX_DIMS or 0 in shape:
            raise ValueError("tensor '%s' has shape %s: 0 to %d dimensions, none 0" % (name, list(shape), MAX_DIMS))
        out[name] = shape
    return out


def encode_update(round: int, client_id: int, num_examples: int, weights: Mapping[str, np.ndarray],
                  is_delta: bool, train_loss: float, steps: int, attempt: int) -> bytes:
    """An Update. ``weights``: name -> float32 array, in layout order (see
    :func:`check_tensors`); values are sent as they are."""
    head = pb.Update(round=round, client_id=client_id, num_examples=num_examples, is_delta=bool(is_delta),
                     train_loss=float(train_loss), steps=int(steps), attempt=attempt).SerializeToString()
    parts: List = [head]
    for name, a in weights.items():
        a = _as_f32(a)
        tparts = _tensor_parts(name, a)
        tlen = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in tparts)
        parts += [_key(5, 2), _uvarint(tlen)] + tparts
    body_len = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in parts)
    return b"".join([_key(4, 2), _uvarint(body_len)] + parts)


def encode_eval_result(round: int, client_id: int, num_examples: int, loss: float,
                       metrics: Mapping[str, float]) -> bytes:
    """An EvalResult; metric names and values checked (ValueError)."""
    if len(metrics) > MAX_METRICS:
        raise ValueError("%d metrics, at most %d" % (len(metrics), MAX_METRICS))
    ms = []
    for name, v in metrics.items():
        check_metric_name(name)
        v = float(v)
        if not (math.isfinite(v) and abs(v) <= MAX_LOSS):
            raise ValueError("metric '%s' is %r: values must be finite, |value| <= %g" % (name, v, MAX_LOSS))
        ms.append(pb.Metric(name=name, value=v))
    if not (math.isfinite(loss) and abs(loss) <= MAX_LOSS):
        raise ValueError("evaluation loss %r is not finite or beyond %g" % (loss, MAX_LOSS))
    if not 1 <= num_examples <= MAX_EXAMPLES:
        raise ValueError("evaluated %d examples: 1 to %d" % (num_examples, MAX_EXAMPLES))
    return _env(eval_result=pb.EvalResult(round=round, client_id=client_id, num_examples=num_examples,
                                          loss=float(loss), metrics=ms))
