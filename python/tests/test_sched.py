"""fedlr.schedules against the C implementation (common/fl_sched.c).

Usage: test_sched.py PATH/TO/fl_sched_dump   (built by tests/CMakeLists.txt)

Feeds the same specs to the Python port and to tests/tools/fl_sched_dump
(the C code), and compares: the canonical form of every spec, the rate at
many t for every kind (edge cases: t = 0, t at and past T, staircase steps,
warmup, cosine restarts, piecewise boundaries, t near 2^64), plateau traces
fed the same metric sequences (NaN and inf included), the error message of
every bad spec, and a few thousand random specs built from the grammar's
pieces. Rates must be equal as float32 (what a trainer applies); the double
values are compared too and must be within one double ulp.
"""

import math
import random
import struct
import subprocess
import sys

from checks import Checks

from fedlr import schedules

C = Checks()
DUMP = sys.argv[1]

U64 = 2**64 - 1
EDGE_T = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15, 16, 20, 29, 30, 31, 49, 50, 99, 100, 101,
          1000, 12345, 2**31, 2**32 - 1, 2**32, 2**53, 2**53 + 1, 2**63, U64 - 1, U64]
LR0S = ["0.1", "0x1.99999ap-5", "1", "0", "3.5e-4"]  # 0x1.99999ap-5: 0.05 as a float32

VALID = [
    "", "const", "constant", "  const  ",
    "linear:T=10", "linear:T=10,end=0.01", "linear:T=2.5,end=0.3", "linear:T=1e+2",
    "exp:gamma=0.9", "exp:gamma=0.5,every=3,staircase", "exponential:gamma=0.97",
    "exp:gamma=0x1.8p-1", "exp:gamma=+0.5", "exp:gamma=1.5,every=0.5", "exp : gamma = 0.9 , staircase ",
    "exp:gamma=1e300,every=1e-300",
    "inv:T=5", "inv:T=5,p=0.5,staircase", "inverse-time:T=3,p=2", "invtime:T=0.5",
    "poly:T=10", "poly:T=10,power=2,end=0.001", "polynomial:T=7,power=0.5", "poly:T=1e-300",
    "step:gamma=0.1,every=3", "step:gamma=0.5,every=2.5", "step:every=10,gamma=0.2",
    "piecewise:3=0.1,7=0.01", "piecewise:0=0.5", "piecewise:1=2,2=0,100=1e-3",
    "piecewise:18446744073709551615=0.5",
    "cos:T=10", "cos:T=10,min=0.001", "cos:T=7,restart", "cos:T=3,restart,mult=2",
    "cos:T=2.5,restart,mult=1.5", "cosine:T=100,min=1e-5", "cos:T=1,restart,mult=3",
    "cos:T=1e-300,restart", "cos:T=4,restart,mult=1",
    "plateau", "plateau:factor=0.5,patience=2,cooldown=1,min=0.001,threshold=0.01",
    "plateau:patience=0", "plateau:factor=0.9,patience=4294967295",
    "warmup:3+exp:gamma=0.9", "warmup:4,start=0.25+cos:T=10,restart,mult=2", "warmup:1+const",
    "warmup:5,start=0+linear:T=10", "warmup:2,start=1+step:gamma=0.5,every=2",
    "warmup:10+piecewise:5=0.1", " warmup : 3 , start = 0.5 + inv:T=2 ",
    "warmup:18446744073709551615+const", "warmup:3+plateau:patience=1",
]

BAD = [
    "exp:gama=0.9", "exp", "exp:", "exp:,gamma=0.9", "exp:gamma", "exp:gamma=", "exp:gamma=abc",
    "exp:gamma=inf", "exp:gamma=nan", "exp:gamma=-1", "exp:gamma=0", "exp:gamma=0.9,gamma=0.8",
    "exp:staircase=1,gamma=0.5", "exp:=0.5", "exp:gamma=0.9,", "exp:gamma=1_000",
    "exp:gamma=0x", "exp:gamma=1e", "exp:gamma=0.9 0.8",
    "linear", "linear:T=0", "linear:T=10,end=-1", "linear:T=10,staircase",
    "inv:p=2", "poly:T=10,p=2", "step:gamma=0.1", "step:every=3",
    "piecewise", "piecewise:", "piecewise:3", "piecewise:3=", "piecewise:x=0.1",
    "piecewise:-3=0.1", "piecewise:5=0.1,3=0.01", "piecewise:5=0.1,5=0.01", "piecewise:5=-1",
    "piecewise:5=inf", "piecewise:5=zz", "piecewise:5=0.1,,7=0.2",
    "piecewise:18446744073709551616=0.5", "piecewise:" + ",".join("%d=0.5" % i for i in range(33)),
    "cos:T=10,mult=2", "cos:T=10,restart,mult=0.5", "cos:T=10,restart=1", "cos:min=0.1",
    "plateau:factor=1", "plateau:factor=0", "plateau:patience=-1", "plateau:patience=1.5",
    "plateau:patience=4294967296", "plateau:threshold=1", "plateau:cooldown=",
    "const:x=1", "sine", ":gamma=0.9", "  :  ",
    "warmup", "warmup:5", "warmup+const", "warmup:+const", "warmup:0+const", "warmup:x+const",
    "warmup:5,start=2+const", "warmup:5,start=+const", "warmup:5,foo=1+const",
    "warmup:5,start=0.1,start=0.2+const", "warmup:5,+const", "warmup:5,start+const",
    "warmup:5+", "+const", "exp:gamma=0.9+const", "warmup:5+warmup:3+const",
    "warmup:5+const+const", "warmup:=5+const", "warmup:5,start=nan+const",
    "x" * 255, "const" + " " * 251, "exp:gamma=" + "9" * 300,
]
LOCAL_ONLY = ["plateau", "plateau:patience=3", "warmup:2+plateau", "const", "", "cos:T=5"]

