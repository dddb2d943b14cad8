"""The package's parts on their own: the generated protobuf module is
current, the codec (zero-copy tensors, every check of a coordinator's
messages), safetensors files (fedlr's own, corrupt ones), fedlr-keygen key
files, and the two ways to install the package.

Usage: test_unit.py BUILD_DIR TMP_DIR
"""

import os
import shutil
import subprocess
import sys

import numpy as np

from checks import REPO, Checks

from fedlr import fedlr_pb2 as pb
from fedlr import keys, safetensors, wire

C = Checks()
BUILD, TMP = sys.argv[1], sys.argv[2]

# ---- fedlr_pb2.py is what protoc makes of proto/fedlr.proto ----
protoc = shutil.which("protoc")
if protoc:
    out = os.path.join(TMP, "pb")
    os.makedirs(out)
    subprocess.run([protoc, "--proto_path=" + os.path.join(REPO, "proto"), "--python_out=" + out,
                    os.path.join(REPO, "proto", "fedlr.proto")], check=True)
    same = open(os.path.join(out, "fedlr_pb2.py"), "rb").read() == open(os.path.join(REPO, "python", "fedlr", "fedlr_pb2.py"), "rb").read()
    C.check(same, "python/fedlr/fedlr_pb2.py is protoc's output for proto/fedlr.proto",
            "stale: regenerate with cmake --build build --target fedlr_py_proto")
else:
    C.skip("fedlr_pb2.py freshness: no protoc (install protobuf-compiler)")


# ---- the codec ----
def round_start(**kw):
    rs = pb.RoundStart(round=3, lr=0.05, local_epochs=2, batch_size=10, model="custom", attempt=2, seed=7,
                       local_schedule="exp:gamma=0.9", local_unit=1,
                       optimizer=pb.Optimizer(kind=5, beta1=0.9, beta2=0.999, eps=1e-8))
    for name, shape in (("conv.weight", [4, 1, 3, 3]), ("conv.bias", [4]), ("scale", [])):
        t = rs.weights.add(name=name, shape=shape)
        t.data.extend(np.arange(int(np.prod(shape)), dtype=np.float32) / 7)
    for k, v in kw.items():
        setattr(rs, k, v)
    return rs


raw = pb.Envelope(round_start=round_start()).SerializeToString()
m = wire.decode(raw)
w = m.weights
C.check(isinstance(m, wire.RoundStart) and (m.round, m.attempt, m.local_unit, m.optimizer.kind) == (3, 2, "step", "adam")
        and list(w) == ["conv.weight", "conv.bias", "scale"] and w["conv.weight"].shape == (4, 1, 3, 3) and w["scale"].shape == ()
        and float(w["scale"]) == 0.0 and np.array_equal(w["conv.bias"], np.arange(4, dtype=np.float32) / 7),
        "decode: a RoundStart's fields and tensors (4-d, 1-d, a scalar) in order")
C.check(all(not a.flags.writeable and a.base is not None for a in w.values()),
        "decode: tensors are read-only views of the received bytes (no copy)")
# A sender may split a tensor's data or write it unpacked: still decoded (copied).
t = pb.Tensor(name="x", shape=[3])
unpacked = b"".join([b"\x0a\x01x", b"\x12\x01\x03"] + [b"\x1d" + np.float32(v).tobytes() for v in (1.5, 2.5, 3.5)])
rs = round_start()
del rs.weights[:]
body = rs.SerializeToString() + b"\x52" + bytes([len(unpacked)]) + unpacked
m2 = wire.decode(b"\x1a" + bytes([len(body)]) + body)
C.check(np.array_equal(m2.weights["x"], [1.5, 2.5, 3.5]), "decode: unpacked float data is decoded too (copied)")

