# The Python package's parts on their own (python/tests/test_unit.py): the
# committed fedlr_pb2.py is protoc's output for proto/fedlr.proto, the codec
# (zero-copy tensors, every check of a coordinator's messages), safetensors
# files (fedlr-sim's, corrupt ones), fedlr-keygen key files, and installing
# with pip (offline) and with cmake --install.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib_py.sh"
need_py numpy zmq google.protobuf
export FEDLR_DATA_DIR="$DATA_DIR"
py_checks "python/tests/test_unit.py" "$PY" "$SRC/python/tests/test_unit.py" "$BUILD" "$TMP"
finish