METRICS = [
    [1.0, 0.9, 0.95, 0.95, 0.95, 0.94, 0.9, 0.9, 0.9, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
    [math.nan, 1.0, math.inf, 1.0, -math.inf, 0.99999, 0.5, 0.50004, 0.5, 0.5, 0.5],
    [3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
]
PLATEAUS = ["plateau", "plateau:patience=0", "plateau:patience=1,cooldown=2",
            "plateau:factor=0.5,patience=2,cooldown=1,min=0.004,threshold=0.01",
            "warmup:2+plateau:patience=1,min=0.01"]


def c_run(lines):
    """Each command line through fl_sched_dump; its answers, in order."""
    out = subprocess.run([DUMP], input="\n".join(lines) + "\n", capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert len(out) == len(lines) + 1, "fl_sched_dump answered %d lines to %d" % (len(out) - 1, len(lines))
    return out[:-1]


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0] if math.isfinite(x) and abs(x) < 3.4e38 else x


def ulp_close(a, b):
    if a == b or (math.isnan(a) and math.isnan(b)):
        return True
    return abs(a - b) <= math.ulp(max(abs(a), abs(b)))


def py_answer_lr(spec, lr0, ts):
    try:
        s = schedules.parse(spec)
    except schedules.ScheduleError as e:
        return ("err", str(e))
    return ("ok", s.format(), [s.lr(float.fromhex(lr0) if "x" in lr0 else float(lr0), t) for t in ts])


def compare_lr(specs, ts_for, what):
    """Canonical forms, rates and errors of `specs` in both implementations.
    Returns (values compared, exact doubles, mismatch descriptions)."""
    lines, cases = [], []
    for spec in specs:
        for lr0 in LR0S:
            ts = ts_for(spec)
            lines.append("lr\t%s\t%s\t%s" % (spec, lr0, ",".join(map(str, ts))))
            cases.append((spec, lr0, ts))
    n = exact = 0
    bad = []
    for (spec, lr0, ts), cline in zip(cases, c_run(lines)):
        py = py_answer_lr(spec, lr0, ts)
        cf = cline.split("\t")
        if cf[0] != py[0]:
            bad.append("%r: C says %s, Python %s" % (spec, cline, py))
            continue
        if cf[0] == "err":
            if cf[1] != py[1]:
                bad.append("%r: C error %r, Python %r" % (spec, cf[1], py[1]))
            continue
        if cf[1] != py[1]:
            bad.append("%r: C canonical %r, Python %r" % (spec, cf[1], py[1]))
        cvals = [float.fromhex(v) for v in cf[2].split()] if cf[2] else []
        for t, cv, pv in zip(ts, cvals, py[2]):
            n += 1
            exact += cv == pv or (math.isnan(cv) and math.isnan(pv))
            if not ulp_close(cv, pv) or not (f32(cv) == f32(pv) or (math.isnan(cv) and math.isnan(pv))):
                bad.append("%r lr0=%s t=%d: C %r, Python %r" % (spec, lr0, t, cv, pv))
    return n, exact, bad


def report(what, n, exact, bad):
    if bad:
        C.bad("%s: %d mismatches, e.g. %s" % (what, len(bad), "; ".join(bad[:3])))
    else:
        C.ok("%s: %d rates equal as float32, %d of them bit-identical doubles" % (what, n, exact))


def kind_ts(spec):
    ts = list(EDGE_T)
    try:
        s = schedules.parse(spec)
    except schedules.ScheduleError:
        return ts
    # around every boundary the spec names: T, every, pieces, warmup, cycles
    marks = [s.warmup]
    for v in (s.T, s.every):
        if 0 < v < 1e6:
            marks += [s.warmup + int(v * k) for k in (1, 2, 3, 7)]
    marks += [s.warmup + at for at, _ in s.pieces if at < U64 - 2]
    if s.restart and s.T < 1e6:
        start, period = 0.0, s.T
        for _ in range(6):
            start += period
            period *= s.mult
            marks.append(s.warmup + int(start))
    for m in marks:
        ts += [x for x in (m - 1, m, m + 1) if 0 <= x <= U64]
    return sorted(set(ts))


# 1. every kind and its edge cases
n, exact, bad = compare_lr(VALID, kind_ts, "valid specs")
kinds = sorted({schedules.parse(s).kind for s in VALID})
C.check(kinds == sorted(schedules.KINDS), "the specs cover every kind", "missing %s" % (set(schedules.KINDS) - set(kinds)))
report("every kind (%d specs x %d rates lr0, t at edges)" % (len(VALID), len(LR0S)), n, exact, bad)

# 2. bad specs: the same message
lines = ["lr\t%s\t0.1\t0" % s for s in BAD]
bad = []
for spec, cline in zip(BAD, c_run(lines)):
    py = py_answer_lr(spec, "0.1", [0])
    if not cline.startswith("err\t"):
        bad.append("%r: C accepted it" % spec)
    elif py[0] != "err":
        bad.append("%r: Python accepted it" % spec)
    elif cline[4:] != py[1]:
        bad.append("%r: C %r, Python %r" % (spec, cline[4:], py[1]))
C.check(not bad, "%d bad specs: the same error message as C (e.g. %r)" % (len(BAD), py_answer_lr("exp:gama=0.9", "1", [0])[1]),
        "; ".join(bad[:4]))

# 3. local schedules: plateau refused with C's message
bad = []
for spec, cline in zip(LOCAL_ONLY, c_run(["local\t" + s for s in LOCAL_ONLY])):
    try:
        py = "ok\t" + schedules.parse_local(spec).format() + "\t"
    except schedules.ScheduleError as e:
        py = "err\t" + str(e)
    if py != cline:
        bad.append("%r: C %r, Python %r" % (spec, cline, py))
C.check(not bad, "parse_local refuses plateau as C does", "; ".join(bad))

# 4. plateau traces
lines, cases = [], []
for spec in PLATEAUS:
    for ms in METRICS:
        lines.append("plateau\t%s\t0.1\t%s" % (spec, ",".join(m.hex() if math.isfinite(m) else repr(m) for m in ms)))
        cases.append((spec, ms))
bad, steps = [], 0
for (spec, ms), cline in zip(cases, c_run(lines)):
    s = schedules.parse(spec)
    pl = schedules.Plateau()
    got = []
    for m in ms:
        r = pl.observe(s, m)
        got.append((s.lr(0.1, 0, pl), int(r)))
    want = [(float.fromhex(v.split("/")[0]), int(v.split("/")[1])) for v in cline.split("\t")[2].split()]
    steps += len(ms)
    if got != want:
        bad.append("%r on %r: C %r, Python %r" % (spec, ms, want, got))
C.check(not bad, "plateau: %d traces (%d observations, NaN/inf metrics, cooldown, min) equal C's bit for bit" % (len(cases), steps),
        "; ".join(bad[:2]))

# 5. random specs from the grammar's pieces (valid and not)
rng = random.Random(11)
NUMS = ["1", "2", "3", "0.5", "0.9", "0.99", "1.5", "10", "1e-3", "0x1p-2", "1e+2", "7", "0.25"]
ODD = ["0", "-1", "inf", "x", "", "1e", "+0.5", "nan"]
KEYS = list(schedules._KEY_TYPE) + ["bogus", "start"]


def random_spec():
    kind = rng.choice(list(schedules.KINDS) + ["cosine", "exponential", "nope", ""])
    parts = []
    if kind == "piecewise":
        at = 0
        for _ in range(rng.randint(0, 4)):
            at += rng.choice([0, 1, 2, 5])
            parts.append("%d=%s" % (at, rng.choice(NUMS + ODD[:2])))
    else:
        own = list(schedules._KIND_KEYS.get(kind, ((), (), ""))[0])
        for k in rng.sample(own, rng.randint(0, len(own))) + [rng.choice(KEYS)] * (rng.random() < 0.2):
            v = rng.choice(ODD if rng.random() < 0.15 else NUMS)
            if k in ("patience", "cooldown"):
                v = rng.choice(["0", "1", "2", "5", "1.5", "-1"])
            parts.append(k if schedules._KEY_TYPE.get(k) == "flag" and rng.random() < 0.9 else "%s=%s" % (k, v))
    spec = kind + (":" + ",".join(parts) if parts or rng.random() < 0.1 else "")
    if rng.random() < 0.3:
        spec = "warmup:%s%s+%s" % (rng.choice(["1", "3", "0", "x", ""]),
                                   rng.choice(["", ",start=0.5", ",start=2", ",start=0"]), spec)
    return spec


def rand_ts(spec):
    return sorted({rng.randint(0, 60) for _ in range(8)} | {0, rng.randint(0, U64)})


specs = [random_spec() for _ in range(3000)]
n, exact, bad = compare_lr(specs, rand_ts, "random specs")
valid = sum(1 for s in specs if py_answer_lr(s, "1", [0])[0] == "ok")
report("3000 random specs (%d valid, %d refused with C's message)" % (valid, len(specs) - valid), n, exact, bad)

# 6. the schedules a RoundStart carries are canonical: Python's canonical
# form parses back to the same schedule
bad = [s for s in VALID if schedules.parse(schedules.parse(s).format()) != schedules.parse(s)]
C.check(not bad, "canonical forms parse back to equal schedules", repr(bad))
sys.exit(1 if C.failed else 0)
