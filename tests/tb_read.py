#!/usr/bin/python3
"""An independent reader of TensorBoard event files, for fedlr's tests.

It shares no code with fedlr's writer (common/fl_tboard.c): the Event
classes are generated from the vendored .proto files by Debian's protoc
(--python_out, into a temporary folder) and parsed by Debian's
python3-protobuf; the records are framed here and both CRCs of each record
checked with python3-crcmod's CRC-32C ("crc-32c") and TensorFlow's mask.

    tb_read.py dump FILE...
        one JSON object per record: {"file", "step", "wall_time", and
        "file_version" or "tag" and "value"}; exit 1 with the reason on
        stderr at the first bad record (length CRC, data CRC, truncation,
        an Event that does not decode).

    tb_read.py check RUN_DIR METRICS.jsonl
        reads every events.out.tfevents.* file of RUN_DIR and compares the
        scalars with a fedlr --metrics file, printing "ok: ..." and
        "FAIL: ..." lines (tests/lib_py.sh relays them); exit 1 if a check
        failed.
"""

import glob
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import crcmod.predefined

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "..", "third_party", "tensorboard")
FILE_VERSION = "brain.Event:2"
NAME_RE = re.compile(r"^events\.out\.tfevents\.(\d{10})\.[A-Za-z0-9._-]+\.\d+(\.\d+)?$")

crc32c = crcmod.predefined.mkCrcFun("crc-32c")


def masked(data):
    """TensorFlow's masked CRC-32C (tensorflow/core/lib/hash/crc32c.h)."""
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def load_event_class():
    """tensorboard.Event, generated from the vendored protos by protoc."""
    out = tempfile.mkdtemp(prefix="tb_read.")
    try:
        protos = sorted(glob.glob(os.path.join(PROTO_ROOT, "tensorboard", "compat", "proto", "*.proto")))
        subprocess.run(["protoc", "--proto_path=" + PROTO_ROOT, "--python_out=" + out] + protos, check=True)
        sys.path.insert(0, out)
        from tensorboard.compat.proto import event_pb2  # noqa: E402
        return event_pb2.Event
    finally:
        shutil.rmtree(out, ignore_errors=True)  # the modules are loaded by now


def records(path):
    """The data of each record of an event file, checked: yields (offset, bytes)."""
    with open(path, "rb") as f:
        buf = f.read()
    at = 0
    n = 0
    while at < len(buf):
        if len(buf) - at < 12:
            raise ValueError("%s: record %d at byte %d: truncated header" % (path, n, at))
        header = buf[at:at + 8]
        (length,) = struct.unpack("<Q", header)
        (hcrc,) = struct.unpack("<I", buf[at + 8:at + 12])
        if hcrc != masked(header):
            raise ValueError("%s: record %d at byte %d: length CRC mismatch (stored %08x, computed %08x)"
                             % (path, n, at, hcrc, masked(header)))
        if len(buf) - at - 12 < length + 4:
            raise ValueError("%s: record %d at byte %d: truncated data (%d bytes announced)" % (path, n, at, length))
        data = buf[at + 12:at + 12 + length]
        (dcrc,) = struct.unpack("<I", buf[at + 12 + length:at + 16 + length])
        if dcrc != masked(data):
            raise ValueError("%s: record %d at byte %d: data CRC mismatch (stored %08x, computed %08x)"
                             % (path, n, at, dcrc, masked(data)))
        yield at, data
        at += 16 + length
        n += 1


def events(Event, path):
    """The decoded Events of a file, each re-encoded to the same bytes (no
    unknown or misplaced field): yields dicts as `dump` prints them."""
    for at, data in records(path):
        ev = Event()
        try:
            ev.ParseFromString(data)
        except Exception as e:  # google.protobuf.message.DecodeError
            raise ValueError("%s: record at byte %d: not an Event: %s" % (path, at, e))
        if ev.SerializeToString() != data:
            raise ValueError("%s: record at byte %d: the Event does not re-encode to its bytes" % (path, at))
        d = {"file": os.path.basename(path), "step": ev.step, "wall_time": ev.wall_time}
        kind = ev.WhichOneof("what")
        if kind == "file_version":
            d["file_version"] = ev.file_version
        elif kind == "summary" and len(ev.summary.value) == 1 and \
                ev.summary.value[0].WhichOneof("value") == "simple_value":
            d["tag"] = ev.summary.value[0].tag
            d["value"] = ev.summary.value[0].simple_value
        else:
            raise ValueError("%s: record at byte %d: neither a file_version nor one simple_value: %s"
                             % (path, at, ev))
        yield d


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def expected_scalars(rows):
    """{(step, tag): float32 value} that fedlr writes for its metrics lines."""
    want = {}
    for r in rows:
        step = r["round"]
        pairs = [("lr", r["lr"]), ("server_lr", r.get("server_lr")), ("train/loss", r["train_loss"]), ("test/accuracy", r["test_accuracy"]),
                 ("test/loss", r["test_loss"])]
        if r.get("fed_eval_clients"):
            pairs += [("fed_eval/loss", r.get("fed_eval_loss")), ("fed_eval/accuracy", r.get("fed_eval_accuracy"))]
            for k, v in r.items():
                if k.startswith("fed_eval_") and k[9:] not in ("loss", "accuracy", "examples", "clients"):
                    pairs.append(("fed_eval/" + k[9:], v))
        for tag, v in pairs:
            if v is not None:  # null: not measured that round, no event
                want[(step, tag)] = f32(v)
    return want


