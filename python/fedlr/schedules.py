"""fedlr.schedules: fedlr's learning-rate schedules, in Python.

A port of ``common/fl_sched.c``: the same spec strings, the same error
messages for bad specs, and the same rates (computed in double precision with
the same operations, so equal to the C values; ``tests/it_py_sched.sh``
checks every kind against the C code). A client uses it to apply a round's
*local* schedule exactly as fedlr's built-in trainer does::

    sched = fedlr.schedules.parse_local(info.local_schedule)
    rate = sched.lr(info.lr, t)    # t: local epoch or step index (info.local_unit)

A schedule maps a time index ``t`` (0-based) and an initial rate ``lr0`` to a
rate. Specs::

    [warmup:W[,start=F]+]KIND[:key=value,...]

    const                               lr0
    linear:T=N[,end=0]                  lr0 -> end linearly over T, then end
    exp:gamma=G[,every=1][,staircase]   lr0 * G^(t/every)   (floor() if staircase)
    inv:T=N[,p=1][,staircase]           lr0 / (1 + t/T)^p   (floor(t/T) if staircase)
    poly:T=N[,power=1][,end=0]          (lr0-end)*(1-min(t,T)/T)^power + end
    step:gamma=G,every=N                lr0 * G^floor(t/every)
    piecewise:T1=F1,T2=F2,...           lr0 for t<T1, lr0*F1 for T1<=t<T2, ...
    cos:T=N[,min=0][,restart][,mult=1]  min + (lr0-min)(1+cos(pi*t/T))/2, then min;
                                        restart: SGDR warm restarts, period T, times mult
    plateau[:factor=0.1,patience=10,cooldown=0,min=0,threshold=1e-4]
                                        ReduceLROnPlateau (mode min, relative threshold)
    warmup:W[,start=F] (F default 1/W): for t < W, lr = inner(0) * (F + (1-F)*t/W);
                                        for t >= W, inner(t - W)

Aliases: constant, exponential, inverse-time, invtime, polynomial, cosine.
A plateau schedule's rate depends on a :class:`Plateau` state fed with the
evaluation loss (:meth:`Plateau.observe`); it cannot be a local schedule.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Tuple

__all__ = [
    "ScheduleError",
    "Schedule",
    "Plateau",
    "parse",
    "parse_local",
    "KINDS",
    "MAX_PIECES",
    "SPEC_MAX",
]

MAX_PIECES = 32  # FL_SCHED_MAX_PIECES
SPEC_MAX = 256  # FL_SCHED_SPEC_MAX: a spec is at most 255 bytes
KINDS = ("const", "linear", "exp", "inv", "poly", "step", "piecewise", "cos", "plateau")

_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1
_PI = 3.14159265358979323846
_KIND_LIST = "const, linear, exp, inv, poly, step, piecewise, cos, plateau"
_ALIASES = {
    "constant": "const",
    "exponential": "exp",
    "inverse-time": "inv",
    "invtime": "inv",
    "polynomial": "poly",
    "cosine": "cos",
}
# C's isspace() in the "C" locale.
_SPACE = " \t\n\v\f\r"
_DIGITS = "0123456789"

# Keys: (name, type) with type "flag", "real" or "uint32".
_KEY_TYPE = {
    "gamma": "real",
    "every": "real",
    "T": "real",
    "p": "real",
    "power": "real",
    "end": "real",
    "min": "real",
    "mult": "real",
    "staircase": "flag",
    "restart": "flag",
    "factor": "real",
    "patience": "uint32",
    "cooldown": "uint32",
    "threshold": "real",
}

# Per kind: keys in canonical order, required keys, example shown when one is missing.
_KIND_KEYS = {
    "const": ((), (), "const"),
    "linear": (("T", "end"), ("T",), "linear:T=100"),
    "exp": (("gamma", "every", "staircase"), ("gamma",), "exp:gamma=0.95"),
    "inv": (("T", "p", "staircase"), ("T",), "inv:T=100"),
    "poly": (("T", "power", "end"), ("T",), "poly:T=100"),
    "step": (("gamma", "every"), ("gamma", "every"), "step:gamma=0.1,every=30"),
    "piecewise": ((), (), "piecewise:30=0.1,60=0.01"),
    "cos": (("T", "min", "restart", "mult"), ("T",), "cos:T=100"),
    "plateau": (("factor", "patience", "cooldown", "min", "threshold"), (), "plateau"),
}


class ScheduleError(ValueError):
    """A bad schedule spec. The message is the one fedlr's C code gives,
    e.g. "schedule 'exp:gama=0.9': unknown key 'gama' for exp (keys: gamma,
    every, staircase)"."""


