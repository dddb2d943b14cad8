# fedlr.torch.Trainer trains as fedlr's built-in trainer does
# (python/tests/test_torch_vs_c.py): for every optimizer kind, local
# schedules per step and per epoch, weight decay and keep_state across
# rounds, FedProx (--prox-mu) too, a Python client and a fedlr-client on
# the same CSV data end with the same model up to float rounding; and
# Trainer's FedProx step is autograd's on loss + mu/2 ||w - w_global||^2.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib_py.sh"
need_py numpy zmq google.protobuf torch
py_checks "python/tests/test_torch_vs_c.py" "$PY" "$SRC/python/tests/test_torch_vs_c.py" "$BUILD" "$TMP"
finish
