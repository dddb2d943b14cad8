# Local input files of the three programs: what is not a regular file is
# refused at once, saying what it is (a device would be read forever, a
# FIFO without a writer would block), except that --config also takes a
# pipe; sizes are bounded; IDX headers that promise more than the file can
# hold are refused before the data is read.
source "$(dirname "$0")/lib.sh"

# quick_fail DESC WANT CMD...: expect_fail, within 5 seconds (a hang is cut
# off at 60).
quick_fail() {
  local desc=$1 want=$2 t0 t1
  shift 2
  t0=$(date +%s%N)
  expect_fail "$desc" "$want" timeout 60 "$@"
  t1=$(date +%s%N)
  local ms=$(((t1 - t0) / 1000000))
  [ $ms -lt 5000 ] && ok "$desc: refused in $ms ms" || bad "$desc: took $ms ms"
}

# ---- --config ----
quick_fail "--config /dev/zero" "--config: '/dev/zero' is a character device, expected a regular file or a pipe" \
  "$SIM" --config /dev/zero
mkdir "$TMP/dir.ini"
quick_fail "--config DIR" "--config: '$TMP/dir.ini' is a directory, expected a regular file or a pipe" \
  "$SIM" --config "$TMP/dir.ini"
quick_fail "--config endless pipe" "holds more than the limit of 1048576 bytes" \
  "$SIM" --config <(yes "# padding")
head -c 1100000 /dev/zero | tr '\0' '#' > "$TMP/big.ini"
quick_fail "--config over 1 MiB" "is 1100000 bytes, the limit is 1048576" "$SIM" --config "$TMP/big.ini"

# A FIFO with a writer, and bash's <(...), are read like a file.
printf 'rounds = 2\nclients = 10\nfraction = 0.5\n' > "$TMP/run.ini"
mkfifo "$TMP/fifo.ini"
cat "$TMP/run.ini" > "$TMP/fifo.ini" &
PIDS+=($!)
rc=0
timeout 120 "$SIM" --config "$TMP/fifo.ini" --data-dir "$DATA_DIR" --quiet --metrics "$TMP/fifo.jsonl" \
  > /dev/null 2> "$TMP/fifo.err" || rc=$?
[ $rc -eq 0 ] && [ "$(jsonl_eval "$TMP/fifo.jsonl" "[len(rows), rows[0]['clients_sampled']]")" = "[2, 5]" ] \
  && ok "--config FIFO with a writer: its 2 rounds of 5 of 10 clients ran" || bad "--config FIFO: exit $rc $(cat "$TMP/fifo.err")"
rc=0
timeout 120 "$SIM" --config <(cat "$TMP/run.ini") --data-dir "$DATA_DIR" --quiet --metrics "$TMP/ps.jsonl" \
  > /dev/null 2> "$TMP/ps.err" || rc=$?
[ $rc -eq 0 ] && [ "$(jsonl_eval "$TMP/ps.jsonl" "len(rows)")" = 2 ] \
  && ok "--config <(...): read" || bad "--config <(...): exit $rc $(cat "$TMP/ps.err")"

# ---- data files ----
mkfifo "$TMP/pipe.csv" "$TMP/pipe-images-idx3-ubyte"
quick_fail "CSV data file that is a FIFO (no writer)" "'$TMP/pipe.csv' is a FIFO (named pipe), expected a regular file" \
  "$SIM" --dataset "$TMP/pipe.csv"
quick_fail "IDX data file that is a FIFO (no writer)" "is a FIFO (named pipe), expected a regular file" \
  "$SIM" --dataset "$TMP/pipe-images-idx3-ubyte"
quick_fail "--dataset DIR" "'$TMP/dir.ini' is a directory, expected a regular file" "$SIM" --dataset "$TMP/dir.ini"
quick_fail "--test-data /dev/zero" "'/dev/zero' is a character device" \
  "$SIM" --dataset "$DATA_DIR/train-images-idx3-ubyte.gz" --test-data /dev/zero
quick_fail "client --data DIR" "--data: '$DATA_DIR' is a directory, expected a regular file" \
  "$CLIENT" --data "$DATA_DIR"

# IDX headers that promise more than the file: a gzip file declaring 60,000
# images with 3,000 bytes of pixels behind the header (more than deflate can
# inflate from it), and one declaring more than the 8 GiB limit.
"$PY" - "$TMP" <<'PY'
import gzip, struct, sys
d = sys.argv[1]
def idx(path, dims, payload):
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", x) for x in dims) + payload)
idx(d + "/lie-images-idx3-ubyte.gz", [60000, 28, 28], bytes(range(256)) * 12)
idx(d + "/lie-labels-idx1-ubyte.gz", [60000], bytes(60000))
idx(d + "/huge-images-idx3-ubyte.gz", [1 << 26, 28, 28], bytes(100))
PY
quick_fail "gzip IDX promising more than it can hold" \
  "the header declares 47040000 bytes of pixel data, more than a gzip file of" \
  "$SIM" --dataset "$TMP/lie-images-idx3-ubyte.gz"
quick_fail "gzip IDX promising more than the limit" "limit is 8192 MiB" \
  "$SIM" --dataset "$TMP/huge-images-idx3-ubyte.gz"

# ---- key files ----
"$BUILD/fedlr-keygen" "$TMP/coord" > /dev/null
mkfifo "$TMP/fifo.key"
quick_fail "--allow-clients FIFO (no writer)" "is a FIFO (named pipe), expected a regular file" \
  "$COORD" --curve-secret "$TMP/coord.key_secret" --allow-clients "$TMP/fifo.key"
quick_fail "--coordinator-key /dev/zero" "'/dev/zero' is a character device" \
  "$CLIENT" --data "$TMP/pipe.csv" --curve-secret "$TMP/coord.key_secret" --coordinator-key /dev/zero
finish