def _c_trunc(text: str, size: int) -> str:
    """What C's snprintf into a buffer of `size` bytes keeps of `text`."""
    b = text.encode("utf-8", "surrogateescape")
    if len(b) < size:
        return text
    return b[: size - 1].decode("utf-8", "replace")


def _bad(spec: str, detail: str) -> ScheduleError:
    # fl_sched.c: the detail goes through a 320-byte buffer, the whole
    # message through fl_err_set's 512 bytes.
    return ScheduleError(_c_trunc("schedule '%s': %s" % (spec, _c_trunc(detail, 320)), 512))


def _trim(s: str) -> str:
    return s.strip(_SPACE)


# strtod's grammar (decimal, hexadecimal, inf, nan), the whole string.
_DEC = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z", re.ASCII)
_HEX = re.compile(
    r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?\d+)?\Z", re.ASCII
)
_INF_NAN = re.compile(r"[+-]?(?:inf|infinity|nan(?:\([0-9A-Za-z_]*\))?)\Z", re.IGNORECASE)


def _strtod(text: str) -> Optional[float]:
    """C's strtod over the whole string, or None if it does not consume all
    of it (leading blanks are skipped, as strtod does)."""
    s = text.lstrip(_SPACE)
    if _DEC.match(s):
        # An exponent past the double range parses in C to inf or 0, as here.
        return float(s)
    if _HEX.match(s):
        sign = -1.0 if s[0] == "-" else 1.0
        body = s.lstrip("+-")
        if "p" not in body.lower():
            body += "p0"
        try:
            return sign * float.fromhex(body)
        except OverflowError:
            return sign * math.inf
    if _INF_NAN.match(s):
        neg = s[0] == "-"
        v = math.nan if "n" == s.lstrip("+-")[0].lower() else math.inf
        return -v if neg else v
    return None


def _parse_real(text: str) -> Tuple[int, float]:
    """(0, v), or (-1, 0) if not a number, (-2, 0) if not finite."""
    v = _strtod(text)
    if v is None or text == "":
        return -1, 0.0
    if not math.isfinite(v):
        return -2, 0.0
    return 0, v + 0.0


def _parse_uint(text: str, maximum: int) -> Optional[int]:
    """Decimal digits only (no sign, no blanks), at most `maximum`."""
    if not text:
        return None
    v = 0
    for c in text:
        if c not in _DIGITS:
            return None
        d = ord(c) - 48
        if v > (maximum - d) // 10:
            return None
        v = v * 10 + d
    return v


def _range_error(key: str, v: float) -> Optional[str]:
    if key in ("gamma", "every", "T", "p", "power"):
        return None if v > 0 else "must be > 0"
    if key in ("end", "min"):
        return None if v >= 0 else "must be >= 0"
    if key == "mult":
        return None if v >= 1 else "must be >= 1"
    if key == "factor":
        return None if 0 < v < 1 else "must be in (0, 1)"
    if key == "threshold":
        return None if 0 <= v < 1 else "must be in [0, 1)"
    return None


def _key_list(kind: str) -> str:
    keys = _KIND_KEYS[kind][0]
    if not keys:
        return "%s takes no keys" % kind
    return "keys: " + ", ".join(keys)


def _real_text(v: float) -> str:
    """Shortest of %.15g / %.17g that reads back as exactly v (fl_sched.c)."""
    s = "%.15g" % v
    if float(s) != v:
        s = "%.17g" % v
    return s


def _pow(x: float, y: float) -> float:
    # C's pow() overflows to inf where math.pow raises.
    try:
        return math.pow(x, y)
    except OverflowError:
        return math.inf
    except ValueError:
        return math.nan


