# A short networked run under valgrind's memcheck: fedlr-coordinator and two
# fedlr-client processes over loopback TCP with CurveZMQ (so the ZAP handler,
# the socket monitors and the key files run under memcheck too), 4 rounds. Every process must exit 0
# with no invalid read/write, no use of uninitialised values and no leak
# (definite, indirect or possible) — valgrind turns any of those into exit 99.
# Valgrind's synthetic CPU has no AVX-512, so this also runs the generic
# kernels.
source "$(dirname "$0")/lib.sh"

command -v valgrind > /dev/null || { echo "skip: valgrind is not installed"; exit 77; }
# ASan/TSan builds cannot run under valgrind.
if grep -qE '^FEDLR_(SANITIZE|TSAN):BOOL=ON' "$BUILD/CMakeCache.txt" 2> /dev/null; then
  echo "skip: sanitizer build"
  exit 77
fi

# The clients train on a 1,000-example CSV each, so the run takes seconds
# natively and about a minute under valgrind.
"$PY" - "$DATA_DIR" "$TMP" <<'PY'
import gzip, sys
import numpy as np
d, out = sys.argv[1], sys.argv[2]
def idx(name, off):
    return np.frombuffer(gzip.open(f"{d}/{name}.gz").read(), np.uint8, offset=off)
x = idx("train-images-idx3-ubyte", 16).reshape(-1, 784)
y = idx("train-labels-idx1-ubyte", 8)
for k in range(2):
    sl = slice(1000 * k, 1000 * (k + 1))
    np.savetxt(f"{out}/c{k}.csv", np.column_stack([y[sl], x[sl]]), fmt="%d", delimiter=",")
PY

mkdir -p "$TMP/keys" "$TMP/allowed"
for n in coord c0 c1; do "$BUILD/fedlr-keygen" "$TMP/keys/$n" > /dev/null; done
cp "$TMP/keys/c0.key" "$TMP/keys/c1.key" "$TMP/allowed/"

VG=(valgrind --quiet --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect,possible
    --errors-for-leak-kinds=definite,indirect,possible --track-origins=yes)
# OpenBLAS's own core detection under valgrind: no re-exec, no AVX-512.
# Heartbeats every 2 s (clients rejoin after 5 silent heartbeats): a
# coordinator under valgrind evaluates for seconds on a busy machine.
export FEDLR_NO_REEXEC=1
FLAGS=(--model softmax --clients 2 --fraction 1 --rounds 4 --local-epochs 1 --batch-size 50
       --lr 0.05 --schedule "exp:gamma=0.9" --seed 5)
PORT=$(free_port)
timeout 600 "${VG[@]}" "$COORD" --bind "tcp://127.0.0.1:$PORT" "${FLAGS[@]}" --dataset fashion-mnist \
  --data-dir "$DATA_DIR" --start-clients 2 --round-timeout 600 --client-timeout 120 --heartbeat 2 \
  --curve-secret "$TMP/keys/coord.key_secret" --allow-clients "$TMP/allowed" \
  --metrics "$TMP/net.jsonl" --out "$TMP/net" > /dev/null 2> "$TMP/coord.log" &
CPID=$!; PIDS+=($CPID)
for i in 0 1; do
  timeout 600 "${VG[@]}" "$CLIENT" --connect "tcp://127.0.0.1:$PORT" --data "$TMP/c$i.csv" \
    --seed 5 --curve-secret "$TMP/keys/c$i.key_secret" --coordinator-key "$TMP/keys/coord.key" 2> "$TMP/c$i.log" &
  PIDS+=($!)
done
rc=0; wait $CPID || rc=$?
[ $rc -eq 0 ] && ok "coordinator under valgrind exited 0" || { bad "coordinator exit $rc"; tail -40 "$TMP/coord.log"; }
for i in 0 1; do
  crc=0; wait "${PIDS[$((i + 1))]}" || crc=$?
  [ $crc -eq 0 ] && ok "client $i under valgrind exited 0" || { bad "client $i exit $crc"; tail -40 "$TMP/c$i.log"; }
done
if grep -q '^==[0-9]*==' "$TMP/coord.log" "$TMP/c0.log" "$TMP/c1.log"; then
  bad "valgrind reported:"; grep -h '^==[0-9]*==' "$TMP/coord.log" "$TMP/c0.log" "$TMP/c1.log" | head -40
else
  ok "no valgrind report from any process"
fi
grep -q "client c0 (id [01]) joined" "$TMP/coord.log" && grep -q "client c1 (id [01]) joined" "$TMP/coord.log" \
  && ok "both clients joined under their key names over CURVE" || bad "CURVE joins missing"
n=$(jsonl_eval "$TMP/net.jsonl" "len(rows)")
[ "$n" = 4 ] && ok "4 rounds completed, evaluated every round" || bad "$n rounds completed"
finish
