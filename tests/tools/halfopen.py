#!/usr/bin/env python3
"""Half-open connections for tests/it_net_curve.sh.

    halfopen.py HOST PORT LIMIT_SEC

Opens two TCP connections to HOST:PORT: one sends nothing, one sends only
the first 10 bytes of a ZMTP 3 greeting. Prints "opened" once both are up,
then, for each, "closed NAME after S s" when the peer closes it, or "held
NAME for LIMIT s" if it is still open after LIMIT_SEC. Exit 0 if the peer
closed both, 1 otherwise."""
import socket
import sys
import time

host, port, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
conns = {}
for name, payload in (("silent", b""), ("partial-greeting", b"\xff" + b"\0" * 8 + b"\x7f")):
    s = socket.create_connection((host, port), timeout=5)
    if payload:
        s.sendall(payload)
    conns[name] = (s, time.monotonic())
print("opened", flush=True)
closed = 0
for name, (s, t0) in conns.items():
    deadline = t0 + limit
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            print(f"held {name} for {limit:g} s", flush=True)
            break
        s.settimeout(left)
        try:
            data = s.recv(4096)  # the greeting the peer may send, then EOF
        except socket.timeout:
            continue
        except OSError:
            data = b""
        if not data:
            print(f"closed {name} after {time.monotonic() - t0:.2f} s", flush=True)
            closed += 1
            break
    s.close()
sys.exit(0 if closed == len(conns) else 1)