def _cos(x: float) -> float:
    return math.cos(x) if math.isfinite(x) else math.nan


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: a plain value, as ``fl_sched_t``. Build one with
    :func:`parse` (or :func:`parse_local`); ``str(s)`` is its canonical spec,
    which parses back to an equal schedule."""

    kind: str = "const"
    gamma: float = 0.0
    every: float = 0.0
    T: float = 0.0
    p: float = 0.0  # inv exponent; poly power
    end: float = 0.0
    min: float = 0.0
    mult: float = 0.0
    staircase: bool = False
    restart: bool = False
    factor: float = 0.0
    threshold: float = 0.0
    patience: int = 0
    cooldown: int = 0
    pieces: Tuple[Tuple[int, float], ...] = ()  # piecewise: (boundary, factor), ascending
    warmup: int = 0  # 0 = no warmup
    warmup_start: float = 0.0

    # ---- rates ----

    def lr(self, lr0: float, t: int, plateau: Optional["Plateau"] = None) -> float:
        """The rate at time ``t`` (an int >= 0) for initial rate ``lr0``, in
        double precision, as ``fl_sched_lr``. ``plateau`` is a plateau
        schedule's state (None: scale 1)."""
        t = int(t)
        if t < 0 or t > _UINT64_MAX:
            raise ValueError("t=%d: a schedule's time index is 0 .. 2^64-1" % t)
        lr0 = float(lr0)
        if t < self.warmup:
            f = self.warmup_start
            return self._inner(lr0, 0, plateau) * (f + (1 - f) * float(t) / float(self.warmup))
        return self._inner(lr0, t - self.warmup, plateau)

    def _cycle_start(self, n: float) -> float:
        return self.T * (_pow(self.mult, n) - 1) / (self.mult - 1)

    def _cos_lr(self, lr0: float, t: float) -> float:
        cur, period = t, self.T
        if not self.restart:
            if t >= self.T:
                return self.min
        elif self.mult == 1:
            cur = math.fmod(t, self.T)
        else:
            # PyTorch's closed form, then move n by one where rounding put t
            # on the wrong side of a cycle boundary.
            n = float(math.floor(math.log1p(t * (self.mult - 1) / self.T) / math.log(self.mult)))
            while n > 0 and self._cycle_start(n) > t:
                n -= 1
            while self._cycle_start(n + 1) <= t:
                n += 1
            cur = t - self._cycle_start(n)
            period = self.T * _pow(self.mult, n)
        return self.min + (lr0 - self.min) * (1 + _cos(_PI * cur / period)) / 2

    def _inner(self, lr0: float, step: int, pl: Optional["Plateau"]) -> float:
        t = float(step)
        k = self.kind
        if k == "const":
            return lr0
        if k == "linear":
            if t >= self.T:
                return self.end
            return lr0 + (self.end - lr0) * (t / self.T)
        if k == "exp":
            e = t / self.every
            return lr0 * _pow(self.gamma, float(math.floor(e)) if self.staircase else e)
        if k == "inv":
            e = t / self.T
            return lr0 / _pow(1 + (float(math.floor(e)) if self.staircase else e), self.p)
        if k == "poly":
            return (lr0 - self.end) * _pow(1 - min(t, self.T) / self.T, self.p) + self.end
        if k == "step":
            return lr0 * _pow(self.gamma, float(math.floor(t / self.every)))
        if k == "piecewise":
            f = 1.0
            for at, factor in self.pieces:
                if step < at:
                    break
                f = factor
            return lr0 * f
        if k == "cos":
            return self._cos_lr(lr0, t)
        if k == "plateau":
            a = lr0 * (pl.scale if pl is not None else 1.0)
            # C's fmax: a NaN operand yields the other.
            if math.isnan(a):
                return self.min
            return a if a >= self.min else self.min
        return lr0

    # ---- text ----

    def format(self) -> str:
        """The canonical spec, every value written out (``fl_sched_format``)."""
        out = []
        if self.warmup:
            out.append("warmup:%d,start=%s+" % (self.warmup, _real_text(self.warmup_start)))
        out.append(self.kind)
        if self.kind == "piecewise":
            for i, (at, f) in enumerate(self.pieces[:MAX_PIECES]):
                out.append("%s%d=%s" % ("," if i else ":", at, _real_text(f)))
        for i, key in enumerate(_KIND_KEYS[self.kind][0]):
            sep = ":" if i == 0 else ","
            if key == "staircase":
                if self.staircase:
                    out.append(sep + "staircase")
            elif key == "restart":
                if self.restart:
                    out.append(sep + "restart")
            elif key == "mult":
                if self.restart:
                    out.append("%smult=%s" % (sep, _real_text(self.mult)))
            elif key in ("patience", "cooldown"):
                out.append("%s%s=%d" % (sep, key, getattr(self, key)))
            else:
                attr = "p" if key == "power" else key
                out.append("%s%s=%s" % (sep, key, _real_text(getattr(self, attr))))
        return "".join(out)

    def __str__(self) -> str:
        return self.format()