bad = [
    ("NaN in a tensor", dict(), lambda rs: rs.weights[1].data.__setitem__(2, float("nan")), "value 2 is NaN"),
    ("a count that is not the shape's", dict(), lambda rs: rs.weights[1].data.append(1.0), "has 5 values, shape [4] needs 4"),
    ("a zero dimension", dict(), lambda rs: rs.weights[1].shape.__setitem__(0, 0), "zero dimension"),
    ("9 dimensions", dict(), lambda rs: rs.weights.add(name="big", shape=[1] * 9, data=[1.0]), "9 dimensions, at most 8"),
    ("round 0", dict(round=0), None, "round 0"),
    ("a negative rate", dict(lr=-1.0), None, "learning rate -1 is negative"),
    ("an infinite rate", dict(lr=float("inf")), None, "learning rate not finite"),
    ("batch size 0", dict(batch_size=0), None, "batch_size 0 outside [1, 65536]"),
    ("1001 epochs", dict(local_epochs=1001), None, "local_epochs 1001 outside [1, 1000]"),
    ("an unknown local unit", dict(local_unit=7), None, "unknown local_unit 7"),
    ("an unknown optimizer", dict(), lambda rs: setattr(rs.optimizer, "kind", 9), "unknown optimizer kind 9"),
    ("a NaN hyper-parameter", dict(), lambda rs: setattr(rs.optimizer, "eps", float("nan")), "optimizer eps is not finite"),
    ("a duplicate tensor", dict(), lambda rs: rs.weights.add(name="scale", data=[1.0]), "'scale' appears twice"),
    ("no weights", dict(), lambda rs: rs.ClearField("weights"), "no weights"),
    ("a 300-byte schedule", dict(local_schedule="x" * 300), None, "local_schedule is longer than 256 bytes"),
    ("a NaN prox_mu", dict(prox_mu=float("nan")), None, "prox_mu (FedProx's mu) is NaN, not a number in [0, 10000]"),
    ("an infinite prox_mu", dict(prox_mu=float("inf")), None, "prox_mu (FedProx's mu) is infinite"),
    ("a negative prox_mu", dict(prox_mu=-0.5), None, "prox_mu (FedProx's mu) -0.5 outside [0, 10000]"),
    ("a prox_mu above 1e4", dict(prox_mu=10000.5), None, "prox_mu (FedProx's mu) 10000.5 outside [0, 10000]"),
]
for what, fields, edit, want in bad:
    rs = round_start(**fields)
    if edit:
        edit(rs)
    C.raises(wire.WireError, lambda: wire.decode(pb.Envelope(round_start=rs).SerializeToString()), "decode refuses " + what, want)
# Version 3: FedProx's mu, the float32 sent; absent (a version 2 coordinator) is 0.
C.check(m.prox_mu == 0.0, "decode: a RoundStart without prox_mu has prox_mu 0 (plain local training)")
for mu in (0.01, 1.0, 1e4):
    m3 = wire.decode(pb.Envelope(round_start=round_start(prox_mu=mu)).SerializeToString())
    C.check(m3.prox_mu == float(np.float32(mu)), "decode: RoundStart.prox_mu %g arrives as float32 %r" % (mu, m3.prox_mu),
            repr(m3.prox_mu))
C.raises(wire.WireError, lambda: wire.decode(raw, max_values=10), "decode refuses more values than the model's", "more than 10 values")
C.raises(wire.WireError, lambda: wire.decode(raw, max_message=100), "decode refuses a message over the size limit", "exceeds the limit of 100")
C.raises(wire.WireError, lambda: wire.decode(b"\x0a\x05abc"), "decode refuses truncated bytes", "undecodable")
C.raises(wire.WireError, lambda: wire.decode(b""), "decode refuses an empty envelope", "no message body")
C.raises(wire.WireError, lambda: wire.decode(pb.Envelope(update=pb.Update(round=1)).SerializeToString()),
         "decode refuses a message only clients send", "not one a coordinator sends")
wel = pb.Welcome(client_id=1, model="custom", protocol_version=2, layout=[pb.Tensor(name="a b", shape=[2])])
C.raises(wire.WireError, lambda: wire.decode(pb.Envelope(welcome=wel).SerializeToString()), "decode refuses a layout name with a space", "' ' at byte 1")
wel = pb.Welcome(client_id=1, model="custom", protocol_version=2, layout=[pb.Tensor(name="a", shape=[2], data=[1, 2])])
C.raises(wire.WireError, lambda: wire.decode(pb.Envelope(welcome=wel).SerializeToString()), "decode refuses a layout with values", "carries 2 values")
C.raises(wire.WireError, lambda: wire.decode(pb.Envelope(stop=pb.Stop(supported_versions=range(17))).SerializeToString()),
         "decode refuses 17 supported versions", "at most 16")
