# The server optimizers (common/fl_server_optim.c, through
# tests/tools/fl_sopt_dump) against torch.optim (SGD with momentum, Adagrad)
# and against Reddi et al.'s Algorithm 2 in float64 for FedAdam and FedYogi
# (python/tests/test_server_optim_torch.py).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib_py.sh"

DUMP="$BUILD/tests/fl_sopt_dump"
[ -x "$DUMP" ] || { bad "$DUMP is missing (built with the tests)"; finish; exit 1; }
need_py numpy torch
py_checks "python/tests/test_server_optim_torch.py" "$PY" "$SRC/python/tests/test_server_optim_torch.py" "$DUMP"
finish