@dataclass
class Plateau:
    """The mutable state of a plateau schedule (``fl_plateau_t``): feed it
    one evaluation loss per round with :meth:`observe`, pass it to
    :meth:`Schedule.lr`."""

    best: float = math.inf
    scale: float = 1.0
    num_bad: int = 0
    cooldown_left: int = 0

    def observe(self, schedule: Schedule, metric: float) -> bool:
        """Feeds one metric (lower is better), in the order of
        torch.optim.lr_scheduler.ReduceLROnPlateau.step (mode 'min',
        threshold_mode 'rel'). True if the rate was reduced. No-op for other
        kinds."""
        if schedule.kind != "plateau":
            return False
        metric = float(metric)
        if math.isfinite(metric) and metric < self.best * (1 - schedule.threshold):
            self.best = metric
            self.num_bad = 0
        elif self.num_bad < _UINT32_MAX:
            self.num_bad += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.num_bad = 0
        if self.num_bad > schedule.patience:
            self.scale *= schedule.factor
            self.cooldown_left = schedule.cooldown
            self.num_bad = 0
            return True
        return False


# ---- parsing ----


def _defaults(kind: str) -> dict:
    if kind == "exp":
        return {"every": 1.0}
    if kind in ("inv", "poly"):
        return {"p": 1.0}
    if kind == "cos":
        return {"mult": 1.0}
    if kind == "plateau":
        return {"factor": 0.1, "patience": 10, "threshold": 1e-4}
    return {}


def _next_option(rest: Optional[str]) -> Tuple[str, Optional[str]]:
    """Cuts the next ','-separated option off `rest` (None after the last)."""
    comma = rest.find(",")
    if comma < 0:
        return _trim(rest), None
    return _trim(rest[:comma]), rest[comma + 1 :]


def _parse_pieces(spec: str, opts: str, f: dict) -> None:
    pieces = []
    cursor: Optional[str] = opts
    while cursor is not None:
        opt, cursor = _next_option(cursor)
        if not opt:
            raise _bad(spec, "empty piece for piecewise (stray ',' or ':')")
        if len(pieces) == MAX_PIECES:
            raise _bad(spec, "more than %d pieces" % MAX_PIECES)
        eq = opt.find("=")
        if eq < 0:
            raise _bad(spec, "piece '%s' needs a factor (%s=F)" % (opt, opt))
        at_text, val = _trim(opt[:eq]), _trim(opt[eq + 1 :])
        at = _parse_uint(at_text, _UINT64_MAX)
        if at is None:
            raise _bad(
                spec,
                "boundary '%s' is not a whole number (piecewise takes T1=F1,T2=F2,...)" % at_text,
            )
        if pieces:
            prev = pieces[-1][0]
            if at == prev:
                raise _bad(spec, "duplicate boundary %s" % at_text)
            if at < prev:
                raise _bad(
                    spec,
                    "boundary %s is not after %d (boundaries must be strictly ascending)"
                    % (at_text, prev),
                )
        rc, fv = _parse_real(val)
        if rc == -1:
            raise _bad(spec, "factor '%s' at boundary %s is not a number" % (val, at_text))
        if rc == -2:
            raise _bad(spec, "factor '%s' at boundary %s is not finite" % (val, at_text))
        if fv < 0:
            raise _bad(
                spec, "factor %s at boundary %s is out of range (must be >= 0)" % (val, at_text)
            )
        pieces.append((at, fv))
    f["pieces"] = tuple(pieces)


