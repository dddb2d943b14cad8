"""fedlr.keys: CurveZMQ key files made by ``fedlr-keygen``.

``fedlr-keygen PATH`` writes ``PATH.key`` (the public key, to give to the
other side) and ``PATH.key_secret`` (the pair, mode 0600), in CZMQ's
certificate format::

    metadata
        name = "alice"
    curve
        public-key = "<40 Z85 characters>"
        secret-key = "<40 Z85 characters>"      (only in .key_secret)

The reading rules are fedlr's (``common/fl_keys.c``): sections ``metadata``
and ``curve`` only, 4-space indented ``name = "value"`` lines, ``#``
comments; a secret file that its group or others may read is refused (as
ssh does), a public file must not hold a secret key, and the public key must
belong to the secret one. Errors name the file and line.
"""

from __future__ import annotations

import os
import stat
from typing import Tuple

__all__ = ["KeyFileError", "load_secret", "load_public", "Z85_LEN"]

Z85_LEN = 40
_Z85 = set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")
_MAX_FILE = 64 << 10


class KeyFileError(ValueError):
    """A key or key file fedlr cannot use (the message says why)."""


def _is_z85_key(s: str) -> bool:
    return len(s) == Z85_LEN and all(c in _Z85 for c in s)


def _check_decodes(z85: str) -> bool:
    import zmq.utils.z85

    try:
        return len(zmq.utils.z85.decode(z85)) == 32
    except (ValueError, KeyError):
        return False


def _read(path: str, secret: bool) -> str:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError("'%s' is not a regular file" % path)
    if secret and st.st_mode & 0o077:
        raise KeyFileError(
            "%s: permissions %04o are too open: a secret key must be readable by its owner only "
            "(chmod 600 %s)" % (path, st.st_mode & 0o7777, path)
        )
    if st.st_size > _MAX_FILE:
        raise KeyFileError("%s: %d bytes, a key file is at most %d" % (path, st.st_size, _MAX_FILE))
    with open(path, "rb") as f:
        raw = f.read(_MAX_FILE + 1)
    if b"\0" in raw:
        raise KeyFileError("%s: contains a NUL byte" % path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileError("%s: not UTF-8 text" % path) from None


def _parse(path: str, text: str, want_secret: bool) -> Tuple[str, str]:
    section = None
    public = secret = ""
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.rstrip(" \r\t")
        body = line.lstrip(" ")
        indent = len(line) - len(body)
        if not body or body[0] == "#":
            continue
        if body[0] == "\t":
            raise KeyFileError("%s:%d: indent with spaces, not tabs" % (path, lineno))
        if indent == 0:
            if line not in ("metadata", "curve"):
                raise KeyFileError("%s:%d: unknown section '%s' (metadata or curve)" % (path, lineno, line[:40]))
            section = line
            continue
        name, eq, value = body.partition("=")
        name = name.rstrip(" ")
        if not eq or " " in name:
            raise KeyFileError("%s:%d: expected 'name = \"value\"'" % (path, lineno))
        value = value.strip(" ")
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            value = value[1:-1]
        if section is None:
            raise KeyFileError("%s:%d: '%s' outside a section" % (path, lineno, name))
        if section == "metadata":
            continue
        if name == "public-key":
            if public:
                raise KeyFileError("%s:%d: 'public-key' repeated" % (path, lineno))
        elif name == "secret-key":
            if not want_secret:
                raise KeyFileError(
                    "%s:%d: this file holds a secret key: give the public .key file, and keep "
                    "the secret one private" % (path, lineno)
                )
            if secret:
                raise KeyFileError("%s:%d: 'secret-key' repeated" % (path, lineno))
        else:
            raise KeyFileError("%s:%d: unknown key '%s' in section curve" % (path, lineno, name))
        if not _is_z85_key(value):
            raise KeyFileError("%s:%d: %s is not %d Z85 characters" % (path, lineno, name, Z85_LEN))
        if not _check_decodes(value):
            raise KeyFileError("%s:%d: %s is not valid Z85" % (path, lineno, name))
        if name == "public-key":
            public = value
        else:
            secret = value
    if not public:
        raise KeyFileError("%s: no curve public-key" % path)
    if want_secret:
        import zmq

        if not secret:
            raise KeyFileError("%s: no curve secret-key" % path)
        if zmq.curve_public(secret.encode()).decode() != public:
            raise KeyFileError("%s: public-key does not belong to secret-key" % path)
    return public, secret


def load_secret(path: str) -> Tuple[str, str]:
    """(public, secret) Z85 keys from a ``.key_secret`` file."""
    return _parse(path, _read(path, True), True)


def load_public(key_or_path: str) -> str:
    """A public key given as 40 Z85 characters, or the public key of a
    ``.key`` file."""
    if not key_or_path:
        raise KeyFileError("no public key given")
    named_file = key_or_path.endswith(".key") or key_or_path.endswith(".key_secret")
    if not named_file and _is_z85_key(key_or_path) and not os.path.exists(key_or_path):
        if not _check_decodes(key_or_path):
            raise KeyFileError("a key is not valid Z85")
        return key_or_path
    try:
        text = _read(key_or_path, False)
    except FileNotFoundError:
        raise KeyFileError("'%s' is neither a file nor a %d-character Z85 key" % (key_or_path, Z85_LEN)) from None
    return _parse(key_or_path, text, False)[0]
