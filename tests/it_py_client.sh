# fedlr.Client's session against real coordinators (python/tests/test_session.py):
# a train() longer than --client-timeout (heartbeats from the I/O thread),
# a retried round (attempt echoed), a superseded round not sent, Evaluate
# answered (also after a train() it arrived during), refused Joins (slot,
# protocol version, model layout), give_up, CurveZMQ admission and
# refusals, a coordinator killed and resumed, and FedProx (a version 3
# session hands train() the run's prox_mu; a version 2 client is refused).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib_py.sh"
need_py numpy zmq google.protobuf
py_checks "python/tests/test_session.py" "$PY" "$SRC/python/tests/test_session.py" "$BUILD" "$TMP"
finish