def _parse_option(spec: str, kind: str, opt: str, f: dict, seen: set) -> None:
    if not opt:
        raise _bad(spec, "empty option for %s (stray ',' or ':')" % kind)
    eq = opt.find("=")
    val = None
    if eq >= 0:
        val = _trim(opt[eq + 1 :])
        opt = opt[:eq]
    key = _trim(opt)
    if not key:
        raise _bad(spec, "missing key before '=%s'" % val)
    if key not in _KIND_KEYS[kind][0]:
        raise _bad(spec, "unknown key '%s' for %s (%s)" % (key, kind, _key_list(kind)))
    if key in seen:
        raise _bad(spec, "duplicate key '%s'" % key)
    seen.add(key)
    ktype = _KEY_TYPE[key]
    if ktype == "flag":
        if val is not None:
            raise _bad(
                spec,
                "'%s' is a flag and takes no value (write '%s', not '%s=%s')" % (key, key, key, val),
            )
        f[key] = True
        return
    if val is None:
        raise _bad(spec, "key '%s' needs a value (%s=...)" % (key, key))
    if not val:
        raise _bad(spec, "empty value for '%s'" % key)
    if ktype == "uint32":
        u = _parse_uint(val, _UINT32_MAX)
        if u is None:
            raise _bad(
                spec, "%s '%s' must be a whole number in [0, %d]" % (key, val, _UINT32_MAX)
            )
        f[key] = u
        return
    rc, v = _parse_real(val)
    if rc == -1:
        raise _bad(spec, "value '%s' for %s is not a number" % (val, key))
    if rc == -2:
        raise _bad(spec, "value '%s' for %s is not finite" % (val, key))
    why = _range_error(key, v)
    if why:
        raise _bad(spec, "%s=%s is out of range (%s)" % (key, val, why))
    f["p" if key == "power" else key] = v


def _parse_kind(spec: str, piece: str, f: dict) -> None:
    colon = piece.find(":")
    name = _trim(piece[:colon] if colon >= 0 else piece)
    if not name:
        raise _bad(spec, "missing schedule kind (kinds: %s)" % _KIND_LIST)
    kind = name if name in _KIND_KEYS else _ALIASES.get(name)
    if kind is None:
        raise _bad(spec, "unknown kind '%s' (kinds: %s)" % (name, _KIND_LIST))
    f["kind"] = kind
    f.update(_defaults(kind))
    if kind == "piecewise":
        if colon < 0:
            raise _bad(
                spec,
                "piecewise needs at least one boundary (e.g. '%s')" % _KIND_KEYS[kind][2],
            )
        _parse_pieces(spec, piece[colon + 1 :], f)
        return
    seen: set = set()
    cursor: Optional[str] = piece[colon + 1 :] if colon >= 0 else None
    while cursor is not None:
        opt, cursor = _next_option(cursor)
        _parse_option(spec, kind, opt, f, seen)
    keys, required, example = _KIND_KEYS[kind]
    for key in keys:
        if key in required and key not in seen:
            raise _bad(
                spec, "missing required key '%s' for %s (e.g. '%s')" % (key, kind, example)
            )
    if "mult" in seen and not f.get("restart"):
        raise _bad(spec, "'mult' needs 'restart' (e.g. 'cos:T=10,restart,mult=2')")


def _parse_warmup(spec: str, piece: str, f: dict) -> None:
    colon = piece.find(":")
    if colon < 0:
        raise _bad(spec, "warmup needs a length (e.g. 'warmup:5+const')")
    w, cursor = _next_option(piece[colon + 1 :])
    if not w or "=" in w:
        raise _bad(spec, "warmup needs its length first (warmup:W[,start=F])")
    W = _parse_uint(w, _UINT64_MAX)
    if W is None or W == 0:
        raise _bad(spec, "warmup length '%s' must be a whole number >= 1" % w)
    f["warmup"] = W
    f["warmup_start"] = 1.0 / float(W)
    have_start = False
    while cursor is not None:
        opt, cursor = _next_option(cursor)
        if not opt:
            raise _bad(spec, "empty option for warmup (stray ',')")
        eq = opt.find("=")
        val = None
        if eq >= 0:
            val = _trim(opt[eq + 1 :])
            opt = opt[:eq]
        key = _trim(opt)
        if key != "start":
            raise _bad(spec, "unknown key '%s' for warmup (keys: start)" % key)
        if have_start:
            raise _bad(spec, "duplicate key 'start'")
        have_start = True
        if val is None:
            raise _bad(spec, "key 'start' needs a value (start=...)")
        rc, fv = _parse_real(val)
        if rc == -1:
            raise _bad(spec, "value '%s' for start is not a number" % val)
        if rc == -2:
            raise _bad(spec, "value '%s' for start is not finite" % val)
        if fv < 0 or fv > 1:
            raise _bad(spec, "start=%s is out of range (must be in [0, 1])" % val)
        f["warmup_start"] = fv