st = wire.decode(pb.Envelope(stop=pb.Stop(reason="join refused: x", error=True, supported_versions=[1, 2])).SerializeToString())
C.check(st == wire.Stop("join refused: x", True, False, (1, 2)), "decode: a Stop with its supported versions")

# encode: an Update written without protobuf's containers reads back with protobuf
ws = {"conv.weight": np.random.default_rng(1).normal(size=(4, 1, 3, 3)), "conv.bias": np.ones(4), "scale": np.float32(2)}
upd = pb.Envelope()
upd.ParseFromString(wire.encode_update(5, 3, 100, wire.check_tensors(ws, {"conv.weight": (4, 1, 3, 3), "conv.bias": (4,), "scale": ()}),
                                       True, 0.25, 40, 2))
u = upd.update
C.check((u.round, u.client_id, u.num_examples, u.is_delta, u.train_loss, u.steps, u.attempt) == (5, 3, 100, True, 0.25, 40, 2)
        and [(t.name, list(t.shape)) for t in u.weights] == [("conv.weight", [4, 1, 3, 3]), ("conv.bias", [4]), ("scale", [])]
        and np.array_equal(np.array(u.weights[0].data, np.float32), ws["conv.weight"].astype(np.float32).ravel()),
        "encode: an Update reads back with protobuf (fields, tensors in order, a scalar without shape)")
C.raises(ValueError, lambda: wire.check_tensors({"conv.bias": np.ones(4)}, {"conv.weight": (4,), "conv.bias": (4,)}),
         "check_tensors names a missing tensor", "missing conv.weight")
C.raises(ValueError, lambda: wire.check_tensors([np.ones(3)], {"conv.bias": (4,)}), "check_tensors names a wrong shape", "'conv.bias' has shape [3]")
j = pb.Envelope()
j.ParseFromString(wire.encode_join("ok", 10))
C.check((j.join.min_protocol_version, j.join.protocol_version) == (2, 4) == (wire.MIN_PROTOCOL_VERSION, wire.PROTOCOL_VERSION),
        "encode: a Join speaks protocol versions 2 to 4", str(j.join))
w = pb.Envelope()
w.welcome.model = "cnn:conv3x3x8,pool2,fc16"
w.welcome.input_dim = 192
w.welcome.protocol_version = 4
w.welcome.layout.add(name="0.weight", shape=[8, 3, 3, 3])
w.welcome.input_shape.extend([3, 8, 8])
C.check(wire.decode(w.SerializeToString()).input_shape == (3, 8, 8), "decode: a version-4 Welcome's input_shape",
        str(wire.decode(w.SerializeToString())))
del w.welcome.input_shape[:]
C.check(wire.decode(w.SerializeToString()).input_shape == (), "decode: a Welcome without input_shape", "")
w.welcome.input_shape.extend([3, 8, 9])
C.raises(wire.WireError, lambda: wire.decode(w.SerializeToString()), "decode: an input_shape that is not input_dim",
         "C H W = input_dim 192")
C.raises(ValueError, lambda: wire.encode_join("bad\nname", 10), "a client name with a control character", "control character")
C.raises(ValueError, lambda: wire.encode_join("x" * 65, 10), "a 65-byte client name", "longer than 64 bytes")
C.raises(ValueError, lambda: wire.encode_join("ok", 0), "a Join with 0 examples", "1 to")
C.raises(ValueError, lambda: wire.encode_eval_result(1, 0, 10, 0.5, {"acc uracy": 1.0}), "a metric name with a space", "letters, digits")
C.raises(ValueError, lambda: wire.encode_eval_result(1, 0, 10, 0.5, {"accuracy": float("nan")}), "a NaN metric", "finite")

