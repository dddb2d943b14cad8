"""fedlr.client: a Python client of a fedlr coordinator (protocol version 3).

The application gives a ``train`` function (and optionally ``evaluate``);
the client does the session::

    import fedlr

    def train(weights, info):
        # weights: the global model, {name: float32 array} in the model's order
        # info: the round (info.lr, info.local_schedule, info.local_epochs, ...)
        new_weights, loss = my_training(weights, info)
        return fedlr.TrainResult(new_weights, num_examples=len(my_data), train_loss=loss)

    def evaluate(weights, info):
        loss, acc = my_eval(weights)
        return fedlr.EvalResult(loss, num_examples=len(my_test), metrics={"accuracy": acc})

    fedlr.run_client("tcp://coordinator:7070", train, evaluate,
                     num_examples=len(my_data), num_eval_examples=len(my_test))

What the session does (the same as the C client, client/fl_session.c):

- Join (protocol versions 2 to 4: this package needs the Welcome's model
  layout, which version 1 lacks; 3 adds FedProx's ``info.prox_mu``; 4 a
  built-in CNN's input image, ``welcome.input_shape``), then
  Welcome: the model's tensors are checked against the application's
  ``layout`` if given (:class:`LayoutMismatch` otherwise).
- A background I/O thread owns the ZeroMQ socket: it sends a Heartbeat every
  ``heartbeat_ms`` whether ``train`` is running or not (so a long local
  training is never taken for a death), acknowledges each RoundStart at once
  by a heartbeat carrying its round, and reads what arrives while ``train``
  runs. ``train`` and ``evaluate`` run on the thread that called
  :meth:`Client.run`.
- An Update echoes the RoundStart's round and ``attempt``. A RoundStart that
  is superseded while ``train`` runs (a retry with a new attempt, a later
  round, an Evaluate or heartbeat showing the round closed) sets
  ``info.cancelled``; a result for a cancelled round is not sent. The same
  RoundStart received again (the coordinator resends it after a rejoin) is
  answered with the update already computed, not trained again.
- An Evaluate that arrives while ``train`` runs is answered after it
  returns.
- Silence from the coordinator for max(5 heartbeats, 3 s) (2 s before a
  Welcome): a fresh socket and Join again, backing off 0.5 s doubling to
  10 s. Stop{rejoin}: Join again. Stop{error}: :class:`JoinRefused` with the
  coordinator's reason (and the versions it speaks). Stop: the run is over,
  :meth:`Client.run` returns. ``give_up`` seconds without any message:
  :class:`CoordinatorGone`.
- CurveZMQ with ``fedlr-keygen`` key files (``curve_secret`` and
  ``coordinator_key``); a refused key, a wrong coordinator key or a
  plaintext/CURVE mismatch: :class:`AuthenticationError`.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import queue
import socket as _socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import zmq
import zmq.utils.monitor

from . import keys as _keys
from . import schedules as _schedules
from . import wire

__all__ = [
    "Client",
    "run_client",
    "RoundInfo",
    "EvalInfo",
    "TrainResult",
    "EvalResult",
    "RunResult",
    "FedlrError",
    "JoinRefused",
    "AuthenticationError",
    "CoordinatorGone",
    "LayoutMismatch",
    "RoundCancelled",
]

log = logging.getLogger("fedlr.client")

# Timing, as client/fl_session.c.
WELCOME_WAIT = 2.0  # s of silence before re-Joining while not joined
MIN_SILENCE = 3.0  # s, floor of 5 heartbeats once joined
BACKOFF_MIN = 0.5  # s between re-Joins, doubling ...
BACKOFF_MAX = 10.0  # ... up to this
RETRY = 0.1  # s between tries of a Join or update that could not be queued
POLL_MAX = 1.0  # s, longest sleep of the I/O thread
HS_FAILURES = 3  # CURVE handshakes failing in a row before giving up
LAST_LOOK = 0.1  # s to wait for messages before calling the coordinator silent
# The largest message a client accepts: a model of 2^28 floats and framing.
MAX_MESSAGE = 4 * wire.MAX_VALUES + (64 << 20)


class FedlrError(Exception):
    """Base of the errors that end a fedlr client's session."""


class JoinRefused(FedlrError):
    """The coordinator refused this client (Stop{error}): ``reason`` is
    its reason, ``supported_versions`` the protocol versions it accepts in
    this run (listed when it refused the version: all it speaks, or 3 and
    later in a FedProx run)."""

    def __init__(self, reason: str, supported_versions: Tuple[int, ...] = (),
                 spoken: Tuple[int, int] = (wire.MIN_PROTOCOL_VERSION, wire.PROTOCOL_VERSION)):
        self.reason = reason
        self.supported_versions = tuple(supported_versions)
        msg = "refused by the coordinator: %s" % reason
        if self.supported_versions:
            msg += " (the coordinator accepts versions %s here; this client speaks %s)" % (
                ", ".join(map(str, self.supported_versions)), ", ".join(map(str, range(spoken[0], spoken[1] + 1))))
        super().__init__(msg)


class AuthenticationError(FedlrError):
    """The CurveZMQ handshake was refused or kept failing."""