def check(run_dir, metrics_path):
    results = []

    def ok(msg):
        results.append(True)
        print("ok: " + msg)

    def bad(msg):
        results.append(False)
        print("FAIL: " + msg)

    Event = load_event_class()
    files = sorted(glob.glob(os.path.join(run_dir, "*tfevents*")))
    if not files:
        bad("no events.out.tfevents.* file in %s" % run_dir)
        return 1
    got = {}
    repeated = []
    now = time.time()
    for path in files:
        name = os.path.basename(path)
        m = NAME_RE.match(name)
        if m:
            ok("file name %s (TensorFlow's: events.out.tfevents.SECONDS.HOST.PID)" % name)
        else:
            bad("file name %s is not events.out.tfevents.<10 digits>.<host>.<pid>[.N]" % name)
        try:
            evs = list(events(Event, path))
        except (ValueError, OSError) as e:
            bad(str(e))
            continue
        ok("%s: %d records, every length and data CRC-32C (crcmod) valid, every Event decodes" % (name, len(evs)))
        if evs and evs[0].get("file_version") == FILE_VERSION and evs[0]["step"] == 0 and \
                all("tag" in e for e in evs[1:]):
            ok("%s: first record file_version %s, then only scalars" % (name, FILE_VERSION))
        else:
            bad("%s: first record %s, file_versions at %s" % (
                name, evs[:1], [i for i, e in enumerate(evs) if "file_version" in e]))
        t = [e["wall_time"] for e in evs]
        t0 = int(m.group(1)) if m else 0
        if t and all(a <= b for a, b in zip(t, t[1:])) and t0 - 1 <= t[0] and t[-1] <= now + 1:
            ok("%s: wall times from the file's creation (%d) to now, never decreasing" % (name, t0))
        else:
            bad("%s: wall times %s..%s, file created %d, now %.0f" % (name, t[:1], t[-1:], t0, now))
        for e in evs[1:]:
            key = (e["step"], e["tag"])
            if key in got:
                repeated.append(key)
            got[key] = e["value"]  # a resumed run writes its in-flight round again: the last one counts

    with open(metrics_path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    want = expected_scalars(rows)
    steps = sorted({s for s, _ in got})
    if rows and steps == [r["round"] for r in rows] == list(range(1, len(rows) + 1)):
        ok("steps 1..%d, one a round of the metrics file" % len(rows))
    else:
        bad("steps %s, metrics rounds %s" % (steps, [r["round"] for r in rows]))
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if want and not missing and not extra:
        tags = sorted({t for _, t in want})
        ok("%d scalars with the tags %s, each where its metric was measured" % (len(want), ", ".join(tags)))
    else:
        bad("scalars missing %s, unexpected %s" % (missing[:6], extra[:6]))
    diff = [(k, got[k], want[k]) for k in sorted(set(got) & set(want))
            if not (got[k] == want[k] or (math.isnan(got[k]) and math.isnan(want[k])))]
    if not diff and set(got) & set(want):
        ok("every value equals float32 of its metrics.jsonl value")
    else:
        bad("values differ (step, tag, event, metrics): %s" % diff[:6])
    if repeated:
        print("note: (step, tag) written more than once: %s" % repeated[:6])
    return 0 if all(results) else 1


def main(argv):
    if len(argv) >= 2 and argv[0] == "dump":
        Event = load_event_class()
        try:
            for path in argv[1:]:
                for d in events(Event, path):
                    print(json.dumps(d))
        except (ValueError, OSError) as e:
            print("tb_read: %s" % e, file=sys.stderr)
            return 1
        return 0
    if len(argv) == 3 and argv[0] == "check":
        return check(argv[1], argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