# ---- safetensors ----
sim_out = os.path.join(TMP, "sim")
subprocess.run([os.path.join(BUILD, "fedlr-sim"), "--model", "mlp:8", "--rounds", "1", "--clients", "2", "--fraction", "1",
                "--quiet", "--out", sim_out] + (["--data-dir", os.environ["FEDLR_DATA_DIR"]] if os.environ.get("FEDLR_DATA_DIR") else []),
               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
tensors, meta = safetensors.load(os.path.join(sim_out, "model.safetensors"), require_checksum=True)
C.check(list(tensors) == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"] and tensors["layers.0.weight"].shape == (8, 784)
        and meta.get("model") == "mlp:8", "safetensors: fedlr-sim's model.safetensors loads, checksum verified, tensors in layout order")
p = os.path.join(TMP, "py.safetensors")
safetensors.save(p, {"b": np.arange(3), "a": np.float32(1.5), "c": np.ones((2, 2, 2))}, {"note": "x"})
t2, m2 = safetensors.load(p, require_checksum=True)
C.check(list(t2) == ["b", "a", "c"] and t2["a"].shape == () and m2 == {"note": "x"} and os.path.getsize(p) % 1 == 0,
        "safetensors: save then load (order, a scalar, metadata, checksum)")
data = bytearray(open(p, "rb").read())
for what, edit, want in (("a flipped data bit", lambda d: d.__setitem__(len(d) - 1, d[-1] ^ 1), "checksum mismatch"),
                         ("a truncated file", lambda d: d.__delitem__(slice(len(d) - 4, None)), "checksum mismatch"),
                         ("a header beyond the file", lambda d: d.__setitem__(slice(0, 8), (10**6).to_bytes(8, "little")), "beyond the file")):
    d = bytearray(data)
    edit(d)
    q = os.path.join(TMP, "bad.safetensors")
    open(q, "wb").write(bytes(d))
    C.raises(safetensors.SafetensorsError, lambda: safetensors.load(q), "safetensors refuses " + what, want)
C.raises(safetensors.SafetensorsError, lambda: safetensors.load(TMP), "safetensors refuses a directory", "not a regular file")

# ---- key files ----
kdir = os.path.join(TMP, "keys")
os.makedirs(kdir)
subprocess.run([os.path.join(BUILD, "fedlr-keygen"), os.path.join(kdir, "alice")], check=True, stderr=subprocess.DEVNULL)
pub, sec = keys.load_secret(os.path.join(kdir, "alice.key_secret"))
C.check(keys.load_public(os.path.join(kdir, "alice.key")) == pub and len(sec) == 40,
        "keys: fedlr-keygen's pair loads; the .key file holds its public key")
C.raises(keys.KeyFileError, lambda: keys.load_public(os.path.join(kdir, "alice.key_secret")), "keys: a secret file given as a public key", "holds a secret key")
os.chmod(os.path.join(kdir, "alice.key_secret"), 0o644)
C.raises(keys.KeyFileError, lambda: keys.load_secret(os.path.join(kdir, "alice.key_secret")), "keys: a secret file others may read", "too open")
C.raises(keys.KeyFileError, lambda: keys.load_public("not-a-key"), "keys: neither a file nor a key", "neither a file")

# ---- installing ----
env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
probe = "import fedlr, fedlr.schedules, fedlr.wire; print(fedlr.__file__)"
src = os.path.join(TMP, "pysrc")
shutil.copytree(os.path.join(REPO, "python"), src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
target = os.path.join(TMP, "pip-target")
r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
                    "--target", target, src], capture_output=True, text=True)
if r.returncode:
    C.bad("pip install --no-deps --no-build-isolation ./python: exit %d: %s" % (r.returncode, r.stderr[-500:]))
else:
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=dict(env, PYTHONPATH=target), cwd=TMP)
    C.check(r.returncode == 0 and r.stdout.startswith(target), "pip install --no-deps --no-build-isolation ./python (offline) gives an importable fedlr",
            r.stderr[-300:])
prefix = os.path.join(TMP, "prefix")
r = subprocess.run(["cmake", "--install", BUILD, "--prefix", prefix], capture_output=True, text=True)
ver = "%d.%d" % sys.version_info[:2]
site = os.path.join(prefix, "lib", "python%s" % ver, "dist-packages")
if r.returncode:
    C.bad("cmake --install: exit %d: %s" % (r.returncode, r.stderr[-300:]))
else:
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=dict(env, PYTHONPATH=site), cwd=TMP)
    C.check(r.returncode == 0 and r.stdout.startswith(site), "cmake --install puts fedlr in PREFIX/lib/python%s/dist-packages" % ver,
            r.stderr[-300:] or r.stdout)
sys.exit(1 if C.failed else 0)
