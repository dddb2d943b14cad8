"""fedlr.Client's session against a real fedlr-coordinator.

Usage: test_session.py BUILD_DIR TMP_DIR

Clients run in threads of this process (each its own ZeroMQ context and I/O
thread) with a small numpy softmax model on synthetic CSV data; the
coordinators are real processes over loopback TCP, started from a custom
model written by fedlr.safetensors (--init). Checked:

1. liveness and retries: a train() that sleeps past --client-timeout is not
   a death (the heartbeat thread) and its update counts; a round abandoned
   at its deadline is retried with attempt 2, which the client echoes (the
   retry closes with it); a superseded round's result is not sent;
   Evaluate is answered, also one that arrives while train() runs;
2. refusals: a slot beyond --clients, a protocol version the coordinator
   does not speak (JoinRefused with its versions), a model that is not the
   application's (LayoutMismatch);
3. give_up: no coordinator at all (CoordinatorGone);
4. CurveZMQ: an admitted key trains, an unlisted key and a plaintext client
   are refused (AuthenticationError);
5. a coordinator killed and resumed: the client joins again by itself and
   finishes the run;
6. FedProx (--prox-mu): the session is protocol version 4 (3 and later
   carry prox_mu) and every round hands train() the run's prox_mu; a client
   of version 2 only is refused (JoinRefused saying why, versions 3 and 4
   listed).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np

from checks import Checks

import fedlr
from fedlr import safetensors

C = Checks()
BUILD, TMP = sys.argv[1], sys.argv[2]
COORD = os.path.join(BUILD, "fedlr-coordinator")

rng = np.random.default_rng(2)
centers = rng.normal(0, 1, (3, 20))
Y = rng.integers(0, 3, 300)
X = (centers[Y] + rng.normal(0, 1, (300, 20))).astype(np.float32)
INIT = os.path.join(TMP, "init.safetensors")
safetensors.save(INIT, {"w": np.zeros((3, 20)), "b": np.zeros(3)})
LAYOUT = {"w": (3, 20), "b": (3,)}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def softmax_step(w, b, x, y, lr):
    z = x @ w.T + b
    z -= z.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    loss = float(-np.log(p[np.arange(len(y)), y]).mean())
    p[np.arange(len(y)), y] -= 1
    p /= len(y)
    return loss, w - lr * (p.T @ x), b - lr * p.sum(0)


class App:
    """One client application: a share of the data, a log of what it saw."""

    def __init__(self, name, lo, hi, sleeps=None, **opts):
        self.x, self.y = X[lo:hi - 30], Y[lo:hi - 30]
        self.xe, self.ye = X[hi - 30:hi], Y[hi - 30:hi]
        self.name, self.sleeps, self.opts = name, sleeps or {}, opts
        self.seen, self.cancelled, self.evals, self.mus = [], [], [], []
        self.result = self.error = None

    def train(self, weights, info):
        self.seen.append((info.round, info.attempt))
        self.mus.append(info.prox_mu)
        time.sleep(self.sleeps.get((info.round, info.attempt), 0))
        self.cancelled.append(info.cancelled)
        w, b = weights["w"].copy(), weights["b"].copy()
        loss = 0.0
        for step, i in enumerate(range(0, len(self.x), info.batch_size)):
            loss, w, b = softmax_step(w, b, self.x[i:i + info.batch_size], self.y[i:i + info.batch_size],
                                      info.step_lr(0, step))
        return fedlr.TrainResult({"w": w, "b": b}, len(self.x), loss, step + 1)

    def evaluate(self, weights, info):
        self.evals.append(info.round)
        z = self.xe @ weights["w"].T + weights["b"]
        acc = float((z.argmax(1) == self.ye).mean())
        z -= z.max(1, keepdims=True)
        loss = float(-(z[np.arange(len(self.ye)), self.ye] - np.log(np.exp(z).sum(1))).mean())
        return fedlr.EvalResult(loss, len(self.ye), {"accuracy": acc})

    def start(self, endpoint, cls=fedlr.Client):
        opts = dict(name=self.name, num_examples=len(self.x), num_eval_examples=len(self.xe), give_up=30)
        opts.update(self.opts)
        self.client = cls(endpoint, self.train, self.evaluate, **opts)

        def run():
            try:
                self.result = self.client.run()
            except Exception as e:  # noqa: BLE001 - the test looks at it
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return self

    def join(self, timeout=60):
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.client.stop()
            self.thread.join(5)
            self.error = self.error or RuntimeError("%s: still running after %d s" % (self.name, timeout))
        return self


class Coordinator:
    def __init__(self, tag, *args, port=None):
        self.port = port or free_port()
        self.endpoint = "tcp://127.0.0.1:%d" % self.port
        self.log = os.path.join(TMP, tag + ".log")
        self.metrics = os.path.join(TMP, tag + ".jsonl")
        self.out = os.path.join(TMP, tag)
        self.args = [COORD, "--bind", self.endpoint, "--metrics", self.metrics, "--out", self.out,
                     "--start-timeout", "30"] + list(args)
        self.p = subprocess.Popen(self.args, stderr=open(self.log, "a"), stdout=subprocess.DEVNULL)

    def wait(self, timeout=60):
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return "killed after %d s" % timeout

    def rows(self):
        return [json.loads(line) for line in open(self.metrics)] if os.path.exists(self.metrics) else []

    def text(self):
        return open(self.log).read()


# ---- 1. liveness, retries, evaluation ----
co = Coordinator("live", "--init", INIT, "--clients", "2", "--start-clients", "2", "--fraction", "1", "--rounds", "3",
                 "--lr", "0.1", "--batch-size", "16", "--heartbeat", "0.5", "--client-timeout", "1.5",
                 "--round-timeout", "3", "--quorum", "1")
fast = App("fast", 0, 150, slot=0).start(co.endpoint)
# slow: round 1 outlasts --client-timeout (1.5 s) but not the deadline (3 s);
# round 2 outlasts the deadline: the round is retried without it.
slow = App("slow", 150, 300, sleeps={(1, 1): 2.5, (2, 1): 4.5}, slot=1).start(co.endpoint)
rc = co.wait()
fast.join()
slow.join()
rows = co.rows()
log = co.text()
C.check(rc == 0 and fast.error is None and slow.error is None, "liveness run: coordinator and both clients ended normally",
        "coordinator %s, fast %r, slow %r" % (rc, fast.error, slow.error))
C.check(len(rows) == 3 and rows[0]["clients_reported"] == 2 and rows[0]["seconds"] >= 2.5 and "is dead" not in log,
        "a train() of 2.5 s (--client-timeout 1.5 s): the client stayed alive (heartbeats from the I/O thread) and its update "
        "counted (round 1: %s clients, %.2f s)" % (rows[0]["clients_reported"] if rows else "?", rows[0]["seconds"] if rows else 0),
        "rows %s; log: %s" % (rows[:1], log[-300:]))
C.check(fast.seen == [(1, 1), (2, 1), (2, 2), (3, 1)] and "abandoned (attempt 1)" in log,
        "round 2 was abandoned at its deadline and retried: the fast client trained attempts %s" % fast.seen,
        "fast saw %s; log: %s" % (fast.seen, log[-400:]))
C.check(len(rows) >= 2 and rows[1]["participants"] == [0] and rows[1]["rejected"] == 0,
        "the retry closed with the fast client's update echoing attempt 2 (round 2 participants %s, rejected %s)"
        % (rows[1]["participants"], rows[1]["rejected"]) if len(rows) >= 2 else "round 2 missing")
C.check(slow.seen == [(1, 1), (2, 1)] and slow.cancelled == [False, True] and slow.result and slow.result.rounds_trained == 1,
        "the slow client's round 2 was cancelled while it trained (round closed): its result was not sent",
        "seen %s, cancelled %s, result %s" % (slow.seen, slow.cancelled, slow.result))
C.check(all(r.get("fed_eval_clients") == 2 for r in rows) and slow.evals == [1, 2, 3] and fast.evals == [1, 2, 3],
        "Evaluate answered by both clients every round, the slow one's round-2 Evaluate after its train() returned "
        "(fed_eval_clients %s)" % [r.get("fed_eval_clients") for r in rows], "rows %s, evals %s %s" % (rows, slow.evals, fast.evals))
C.check(fast.result is not None and fast.result.reason.startswith("run finished") and fast.result.rounds_trained == 4
        and fast.result.evaluations == 3, "run() returned the coordinator's reason: %r" % (fast.result and fast.result.reason))

# ---- 2. refusals ----
co = Coordinator("refuse", "--init", INIT, "--clients", "2", "--start-clients", "2", "--rounds", "1")


class Future(fedlr.Client):
    PROTOCOL_VERSIONS = (7, 7)


a = App("slot", 0, 150, slot=5).start(co.endpoint).join(20)
C.check(isinstance(a.error, fedlr.JoinRefused) and "slot 5 is beyond --clients 2" in a.error.reason,
        "a Join for slot 5 of 2: JoinRefused: %s" % a.error, repr(a.error))
a = App("future", 0, 150).start(co.endpoint, Future).join(20)
C.check(isinstance(a.error, fedlr.JoinRefused) and a.error.supported_versions == (1, 2, 3, 4)
        and "protocol version 7 is not supported" in a.error.reason,
        "a Join for protocol version 7: JoinRefused with the versions spoken: %s" % a.error, repr(a.error))
a = App("layout", 0, 150, layout={"w": (3, 21), "b": (3,)}).start(co.endpoint).join(20)
C.check(isinstance(a.error, fedlr.LayoutMismatch) and "'w' [3,20] there, 'w' [3,21] here" in str(a.error),
        "a model that is not the application's: LayoutMismatch: %s" % a.error, repr(a.error))
co.p.terminate()
co.wait()

# ---- 3. give_up ----
t0 = time.monotonic()
a = App("alone", 0, 150, give_up=1.5).start("tcp://127.0.0.1:%d" % free_port()).join(20)
dt = time.monotonic() - t0
C.check(isinstance(a.error, fedlr.CoordinatorGone) and 1.4 <= dt <= 3,
        "no coordinator: CoordinatorGone after %.1f s (give_up 1.5): %s" % (dt, a.error), repr(a.error))

# ---- 4. CurveZMQ ----
kd = os.path.join(TMP, "keys")
allowed = os.path.join(kd, "allowed")
os.makedirs(allowed)
for who in ("coord", "alice", "bob"):
    subprocess.run([os.path.join(BUILD, "fedlr-keygen"), os.path.join(kd, who)], check=True, stderr=subprocess.DEVNULL)
os.link(os.path.join(kd, "alice.key"), os.path.join(allowed, "alice.key"))
co = Coordinator("curve", "--init", INIT, "--clients", "1", "--rounds", "1", "--curve-secret", os.path.join(kd, "coord.key_secret"),
                 "--allow-clients", allowed)
bob = App(None, 0, 150, curve_secret=os.path.join(kd, "bob.key_secret"), coordinator_key=os.path.join(kd, "coord.key")).start(co.endpoint).join(20)
C.check(isinstance(bob.error, fedlr.AuthenticationError) and "ZAP status 400" in str(bob.error),
        "CURVE: an unlisted key: AuthenticationError: %s" % bob.error, repr(bob.error))
plain = App("plain", 0, 150).start(co.endpoint).join(20)
C.check(isinstance(plain.error, fedlr.AuthenticationError) and "requires CurveZMQ" in str(plain.error),
        "CURVE: a plaintext client: AuthenticationError: %s" % plain.error, repr(plain.error))
alice = App(None, 0, 150, curve_secret=os.path.join(kd, "alice.key_secret"), coordinator_key=os.path.join(kd, "coord.key")).start(co.endpoint).join(30)
rc = co.wait()
C.check(alice.error is None and alice.result.rounds_trained == 1 and rc == 0 and "alice" in co.text(),
        "CURVE: alice (admitted, named by her key file) trained the run", "error %r, coordinator %s" % (alice.error, rc))

# ---- 5. the coordinator killed and resumed ----
args = ["--init", INIT, "--clients", "1", "--rounds", "3", "--lr", "0.1", "--heartbeat", "0.5", "--client-timeout", "1.5"]
co = Coordinator("restart", *args)
r = App("phoenix", 0, 150, sleeps={(2, 1): 1.0}, slot=0).start(co.endpoint)
deadline = time.monotonic() + 30
# Round 1's metrics line is written before its checkpoint (a checkpoint
# never runs ahead of the metrics, which a resume trims to it): wait for
# both, or a kill between them leaves nothing to resume from.
ckpt = os.path.join(co.out, "checkpoint.safetensors")
while (len(co.rows()) < 1 or not os.path.exists(ckpt)) and time.monotonic() < deadline:
    time.sleep(0.05)
co.p.send_signal(signal.SIGKILL)
co.wait()
time.sleep(0.5)
co2 = Coordinator("restart", *(args + ["--resume", co.out]), port=co.port)
rc = co2.wait()
r.join()
rows = co2.rows()
C.check(rc == 0 and r.error is None and [x["round"] for x in rows] == [1, 2, 3] and r.result.rounds_trained >= 3,
        "coordinator SIGKILLed after round 1 and resumed: the client joined again by itself and the run finished "
        "(rounds %s)" % [x["round"] for x in rows], "coordinator %s, client %r, rows %s" % (rc, r.error, rows))

# ---- 6. FedProx ----
co = Coordinator("prox", "--init", INIT, "--clients", "2", "--start-clients", "1", "--rounds", "2", "--lr", "0.1",
                 "--prox-mu", "0.01")


class V2Only(fedlr.Client):
    PROTOCOL_VERSIONS = (2, 2)


old = App("old", 0, 150).start(co.endpoint, V2Only).join(20)
want = "this run uses FedProx (--prox-mu 0.01): clients must speak protocol version 3 or later; this client speaks up to 2"
C.check(isinstance(old.error, fedlr.JoinRefused) and want in old.error.reason and old.error.supported_versions == (3, 4),
        "FedProx: a client of protocol version 2 only is refused: %s" % old.error, repr(old.error))
new = App("new", 0, 150, slot=0).start(co.endpoint).join(30)
rc = co.wait()
w = new.client._welcome
C.check(rc == 0 and new.error is None and w is not None and w.protocol_version == 4 and new.mus == [np.float32(0.01)] * 2,
        "FedProx: a version 4 session, train() told prox_mu %r in each of its 2 rounds" % (new.mus[:1],),
        "coordinator %s, error %r, welcome %r, prox_mu %s" % (rc, new.error, w and w.protocol_version, new.mus))
sys.exit(1 if C.failed else 0)
