"""fedlr.safetensors: read and write safetensors files in pure Python + numpy.

The format (https://huggingface.co/docs/safetensors): an 8-byte
little-endian header length, a JSON header ``{"__metadata__": {str: str},
NAME: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...}``
padded with spaces to 8 bytes, then the raw little-endian data. This is
what fedlr writes (``--out DIR/model.safetensors``, checkpoints) and what
``fedlr-coordinator --init FILE`` reads, so an application can export its
initial model and load the trained one without extra packages::

    fedlr.safetensors.save("init.safetensors", {"conv1.weight": w, ...})
    tensors, metadata = fedlr.safetensors.load("run/model.safetensors")

fedlr's checksum: every file fedlr writes carries the metadata entry
``fedlr_crc32``, the CRC-32 (zlib's, as ``zlib.crc32``) of the whole file
computed with the entry's own 8 hex digits read as "00000000". :func:`save`
writes it, :func:`load` verifies it when present (and requires it with
``require_checksum=True``). Only float32 (``F32``) tensors: fedlr's models
are float32.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import tempfile
import zlib
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

__all__ = ["SafetensorsError", "save", "load", "CHECKSUM_KEY", "MAX_HEADER"]

CHECKSUM_KEY = "fedlr_crc32"
MAX_HEADER = 16 << 20  # bytes of JSON header accepted (fedlr's C reader takes 1 MiB)
_PLACEHOLDER = "00000000"
_CRC_RE = re.compile(rb'"fedlr_crc32"\s*:\s*"([0-9a-f]{8})"')


class SafetensorsError(ValueError):
    """A file that is not a valid (fedlr-readable) safetensors file."""


def save(path: str, tensors: Mapping[str, "np.typing.ArrayLike"],
         metadata: Optional[Mapping[str, str]] = None) -> None:
    """Writes ``tensors`` (name -> array, converted to float32, in the
    mapping's order) to ``path`` atomically (a temporary file in the same
    directory, fsync'd, then renamed), with ``metadata`` and the
    ``fedlr_crc32`` checksum."""
    meta = dict(metadata or {})
    if CHECKSUM_KEY in meta:
        raise ValueError("metadata key '%s' is reserved (it is the file's checksum)" % CHECKSUM_KEY)
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError("metadata keys and values are str (got %r: %r)" % (k, v))
    meta[CHECKSUM_KEY] = _PLACEHOLDER
    header: Dict[str, object] = {"__metadata__": meta}
    arrays = []
    off = 0
    for name, a in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError("bad tensor name %r" % (name,))
        arr = np.asarray(a, dtype="<f4")
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + arr.nbytes]}
        off += arr.nbytes
        arrays.append(arr)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    text += b" " * (-len(text) % 8)
    if len(text) > MAX_HEADER:
        raise ValueError("the header would be %d bytes, more than %d" % (len(text), MAX_HEADER))
    head = struct.pack("<Q", len(text)) + text
    crc = zlib.crc32(head)
    for arr in arrays:
        crc = zlib.crc32(memoryview(arr).cast("B"), crc)
    at = head.index(b'"%s":"%s"' % (CHECKSUM_KEY.encode(), _PLACEHOLDER.encode())) + len(CHECKSUM_KEY) + 4
    head = head[:at] + b"%08x" % crc + head[at + 8:]
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(head)
            for arr in arrays:
                f.write(memoryview(arr).cast("B"))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load(path: str, require_checksum: bool = False) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Reads ``path``: (tensors, metadata). Tensors are float32 arrays in
    file order (fedlr writes them in its layout order), read-only views of
    the file's bytes; metadata without the checksum entry. A checksum entry
    must match the content ("checksum mismatch: the file is corrupt");
    ``require_checksum`` refuses a file without one. Raises
    :class:`SafetensorsError` naming what is wrong, OSError if unreadable."""
    if not os.path.isfile(path):
        if os.path.exists(path):
            raise SafetensorsError("'%s' is not a regular file" % path)
        raise FileNotFoundError("'%s': no such file" % path)
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise SafetensorsError("'%s': %d bytes, too short for a safetensors file" % (path, len(data)))
    (n,) = struct.unpack_from("<Q", data)
    if n > MAX_HEADER or 8 + n > len(data):
        raise SafetensorsError("'%s': header length %d is beyond the file (%d bytes) or the limit %d" % (path, n, len(data), MAX_HEADER))
    text = data[8:8 + n]
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, ValueError) as e:
        raise SafetensorsError("'%s': bad JSON header: %s" % (path, e)) from None
    if not isinstance(header, dict):
        raise SafetensorsError("'%s': the header is not a JSON object" % path)
    meta = header.pop("__metadata__", {}) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise SafetensorsError("'%s': __metadata__ must map strings to strings" % path)
    if CHECKSUM_KEY in meta:
        found = list(_CRC_RE.finditer(text))
        if len(found) != 1 or found[0].group(1).decode() != meta[CHECKSUM_KEY]:
            raise SafetensorsError("'%s': malformed %s entry" % (path, CHECKSUM_KEY))
        at = 8 + found[0].start(1)
        crc = zlib.crc32(data[:at])
        crc = zlib.crc32(_PLACEHOLDER.encode(), crc)
        crc = zlib.crc32(memoryview(data)[at + 8:], crc)
        if "%08x" % crc != meta[CHECKSUM_KEY]:
            raise SafetensorsError("'%s': checksum mismatch: the file is corrupt" % path)
        del meta[CHECKSUM_KEY]
    elif require_checksum:
        raise SafetensorsError("'%s': no %s entry (written by another tool or an older fedlr, or damaged)" % (path, CHECKSUM_KEY))
    base = 8 + n
    size = len(data) - base
    entries = []
    for name, e in header.items():
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError("'%s': tensor '%s' needs exactly dtype, shape and data_offsets" % (path, name))
        if e["dtype"] != "F32":
            raise SafetensorsError("'%s': tensor '%s' is %s: fedlr models are float32 (F32)" % (path, name, e["dtype"]))
        shape, offs = e["shape"], e["data_offsets"]
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
                or not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)):
            raise SafetensorsError("'%s': tensor '%s' has a bad shape or data_offsets" % (path, name))
        b, end = offs
        if not 0 <= b <= end <= size or end - b != 4 * math.prod(shape):
            raise SafetensorsError("'%s': tensor '%s' shape %s does not fit data_offsets %s (data section %d bytes)" % (path, name, shape, offs, size))
        entries.append((b, end, name, tuple(shape)))
    entries.sort()
    for (b0, e0, n0, _), (b1, _, n1, _) in zip(entries, entries[1:]):
        if b1 < e0:
            raise SafetensorsError("'%s': tensors '%s' and '%s' overlap" % (path, n0, n1))
    view = memoryview(data)
    tensors = {name: np.frombuffer(view, dtype="<f4", count=(e - b) // 4, offset=base + b).reshape(shape)
               for b, e, name, shape in entries}
    return tensors, meta