def _plus_is_sign(s: str, i: int) -> bool:
    """A '+' is a sign after '=' or an exponent sign ("1e+3"); any other '+'
    joins warmup to its schedule."""
    j = i
    while j > 0 and s[j - 1] in _SPACE:
        j -= 1
    if j > 0 and s[j - 1] == "=":
        return True
    nxt = s[i + 1] if i + 1 < len(s) else ""
    return (
        i >= 2
        and s[i - 1] in "eE"
        and (s[i - 2] in _DIGITS or s[i - 2] == ".")
        and nxt != ""
        and nxt in _DIGITS
    )


def _has_name(piece: str, name: str) -> bool:
    p = piece.lstrip(_SPACE)
    if not p.startswith(name):
        return False
    p = p[len(name) :].lstrip(_SPACE)
    return p == "" or p[0] in ":+"


def _parse_spec(spec: str, f: dict) -> None:
    text = _trim(spec)
    if not text:
        f["kind"] = "const"
        return
    plus = [i for i, c in enumerate(text) if c == "+" and not _plus_is_sign(text, i)]
    if not plus:
        if _has_name(text, "warmup"):
            raise _bad(spec, "warmup needs a schedule after '+' (e.g. 'warmup:5+const')")
        _parse_kind(spec, text, f)
        return
    head, tail = _trim(text[: plus[0]]), _trim(text[plus[0] + 1 :])
    if not head:
        raise _bad(
            spec, "nothing before '+' (syntax: [warmup:W[,start=F]+]KIND[:key=value,...])"
        )
    if not _has_name(head, "warmup"):
        raise _bad(spec, "only warmup:W[,start=F] may come before '+', not '%s'" % head)
    if not tail:
        raise _bad(spec, "missing schedule after '+' (e.g. 'warmup:5+const')")
    if _has_name(tail, "warmup"):
        raise _bad(spec, "warmup cannot be nested (only one 'warmup:W+' prefix)")
    if len(plus) > 1:
        raise _bad(
            spec, "more than one '+' (syntax: [warmup:W[,start=F]+]KIND[:key=value,...])"
        )
    _parse_warmup(spec, head, f)
    _parse_kind(spec, tail, f)


def parse(spec: Optional[str]) -> Schedule:
    """Parses a schedule spec (None or "" is const). Raises
    :class:`ScheduleError` naming the bad part, with fedlr's own message."""
    if spec is None:
        return Schedule()
    if not isinstance(spec, str):
        raise TypeError("a schedule spec is a str, not %s" % type(spec).__name__)
    raw = spec.encode("utf-8", "surrogateescape")
    if b"\0" in raw:
        # C reads the spec up to its first NUL.
        spec = raw[: raw.index(b"\0")].decode("utf-8", "surrogateescape")
        raw = raw[: raw.index(b"\0")]
    if len(raw) >= SPEC_MAX:
        head = raw[:40].decode("utf-8", "replace")
        raise ScheduleError("schedule '%s...': longer than %d characters" % (head, SPEC_MAX - 1))
    f: dict = {}
    _parse_spec(spec, f)
    return Schedule(**f)


def parse_local(spec: Optional[str]) -> Schedule:
    """Parses a *local* schedule (within a round, over local epochs or
    steps): :func:`parse`, and plateau is refused (it follows the evaluation
    loss, which exists once per round). A client runs this on every
    RoundStart's ``local_schedule``."""
    s = parse(spec)
    if s.kind == "plateau":
        raise ScheduleError(
            _c_trunc(
                "schedule '%s': plateau follows the evaluation loss, which exists once per "
                "round, so it cannot be a local schedule (it is a round schedule, --schedule)"
                % spec,
                512,
            )
        )
    return s