class CoordinatorGone(FedlrError):
    """Nothing arrived from the coordinator for ``give_up`` seconds."""


class LayoutMismatch(FedlrError):
    """The coordinator's model is not the application's (names or shapes)."""


class RoundCancelled(FedlrError):
    """Raised inside ``train`` (by :meth:`RoundInfo.check_cancelled` or the
    PyTorch helper) when the round no longer needs this client's update; the
    client catches it and sends nothing."""


@dataclass
class RoundInfo:
    """What a RoundStart asks of ``train``, with the helpers to follow it
    exactly as fedlr's built-in trainer does (client/fl_trainer.c): local
    epochs ``local_epochs`` of minibatches of ``batch_size`` (the last batch
    of an epoch may be smaller), a fresh shuffle each epoch (from ``seed``),
    and the rate of each step from :meth:`step_lr`; with ``prox_mu`` > 0
    (FedProx), ``prox_mu * (w - w_global)`` added to every gradient before
    the optimizer's step (``fedlr.torch`` does all of it)."""

    round: int
    attempt: int  # 1 on the round's first attempt, 2 on its first retry (0: not sent)
    lr: float  # the round's rate (float32 value), from the coordinator's round schedule
    local_schedule: str  # spec over local time ("" = const)
    local_unit: str  # "epoch" or "step": what the local schedule's t counts
    schedule: _schedules.Schedule  # local_schedule, parsed
    optimizer: wire.OptimizerConfig
    local_epochs: int
    batch_size: int
    seed: int
    model: str
    client_id: int
    num_examples: int  # the examples this client declared in its Join
    # FedProx (Li et al. 2020; protocol version 3): train on loss(w) +
    # prox_mu/2 ||w - w_global||^2, i.e. add prox_mu * (w - w_global) to
    # every local gradient; report train_loss without the term. A float32
    # value in [0, 1e4]; 0 = off (also in a version 2 session).
    prox_mu: float = 0.0
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def local_lr(self, t: int) -> float:
        """The local schedule's rate at local time ``t``, in double
        precision: ``schedule.lr(lr, t)``."""
        return self.schedule.lr(self.lr, t)

    def step_lr(self, epoch: int, step: int) -> float:
        """The rate to apply at local ``step`` (0-based, counted across the
        whole round) of local ``epoch`` (0-based): the local schedule at
        t = epoch (local_unit "epoch") or t = step ("step"), computed in
        double and rounded to float32, as the C trainer applies it."""
        t = step if self.local_unit == "step" else epoch
        return float(np.float32(self.schedule.lr(self.lr, t)))

    @property
    def cancelled(self) -> bool:
        """True once this round no longer needs the update (superseded,
        closed, or the client is stopping)."""
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Raises :class:`RoundCancelled` if :attr:`cancelled`: call it
        between steps to stop a training that no longer counts."""
        if self._cancel.is_set():
            raise RoundCancelled("round %d (attempt %d) was cancelled" % (self.round, self.attempt))


@dataclass
class EvalInfo:
    """What an Evaluate asks: the global model after round ``round``."""

    round: int
    model: str
    client_id: int
    num_eval_examples: int  # declared in the Join


@dataclass
class TrainResult:
    """What ``train`` returns: the local model after training (or, with
    ``is_delta``, local minus global), the examples trained on (default:
    the Join's ``num_examples``), the mean training loss over the round's
    steps (example-weighted) and the number of steps. ``train`` may also
    return a tuple ``(weights, num_examples)`` or ``(weights, num_examples,
    train_loss)``. ``weights`` is a mapping name -> array or a sequence in
    the model's order."""

    weights: Union[Mapping[str, np.ndarray], Sequence[np.ndarray]]
    num_examples: Optional[int] = None
    train_loss: float = 0.0
    steps: int = 0
    is_delta: bool = False


@dataclass
class EvalResult:
    """What ``evaluate`` returns: the mean loss over the held-out examples,
    their number (default: the Join's ``num_eval_examples``) and named
    scalar metrics (means over the same examples; "accuracy" in [0, 1] is
    the conventional name). ``evaluate`` may also return a tuple ``(loss,
    num_examples)`` or ``(loss, num_examples, metrics)``, as Flower's
    ``evaluate`` does."""

    loss: float
    num_examples: Optional[int] = None
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass
class RunResult:
    """How :meth:`Client.run` ended normally."""

    reason: str  # the coordinator's Stop reason, or "stopped by the application"
    client_id: Optional[int]
    run_id: Optional[str]
    rounds_trained: int  # updates sent
    evaluations: int  # evaluation results sent


def _default_name(curve_secret: Optional[str], slot: Optional[int]) -> str:
    if curve_secret:
        base = os.path.basename(curve_secret)
        for suffix in (".key_secret", ".key"):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
                break
        if base:
            return base
    host = _socket.gethostname() or "client"
    return "%s-p%d" % (host, slot) if slot is not None else "%s-%d" % (host, os.getpid())


def _model_limits(layout: wire.Layout) -> Tuple[int, int]:
    """(values, bytes) a message of this model may hold, as fl_wire_limits_for_model."""
    values = sum(math.prod(s) for s in layout.values())
    return values, 4 * values + (64 << 10) + 512 * len(layout)


class _Session(threading.Thread):
    """The I/O thread: owns the ZeroMQ sockets; talks to the application's
    thread through `events` (out) and an inproc PAIR socket (in)."""

    def __init__(self, c: "Client", ctx: zmq.Context, pipe_ep: str):
        super().__init__(name="fedlr-io[%s]" % c.name, daemon=True)
        self.c = c
        self.ctx = ctx
        self.events: "queue.Queue" = c._events
        self.pipe = ctx.socket(zmq.PAIR)
        self.pipe.linger = 0
        self.pipe.bind(pipe_ep)
        self.sock = None
        self.mon = None
        self.mon_seq = itertools.count()
        self.hs_fails = 0
        self.joined = False
        self.welcome: Optional[wire.Welcome] = None
        self.client_id: Optional[int] = None
        self.heartbeat = 1.0
        self.round = 0  # last round seen (heartbeats carry it)
        self.max_values, self.max_message = 0, wire.CONTROL_MAX_MESSAGE
        now = time.monotonic()
        self.last_recv = self.last_heartbeat = self.last_join_sent = self.next_join = now
        self.backoff = BACKOFF_MIN
        self.rejoins = 0
        self.join_pending = True
        self.outbox: Optional[Tuple[int, int, int, bytes]] = None  # (round, attempt, client_id, update)
        self.sent: Optional[Tuple[int, int, bytes]] = None  # last update sent: (round, attempt, bytes)
        self.active: Dict[Tuple[int, int], RoundInfo] = {}  # rounds queued or training
        self.hb_dropped = False
        self.ended = False
        self.ended_normally = False

    # ---- sockets ----

    def open_socket(self) -> None:
        c = self.c
        s = self.ctx.socket(zmq.DEALER)
        s.linger = 1000
        s.setsockopt(zmq.RECONNECT_IVL, 100)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 5000)
        # Transport heartbeats drop a half-open connection, so the
        # transport reconnects instead of writing into a dead TCP stream.
        s.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
        s.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        if c.handshake_timeout > 0:
            s.setsockopt(zmq.HANDSHAKE_IVL, int(c.handshake_timeout * 1000))
        if c._curve:
            s.curve_serverkey = c._curve[2].encode()
            s.curve_publickey = c._curve[0].encode()
            s.curve_secretkey = c._curve[1].encode()
        # The monitor first, so that no handshake event of this socket is missed.
        ep = "inproc://fedlr-py-monitor-%d-%d" % (id(self), next(self.mon_seq))
        s.monitor(ep, zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                  | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        mon = self.ctx.socket(zmq.PAIR)
        mon.linger = 0
        mon.connect(ep)
        # ZMQ_IMMEDIATE stays 0: the pipe survives reconnects, so a message
        # the coordinator sent just before it went (the final Stop) is still
        # read after the connection drops.
        s.connect(c.connect)
        self.sock, self.mon = s, mon

    def close_socket(self, linger: int) -> None:
        if self.mon is not None:
            self.mon.close(0)
            self.mon = None
        if self.sock is not None:
            try:
                self.sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self.sock.close(linger)
            self.sock = None

    def send(self, data: bytes) -> bool:
        """True if queued; False if the send queue is full (retry or drop)."""
        if self.sock is None:
            return False
        try:
            self.sock.send(data, zmq.DONTWAIT, copy=len(data) < 65536)
            return True
        except zmq.Again:
            return False
        except zmq.ZMQError as e:
            log.warning("send failed: %s", e)
            return False

    # ---- application side ----

    def end(self, kind: str, payload) -> None:
        self.ended = True
        self.ended_normally = kind == "done"
        self.events.put((kind, payload))

    def cancel(self, pred, why: str) -> None:
        for key, info in list(self.active.items()):
            if pred(key) and not info.cancelled:
                info._cancel.set()
                log.info("round %d (attempt %d): cancelled: %s", key[0], key[1], why)
                del self.active[key]

    def on_pipe(self) -> None:
        while True:
            try:
                frames = self.pipe.recv_multipart(zmq.DONTWAIT, copy=False)
            except zmq.Again:
                return
            kind = frames[0].bytes
            if kind == b"quit":
                self.ended = True
                return
            if kind == b"done":  # a round finished without an update: forget it
                r, a = struct.unpack("<II", frames[1].bytes)
                self.active.pop((r, a), None)
            elif kind == b"update":
                r, a, cid = struct.unpack("<III", frames[1].bytes)
                self.active.pop((r, a), None)
                self.outbox = (r, a, cid, frames[2].buffer)
                self.flush(time.monotonic())
            elif kind == b"eval":
                if not self.send(frames[1].buffer):
                    log.warning("send queue full: an evaluation result was dropped")

    # ---- what arrives ----

    def on_message(self, data, now: float) -> None:
        try:
            m = wire.decode(data, max_values=self.max_values or wire.MAX_VALUES, max_message=self.max_message)
        except wire.WireError as e:
            if not self.joined and "exceeds the limit" in str(e):
                log.warning("ignoring a %d-byte message before any Welcome (a round start?): %s", len(data), e)
            else:
                log.warning("ignoring an invalid %d-byte message: %s", len(data), e)
            return
        if isinstance(m, wire.Welcome):
            self.on_welcome(m)
        elif isinstance(m, wire.RoundStart):
            self.on_round_start(m, now)
        elif isinstance(m, wire.Evaluate):
            self.on_evaluate(m)
        elif isinstance(m, wire.Heartbeat):
            # The coordinator's round moved past a round still being
            # trained: that round closed, its update would be stale.
            self.cancel(lambda k: k[0] < m.round, "the coordinator is in round %d" % m.round)
        elif isinstance(m, wire.Stop):
            self.on_stop(m, now)

    def on_welcome(self, w: wire.Welcome) -> None:
        c = self.c
        lo, hi = c.PROTOCOL_VERSIONS
        if not lo <= w.protocol_version <= hi:
            self.end("error", FedlrError(
                "the coordinator chose protocol version %d; this client speaks %d to %d" % (w.protocol_version, lo, hi)))
            return
        if not w.layout:
            self.end("error", FedlrError("the coordinator's Welcome lists no model tensors"))
            return
        if c.layout is not None and list(c.layout.items()) != list(w.layout.items()):
            self.end("error", LayoutMismatch(_layout_diff(w.model, w.layout, c.layout)))
            return
        if self.outbox is not None and self.outbox[2] != w.client_id:
            self.drop_update("this client is client %d now" % w.client_id)
        self.welcome = w
        self.client_id = w.client_id
        self.max_values, self.max_message = _model_limits(w.layout)
        self.heartbeat = w.heartbeat_ms / 1000.0 if w.heartbeat_ms else 1.0
        self.joined = True
        c._welcome = w
        # At once: the coordinator samples a client only after it has heard
        # from it on this connection after the Join.
        self.send_heartbeat(time.monotonic())
        log.info("joined run %s as client %d: model %s (%d parameters in %d tensors), %d rounds, heartbeat %d ms",
                 w.run_id or "(unnamed)", w.client_id, w.model, self.max_values, len(w.layout), w.rounds, w.heartbeat_ms)
        if 0 < c.give_up < self.silence_limit():
            log.warning("give_up %g s is shorter than this run's rejoin window (%g s): this client may give up on a "
                        "coordinator that is only slow to answer", c.give_up, self.silence_limit())

    def on_round_start(self, rs: wire.RoundStart, now: float) -> None:
        if not self.joined:
            log.info("ignoring round %d: no Welcome yet", rs.round)
            return
        self.round = rs.round
        # Acknowledge at once: the coordinator paces its RoundStarts by these.
        self.send_heartbeat(now)
        key = (rs.round, rs.attempt)
        if self.sent is not None and self.sent[:2] == key:
            log.info("round %d (attempt %d) again: sending the update already computed", *key)
            self.outbox = (rs.round, rs.attempt, self.client_id, self.sent[2])
            self.flush(now)
            return
        if key in self.active:
            return  # already queued or training
        self.cancel(lambda k: k != key, "round %d (attempt %d) started" % key)
        self.drop_update("a new round started")
        self.sent = None
        info = RoundInfo(
            round=rs.round, attempt=rs.attempt, lr=rs.lr, local_schedule=rs.local_schedule,
            local_unit=rs.local_unit, schedule=_schedules.Schedule(), optimizer=rs.optimizer,
            local_epochs=rs.local_epochs, batch_size=rs.batch_size, seed=rs.seed, model=rs.model,
            client_id=self.client_id, num_examples=self.c.num_examples, prox_mu=rs.prox_mu)
        self.active[key] = info
        self.events.put(("round", (info, rs, self.welcome)))

    def on_evaluate(self, ev: wire.Evaluate) -> None:
        if not self.joined:
            return
        # Round ev.round closed: training it (or an earlier one) is moot.
        self.cancel(lambda k: k[0] <= ev.round, "round %d closed" % ev.round)
        self.events.put(("evaluate", (ev, self.welcome)))

    def on_stop(self, st: wire.Stop, now: float) -> None:
        why = st.reason or "no reason given"
        if st.rejoin:
            # Every message sent before our Join reaches a restarted
            # coordinator earns one of these: answer the first only.
            if self.join_pending or (not self.joined and now - self.last_join_sent < BACKOFF_MIN):
                return
            log.info("the coordinator does not know this client (%s): joining again", why)
            self.joined = False
            self.join_pending = True
            self.drop_update("the coordinator restarted")
            return
        self.cancel(lambda k: True, "the run ended")
        if st.error:
            self.end("error", JoinRefused(why, st.supported_versions, self.c.PROTOCOL_VERSIONS))
        else:
            log.info("the run is over: %s", why)
            self.end("done", why)

    # ---- sending ----

    def send_heartbeat(self, now: float) -> None:
        self.last_heartbeat = now
        if self.send(wire.encode_heartbeat(self.client_id or 0, self.round)):
            self.hb_dropped = False
        elif not self.hb_dropped:
            log.warning("send queue full: dropping heartbeats until it drains")
            self.hb_dropped = True

    def drop_update(self, why: str) -> None:
        if self.outbox is not None:
            log.info("round %d: dropping the unsent update (%s)", self.outbox[0], why)
            self.outbox = None

    def flush(self, now: float) -> None:
        """Sends what waits, the Join first: an update must not overtake it."""
        c = self.c
        if self.join_pending:
            if not self.send(c._join):
                return
            self.join_pending = False
            self.last_join_sent = now
        if self.outbox is not None and self.joined:
            r, a, cid, data = self.outbox
            if cid != self.client_id:
                self.drop_update("sent for client %d, this client is %d now" % (cid, self.client_id))
            elif self.send(data):
                self.sent = (r, a, data)
                self.outbox = None

    # ---- liveness ----

    def silence_limit(self) -> float:
        return max(5 * self.heartbeat, MIN_SILENCE) if self.joined else WELCOME_WAIT

    def rejoin_due(self) -> float:
        return self.last_recv + self.silence_limit() if self.rejoins == 0 else self.next_join

    def silence_due(self, now: float) -> bool:
        g = self.c.give_up
        return (g > 0 and now - self.last_recv >= g) or now >= self.rejoin_due()

    def check_liveness(self, now: float) -> None:
        if not self.silence_due(now):
            return
        # Read what has come before calling the coordinator silent: a stall
        # of this process may have left its messages (the final Stop among
        # them) waiting here, which a fresh socket would drop.
        if self.sock is not None and self.sock.poll(int(LAST_LOOK * 1000), zmq.POLLIN):
            self.drain()
            if self.ended:
                return
            now = time.monotonic()
            if not self.silence_due(now):
                return
        g = self.c.give_up
        if g > 0 and now - self.last_recv >= g:
            self.end("error", CoordinatorGone(
                "no message from the coordinator at %s for %.0f s (give_up %g): giving up" % (self.c.connect, now - self.last_recv, g)))
            return
        if now < self.rejoin_due():
            return
        self.rejoins += 1
        if self.backoff < BACKOFF_MAX or self.rejoins % 6 == 0:
            log.warning("no message from the coordinator at %s for %.0f s; joining again (attempt %d, next in %g s)",
                        self.c.connect, now - self.last_recv, self.rejoins, self.backoff)
        # A fresh socket (the Lazy Pirate pattern): what queued for the
        # silent coordinator is dropped, the connection starts anew.
        self.close_socket(0)
        try:
            self.open_socket()
        except zmq.ZMQError as e:
            log.warning("cannot reopen the socket: %s", e)
            self.close_socket(0)
        self.drop_update("the coordinator went silent")
        self.joined = False
        self.join_pending = True
        self.next_join = now + self.backoff
        self.backoff = min(2 * self.backoff, BACKOFF_MAX)

    # ---- the handshake watch ----

    def on_monitor(self) -> None:
        while self.mon is not None and not self.ended:
            try:
                ev = zmq.utils.monitor.recv_monitor_message(self.mon, zmq.DONTWAIT)
            except zmq.Again:
                return
            e, v = ev["event"], ev["value"]
            curve = bool(self.c._curve)
            ep = self.c.connect
            if e == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.hs_fails = 0
                continue
            if e == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                if v == 400:
                    self.end("error", AuthenticationError(
                        "the coordinator at %s refused this client's key (ZAP status 400): its public key is not in "
                        "the coordinator's --allow-clients" % ep))
                    return
                log.warning("the coordinator at %s could not check this client's key (ZAP status %d)", ep, v)
            elif e == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                if v == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                    self.end("error", AuthenticationError(
                        "the coordinator at %s does not use CurveZMQ (it runs without --curve-secret): refusing to "
                        "talk to it in plaintext" % ep if curve else
                        "the coordinator at %s requires CurveZMQ: give this client curve_secret and "
                        "coordinator_key" % ep))
                    return
                log.warning("handshake with %s failed: ZMTP protocol error 0x%08x", ep, v)
            elif e == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                if curve:
                    log.warning("CURVE handshake with %s failed (%s)", ep, zmq.strerror(v))
            else:
                continue
            if curve:
                self.hs_fails += 1
                if self.hs_fails >= HS_FAILURES:
                    self.end("error", AuthenticationError(
                        "the CURVE handshake with the coordinator at %s failed %d times in a row: coordinator_key is "
                        "probably not the coordinator's public key" % (ep, self.hs_fails)))
                    return

    # ---- the loop ----

    def drain(self) -> None:
        for _ in range(256):  # timers still run under a flood
            if self.ended or self.sock is None:
                return
            try:
                frame = self.sock.recv(zmq.DONTWAIT, copy=False)
            except zmq.Again:
                return
            now = time.monotonic()
            self.last_recv = now
            self.rejoins = 0
            self.backoff = BACKOFF_MIN
            if frame.more:
                n = 1
                while self.sock.getsockopt(zmq.RCVMORE):
                    self.sock.recv(zmq.DONTWAIT, copy=False)
                    n += 1
                log.warning("ignoring a %d-frame message: fedlr messages are a single frame", n)
                continue
            self.on_message(frame.buffer, now)

    def run(self) -> None:
        try:
            self.open_socket()
            self.loop()
        except Exception as e:  # noqa: BLE001 - handed to the application's thread
            self.events.put(("error", e))
        finally:
            # Linger only after a normal end, for what is still queued;
            # after a failure nothing queued is worth waiting for.
            self.close_socket(1000 if self.ended_normally else 0)
            self.pipe.close(0)

    def loop(self) -> None:
        log.info("connecting to %s with %d examples%s", self.c.connect, self.c.num_examples,
                 " (%d held out for evaluation)" % self.c.num_eval_examples if self.c.num_eval_examples else "")
        self.last_recv = time.monotonic()
        while not self.ended:
            now = time.monotonic()
            self.check_liveness(now)
            if self.ended:
                break
            self.flush(now)
            if self.joined and now - self.last_heartbeat >= self.heartbeat:
                self.send_heartbeat(now)
            wake = min(self.rejoin_due(), now + POLL_MAX)
            if self.c.give_up > 0:
                wake = min(wake, self.last_recv + self.c.give_up)
            if self.joined:
                wake = min(wake, self.last_heartbeat + self.heartbeat)
            if self.join_pending or (self.outbox is not None and self.joined):
                wake = min(wake, now + RETRY)
            poller = zmq.Poller()
            for s in (self.sock, self.mon, self.pipe):
                if s is not None:
                    poller.register(s, zmq.POLLIN)
            ready = dict(poller.poll(max(0, math.ceil((wake - now) * 1000))))
            if self.pipe in ready:
                self.on_pipe()
            if self.mon is not None and self.mon in ready:
                self.on_monitor()
            if not self.ended and self.sock is not None and self.sock in ready:
                self.drain()


def _layout_diff(model: str, theirs: wire.Layout, ours: wire.Layout) -> str:
    def fmt(s):
        return "[" + ",".join(map(str, s)) + "]"

    for i, ((n1, s1), (n2, s2)) in enumerate(zip(theirs.items(), ours.items())):
        if n1 != n2 or s1 != s2:
            return ("the coordinator's model '%s' does not match this client's: tensor %d is '%s' %s there, '%s' %s here"
                    % (model, i, n1, fmt(s1), n2, fmt(s2)))
    return ("the coordinator's model '%s' has %d tensors, this client's %d (%s)"
            % (model, len(theirs), len(ours), ", ".join(list(theirs if len(theirs) > len(ours) else ours)[min(len(theirs), len(ours)):][:3])))


class Client:
    """A fedlr client: :meth:`run` joins the coordinator at ``connect`` and
    trains every round it is sampled for, until the run ends.

    Parameters:
      connect: the coordinator's endpoint, "tcp://HOST:PORT" or "ipc://PATH".
      train: ``train(weights, info) -> TrainResult`` (see the module doc).
      evaluate: ``evaluate(weights, info) -> EvalResult``, or None; needs
        ``num_eval_examples`` > 0.
      name: the Join name (1..64 bytes of UTF-8 text); default the CURVE key
        file's stem, else "HOST-pSLOT" or "HOST-PID".
      num_examples: the training examples this client has (1 .. 2^32); an
        update may claim at most this many.
      num_eval_examples: held-out examples it evaluates on (0: none).
      slot: ask for this client id (e.g. the partition index), or None.
      layout: the application's model, {name: shape} in order (e.g.
        ``fedlr.torch.layout(model)``), checked against the coordinator's;
        None: take the coordinator's.
      curve_secret, coordinator_key: CurveZMQ: this client's
        ``.key_secret`` file and the coordinator's public key (a ``.key``
        file or 40 Z85 characters).
      give_up: seconds without any message from the coordinator before
        :class:`CoordinatorGone` (0 = never).
      handshake_timeout: seconds for a connection's handshake (0: libzmq's).
    """

    PROTOCOL_VERSIONS = (wire.MIN_PROTOCOL_VERSION, wire.PROTOCOL_VERSION)  # (lowest, highest) spoken

    def __init__(self, connect: str, train: Callable, evaluate: Optional[Callable] = None, *,
                 name: Optional[str] = None, num_examples: int, num_eval_examples: int = 0,
                 slot: Optional[int] = None, layout: Optional[Mapping[str, Sequence[int]]] = None,
                 curve_secret: Optional[str] = None, coordinator_key: Optional[str] = None,
                 give_up: float = 300.0, handshake_timeout: float = 5.0):
        if not isinstance(connect, str) or not connect.startswith(("tcp://", "ipc://")):
            raise ValueError("connect %r: give tcp://HOST:PORT or ipc://PATH" % (connect,))
        if len(connect) >= 256:
            raise ValueError("connect: endpoint longer than 255 bytes")
        if not callable(train):
            raise TypeError("train must be callable: train(weights, info) -> TrainResult")
        if evaluate is not None and not callable(evaluate):
            raise TypeError("evaluate must be callable or None")
        if evaluate is not None and num_eval_examples <= 0:
            raise ValueError("evaluate needs num_eval_examples > 0 (the held-out examples it evaluates on)")
        if not (isinstance(give_up, (int, float)) and give_up >= 0 and math.isfinite(give_up)):
            raise ValueError("give_up %r: a finite number of seconds >= 0 (0 = never)" % (give_up,))
        if slot is not None and not 0 <= slot < 2**32:
            raise ValueError("slot %r: a client id 0 .. 2^32-1" % (slot,))
        if (curve_secret is None) != (coordinator_key is None):
            raise ValueError("CurveZMQ needs both curve_secret (this client's .key_secret file) and coordinator_key")
        self.connect = connect
        self.train_fn = train
        self.evaluate_fn = evaluate
        self.name = name if name is not None else _default_name(curve_secret, slot)
        self.num_examples = int(num_examples)
        self.num_eval_examples = int(num_eval_examples)
        self.slot = slot
        self.give_up = float(give_up)
        self.handshake_timeout = float(handshake_timeout)
        self.layout = None
        if layout is not None:
            self.layout = {n: tuple(int(d) for d in s) for n, s in layout.items()}
            for n in self.layout:
                wire.check_tensor_name(n)
        # Checks name and example counts (ValueError) once, here.
        lo, hi = self.PROTOCOL_VERSIONS
        self._join = wire.encode_join(self.name, self.num_examples, self.num_eval_examples, slot, (lo, hi))
        self._curve: Optional[Tuple[str, str, str]] = None
        if curve_secret is not None:
            if not zmq.has("curve"):
                raise FedlrError("this libzmq was built without CURVE (libsodium)")
            pub, sec = _keys.load_secret(curve_secret)
            self._curve = (pub, sec, _keys.load_public(coordinator_key))
        self._events: "queue.Queue" = queue.Queue()
        self._stop = threading.Event()
        self._welcome: Optional[wire.Welcome] = None
        self._current: Optional[RoundInfo] = None
        _ensure_log_handler(self.name)

    # ---- the application's thread ----

    def stop(self) -> None:
        """Ends :meth:`run` (from another thread or a signal handler): the
        round being trained is cancelled, nothing more is sent."""
        self._stop.set()
        cur = self._current
        if cur is not None:
            cur._cancel.set()
        self._events.put(("stop", None))

    def run(self) -> RunResult:
        """Runs the session until the coordinator ends the run (returns a
        :class:`RunResult`) or it fails (raises a :class:`FedlrError`);
        exceptions from ``train`` and ``evaluate`` propagate (the session
        is closed first)."""
        ctx = zmq.Context()
        pipe_ep = "inproc://fedlr-py-pipe-%d" % id(self)
        io = _Session(self, ctx, pipe_ep)
        pipe = ctx.socket(zmq.PAIR)
        pipe.linger = 0
        # A PAIR whose peer is gone blocks a send for ever: the I/O thread can
        # end (the run is over) between a check that it lives and a send.
        pipe.sndtimeo = 10000
        pipe.connect(pipe_ep)
        rounds = evals = 0
        reason = None
        clean = False
        io.start()
        try:
            while True:
                try:
                    kind, payload = self._events.get(timeout=1.0)
                except queue.Empty:
                    if not io.is_alive():
                        raise FedlrError("the client's I/O thread ended unexpectedly")
                    continue
                if kind == "round":
                    info, rs, welcome = payload
                    if info.cancelled or self._stop.is_set():
                        pipe.send_multipart([b"done", struct.pack("<II", info.round, info.attempt)])
                        continue
                    out = self._train(info, rs, welcome)
                    if out is None:
                        pipe.send_multipart([b"done", struct.pack("<II", info.round, info.attempt)])
                    else:
                        pipe.send_multipart([b"update", struct.pack("<III", info.round, info.attempt, info.client_id), out],
                                            copy=False)
                        rounds += 1
                elif kind == "evaluate":
                    ev, welcome = payload
                    out = self._evaluate(ev, welcome)
                    if out is not None:
                        pipe.send_multipart([b"eval", out], copy=False)
                        evals += 1
                elif kind == "done":
                    reason, clean = payload, True
                    break
                elif kind == "stop":
                    reason = "stopped by the application"
                    break
                elif kind == "error":
                    raise payload
        finally:
            if io.is_alive():
                try:
                    pipe.send(b"quit", zmq.NOBLOCK)  # it may have ended since
                except zmq.ZMQError:
                    pass
                io.join(timeout=5.0)
            pipe.close(0)
            if io.is_alive():
                log.warning("the I/O thread did not end: leaving its sockets open")
            else:
                ctx.term()
        w = self._welcome
        log.info("%s (%d updates, %d evaluations sent)", "done" if clean else reason, rounds, evals)
        return RunResult(reason=reason, client_id=w.client_id if w else None, run_id=w.run_id if w else None,
                         rounds_trained=rounds, evaluations=evals)

    def _train(self, info: RoundInfo, rs: wire.RoundStart, welcome: wire.Welcome) -> Optional[bytes]:
        """Runs train() for one RoundStart: the encoded Update, or None."""
        r = info.round
        if rs.model != welcome.model:
            log.warning("round %d: no update sent: the round is for model '%s', this session's is '%s'", r, rs.model, welcome.model)
            return None
        if list(rs.weights) != list(welcome.layout) or any(rs.weights[n].shape != s for n, s in welcome.layout.items()):
            log.warning("round %d: no update sent: its tensors are not the Welcome's layout", r)
            return None
        try:
            info.schedule = _schedules.parse_local(rs.local_schedule)
        except _schedules.ScheduleError as e:
            log.warning("round %d: no update sent: %s", r, e)
            return None
        t0 = time.monotonic()
        self._current = info
        try:
            res = self.train_fn(rs.weights, info)
        except RoundCancelled:
            log.info("round %d (attempt %d): training stopped: the round was cancelled", r, info.attempt)
            return None
        finally:
            self._current = None
        if info.cancelled:
            log.info("round %d (attempt %d): trained, but the round was cancelled meanwhile: no update sent", r, info.attempt)
            return None
        res = _as_train_result(res, r)
        n = self.num_examples if res.num_examples is None else int(res.num_examples)
        if not 1 <= n <= self.num_examples:
            raise ValueError("round %d: train() says it trained on %d examples; this client declared %d in its Join, "
                             "and an update may claim 1 to that many" % (r, n, self.num_examples))
        loss = float(res.train_loss)
        weights = wire.check_tensors(res.weights, welcome.layout, "round %d: train()'s weights" % r)
        for name, a in weights.items():
            if not np.isfinite(a).all():
                log.warning("round %d: no update sent: train() returned a non-finite value in '%s' (local training "
                            "diverged? lower the rate)", r, name)
                return None
        if not (math.isfinite(loss) and abs(loss) <= wire.MAX_LOSS):
            log.warning("round %d: no update sent: train_loss %r is not a finite number within +-%g", r, loss, wire.MAX_LOSS)
            return None
        if res.steps < 0:
            raise ValueError("round %d: train() says it took %d steps" % (r, res.steps))
        out = wire.encode_update(r, info.client_id, n, weights, res.is_delta, loss, res.steps, info.attempt)
        log.info("round %d%s trained in %.2f s (loss %.4f, %d steps, %d examples)", r,
                 " (attempt %d)" % info.attempt if info.attempt > 1 else "", time.monotonic() - t0, loss, res.steps, n)
        return out

    def _evaluate(self, ev: wire.Evaluate, welcome: wire.Welcome) -> Optional[bytes]:
        if self.evaluate_fn is None:
            log.info("round %d: ignoring an Evaluate: this client has no evaluate function", ev.round)
            return None
        if ev.model != welcome.model or list(ev.weights) != list(welcome.layout):
            log.warning("round %d: no evaluation sent: the model is not this session's", ev.round)
            return None
        info = EvalInfo(round=ev.round, model=ev.model, client_id=welcome.client_id,
                        num_eval_examples=self.num_eval_examples)
        res = _as_eval_result(self.evaluate_fn(ev.weights, info), ev.round)
        n = self.num_eval_examples if res.num_examples is None else int(res.num_examples)
        if not 1 <= n <= self.num_eval_examples:
            raise ValueError("round %d: evaluate() says it evaluated %d examples; this client declared %d held out "
                             "(num_eval_examples), a result may claim 1 to that many" % (ev.round, n, self.num_eval_examples))
        try:
            out = wire.encode_eval_result(ev.round, welcome.client_id, n, float(res.loss), dict(res.metrics))
        except ValueError as e:
            raise ValueError("round %d: evaluate()'s result: %s" % (ev.round, e)) from None
        log.info("round %d evaluated: loss %.4f%s on %d examples", ev.round, res.loss,
                 "".join(", %s %.4f" % kv for kv in dict(res.metrics).items()), n)
        return out


def _as_train_result(res, r: int) -> TrainResult:
    if isinstance(res, TrainResult):
        return res
    if isinstance(res, tuple) and len(res) in (2, 3):
        return TrainResult(res[0], res[1], *(res[2:]))
    raise TypeError("round %d: train() returned %s; return a fedlr.TrainResult or (weights, num_examples[, train_loss])"
                    % (r, type(res).__name__))


def _as_eval_result(res, r: int) -> EvalResult:
    if isinstance(res, EvalResult):
        return res
    if isinstance(res, tuple) and len(res) in (2, 3):
        return EvalResult(res[0], res[1], *(res[2:]))
    raise TypeError("round %d: evaluate() returned %s; return a fedlr.EvalResult or (loss, num_examples[, metrics])"
                    % (r, type(res).__name__))


def _ensure_log_handler(name: str) -> None:
    """Progress lines to stderr as "fedlr-py[NAME]: ...", unless the
    application configured logging itself."""
    root = logging.getLogger()
    lg = logging.getLogger("fedlr")
    if lg.handlers or root.handlers:
        return
    h = logging.StreamHandler()
    h.setFormatter(logging.Formatter("fedlr-py[%s]: %%(message)s" % name.replace("%", "%%")))
    lg.addHandler(h)
    lg.setLevel(logging.INFO)


def run_client(connect: str, train: Callable, evaluate: Optional[Callable] = None, **options) -> RunResult:
    """``Client(connect, train, evaluate, **options).run()``: see :class:`Client`."""
    return Client(connect, train, evaluate, **options).run()
