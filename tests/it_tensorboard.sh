# --tensorboard DIR: the event files that fedlr-sim, fedlr-sweep and a
# networked run write are read back by an independent reader,
# tests/tb_read.py (Debian's protoc --python_out on the vendored protos,
# python3-protobuf, python3-crcmod's CRC-32C; no fedlr code), which checks
# every record's framing and both CRCs, the file name, the file_version
# record first, and compares each scalar with the --metrics line of its
# round (float32 of the JSON double; steps 1..N; lr, train/loss, test/*
# where evaluated, fed_eval/* with the clients' named metrics). A corrupted
# byte must be caught by the reader; a --tensorboard folder that cannot be
# created is refused before the first round; a file that stops growing
# costs the exit status, not the run; --resume carries on in the same run
# folder.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib_py.sh"
need_py google.protobuf crcmod numpy zmq
command -v protoc > /dev/null || skip_rest "protoc is not installed (protobuf-compiler: bash scripts/deps.sh)"
TBR=("$PY" "$SRC/tests/tb_read.py")
NAME_RE='^[A-Z][a-z]{2}[0-3][0-9]_[0-2][0-9]-[0-5][0-9]-[0-6][0-9]_[A-Za-z0-9._-]+-'

# run_dirs DIR: the run folders under DIR, one a line.
run_dirs() { find "$1" -mindepth 1 -maxdepth 1 -type d | sort; }

# ---- fedlr-sim: 5 rounds, evaluated (test set and held-out examples) in rounds 2, 4, 5 ----
rc=0
"$SIM" --data-dir "$DATA_DIR" --model softmax --clients 10 --fraction 0.5 --rounds 5 --eval-every 2 \
  --holdout 0.2 --seed 3 --metrics "$TMP/sim.jsonl" --tensorboard "$TMP/tb" > /dev/null 2> "$TMP/sim.log" || rc=$?
[ $rc -eq 0 ] && ok "fedlr-sim --tensorboard: exit 0" || bad "fedlr-sim --tensorboard: exit $rc: $(tail -3 "$TMP/sim.log")"
mapfile -t runs < <(run_dirs "$TMP/tb")
run=${runs[0]:-none}
if [ ${#runs[@]} -eq 1 ] && [[ "$(basename "$run")" =~ ${NAME_RE}fedlr-sim$ ]]; then
  ok "one run folder, named like PyTorch's SummaryWriter: $(basename "$run")"
else
  bad "run folders under --tensorboard: ${runs[*]:-none}"
fi
grep -qF "fedlr-sim: TensorBoard events in $run (tensorboard --logdir $TMP/tb)" "$TMP/sim.log" \
  && ok "says where: $(grep -o 'TensorBoard events in .*' "$TMP/sim.log")" || bad "no 'TensorBoard events in' line: $(head -3 "$TMP/sim.log")"
py_checks "tb_read.py check (fedlr-sim)" "${TBR[@]}" check "$run" "$TMP/sim.jsonl"
[ "$(jsonl_eval "$TMP/sim.jsonl" "[r['round'] for r in rows if r['test_accuracy'] is not None and r.get('fed_eval_clients')]")" = "[2, 4, 5]" ] \
  && ok "rounds 1 and 3 had no evaluation (so no test/* or fed_eval/* scalars, which the check above requires)" \
  || bad "evaluated rounds: $(jsonl_eval "$TMP/sim.jsonl" "[(r['round'], r['test_accuracy']) for r in rows]")"

# ---- fedlr-sweep: a folder per run of the grid, TB/<id> ----
rc=0
"$BUILD/fedlr-sweep" --quiet --data-dir "$DATA_DIR" --clients 10 --fraction 0.5 --rounds 2 --batch-size 20 \
  --grid 'lr=0.05|0.2' --out "$TMP/sweep" --tensorboard "$TMP/tbsweep" > /dev/null 2> "$TMP/sweep.err" || rc=$?
[ $rc -eq 0 ] && ok "fedlr-sweep --tensorboard: exit 0" || bad "fedlr-sweep: exit $rc: $(tail -3 "$TMP/sweep.err")"
ids=$(ls "$TMP/sweep/runs" 2> /dev/null | tr '\n' ' ')
[ -n "$ids" ] && [ "$(ls "$TMP/tbsweep" 2> /dev/null | tr '\n' ' ')" = "$ids" ] \
  && ok "fedlr-sweep: one TensorBoard folder per run: $ids" || bad "sweep runs '$ids', TensorBoard folders '$(ls "$TMP/tbsweep" 2>&1)'"
for id in $ids; do
  py_checks "tb_read.py check (sweep run $id)" "${TBR[@]}" check "$TMP/tbsweep/$id" "$TMP/sweep/runs/$id/metrics.jsonl"
done

# ---- the reader is a real check: a flipped byte, a cut file ----
f=$(ls "$run"/events.out.tfevents.* | head -1)
flip() { "$PY" -c 'import sys; p, i = sys.argv[1], int(sys.argv[2]); b = bytearray(open(p, "rb").read()); b[i % len(b)] ^= 0x10; open(p, "wb").write(b)' "$@"; }
"${TBR[@]}" dump "$f" > "$TMP/dump.jsonl" 2> "$TMP/dump.err" && [ "$(wc -l < "$TMP/dump.jsonl")" -gt 20 ] \
  && ok "tb_read dump reads the intact file: $(wc -l < "$TMP/dump.jsonl") records" || bad "dump of the intact file: $(cat "$TMP/dump.err")"
size=$(stat -c %s "$f")
for case in "data:$((size - 5)):data CRC mismatch" "length:0:length CRC mismatch" "length CRC:9:length CRC mismatch" \
            "first record's data:20:data CRC mismatch"; do
  IFS=: read -r what at want <<< "$case"
  cp "$f" "$TMP/bad"
  flip "$TMP/bad" "$at"
  expect_exit 1 "a byte flipped in the $what (offset $at) is caught" "$want" "${TBR[@]}" dump "$TMP/bad"
done
head -c $((size - 3)) "$f" > "$TMP/cut"
expect_exit 1 "a file cut short is caught" "truncated data" "${TBR[@]}" dump "$TMP/cut"

# ---- a file that stops growing (RLIMIT_FSIZE, as on a full disk): the run goes on, the failure is
# logged once, the file keeps whole records only, and the exit status is 1 ----
rc=0
( trap '' XFSZ; ulimit -f 2; exec "$SIM" --data-dir "$DATA_DIR" --clients 10 --fraction 0.5 --rounds 30 \
    --eval-every 5 --seed 3 --quiet --tensorboard "$TMP/tbfull" ) > /dev/null 2> "$TMP/full.err" || rc=$?
sed 's/^/  /' "$TMP/full.err"
[ $rc -eq 1 ] && ok "event file capped at 2 KiB: fedlr-sim exit 1" || bad "event file capped: exit $rc"
grep -q "run finished after 30 rounds" "$TMP/full.err" && ok "the run went on to round 30" || bad "the run stopped early"
[ "$(grep -c "cannot write TensorBoard event file '.*': File too large; the records from step [0-9]* on are kept" "$TMP/full.err")" = 1 ] \
  && ok "the write failure is logged once, naming the file and the OS error" || bad "failure logged $(grep -c "cannot write TensorBoard" "$TMP/full.err") times"
from=$(sed -n 's/.*records from step \([0-9]*\) on are kept.*/\1/p' "$TMP/full.err")
grep -q "TensorBoard event file '.*': [0-9]* records from step ${from:-X} on not written: File too large" "$TMP/full.err" \
  && ok "the end reports the records missing from step $from on" || bad "no final report of the missing records"
steps=$("${TBR[@]}" dump "$TMP"/tbfull/*/events.out.tfevents.* 2> "$TMP/dump.err" \
  | "$PY" -c 'import json, sys; print(sorted({json.loads(l)["step"] for l in sys.stdin}))') || true
[ "$steps" = "$("$PY" -c "print(list(range(0, ${from:-0})))")" ] \
  && ok "the file holds whole records only, rounds 1..$((${from:-1} - 1))" || bad "capped file: steps $steps $(cat "$TMP/dump.err")"

# ---- a folder that cannot be made: refused before any round, naming it ----
: > "$TMP/afile"
expect_exit 1 "fedlr-sim --tensorboard under a regular file" \
  "fedlr-sim: --tensorboard: cannot create directory '$TMP/afile/tb': Not a directory" \
  "$SIM" --data-dir "$DATA_DIR" --clients 10 --rounds 50 --metrics "$TMP/none.jsonl" --tensorboard "$TMP/afile/tb"
[ ! -s "$TMP/none.jsonl" ] && ok "no round ran (the metrics file is empty)" || bad "rounds ran: $(wc -l < "$TMP/none.jsonl") lines"
expect_exit 1 "fedlr-coordinator --tensorboard in /proc" "fedlr-coordinator: --tensorboard: cannot create directory '/proc/fedlr-tb'" \
  timeout 60 "$COORD" --bind "tcp://127.0.0.1:$(free_port)" --data-dir "$DATA_DIR" --rounds 2 --tensorboard /proc/fedlr-tb/runs

# ---- networked: two fedlr-clients (accuracy) and a Python client with named metrics ----
cat > "$TMP/pyclient.py" <<'PY'
import sys
import fedlr

def train(weights, info):
    return fedlr.TrainResult(weights, num_examples=100, train_loss=1.0)

def evaluate(weights, info):
    return fedlr.EvalResult(0.5, num_examples=50, metrics={"accuracy": 0.25, "f1": 0.75, "recall": 0.125})

fedlr.run_client(sys.argv[1], train, evaluate, num_examples=100, num_eval_examples=50, slot=2, give_up=60)
PY
FLAGS=(--model softmax --clients 3 --fraction 1 --local-epochs 1 --batch-size 50 --lr 0.05 --seed 13)
# net_run ROUNDS [FLAGS...]: the coordinator with 3 clients to the end.
net_run() {
  local rounds=$1
  shift
  PORT=$(free_port)
  timeout 300 "$COORD" --bind "tcp://127.0.0.1:$PORT" "${FLAGS[@]}" --rounds "$rounds" --start-clients 3 \
    --round-timeout 60 --metrics "$TMP/net.jsonl" --out "$TMP/net" --tensorboard "$TMP/tbnet" "$@" \
    > /dev/null 2> "$TMP/coord.log" &
  CPID=$!; PIDS+=($CPID)
  CL=()
  for i in 0 1; do
    timeout 300 "$CLIENT" --connect "tcp://127.0.0.1:$PORT" --dataset fashion-mnist --data-dir "$DATA_DIR" \
      --partition iid --num-partitions 3 --partition-index $i --seed 13 --holdout 0.2 2>> "$TMP/c$i.log" &
    CL+=($!); PIDS+=($!)
  done
  timeout 300 "$PY" "$TMP/pyclient.py" "tcp://127.0.0.1:$PORT" 2>> "$TMP/c2.log" &
  CL+=($!); PIDS+=($!)
  wait_run "$rounds rounds${1:+ $*}"
}
net_run 3
mapfile -t runs < <(run_dirs "$TMP/tbnet")
run=${runs[0]:-none}
if [ ${#runs[@]} -eq 1 ] && [[ "$(basename "$run")" =~ ${NAME_RE}fedlr-coordinator$ ]]; then
  ok "networked: one run folder $(basename "$run")"
else
  bad "networked run folders: ${runs[*]:-none}"
fi
[ "$(cat "$TMP/net/tensorboard-run" 2>/dev/null)" = "$(basename "$run")" ] \
  && ok "--out/tensorboard-run names it, for --resume" || bad "--out/tensorboard-run: $(cat "$TMP/net/tensorboard-run" 2>&1)"
named=$(jsonl_eval "$TMP/net.jsonl" "[(r['fed_eval_clients'], r.get('fed_eval_f1'), r.get('fed_eval_recall')) for r in rows]")
[ "$named" = "[(3, 0.75, 0.125), (3, 0.75, 0.125), (3, 0.75, 0.125)]" ] \
  && ok "every round evaluated by 3 clients, the Python client's f1 and recall in the metrics" || bad "fed_eval per round: $named"
py_checks "tb_read.py check (networked)" "${TBR[@]}" check "$run" "$TMP/net.jsonl"
"${TBR[@]}" dump "$run"/events.out.tfevents.* > "$TMP/netdump.jsonl" 2>&1 || true
n=$(grep -cE '"tag": "fed_eval/(f1|recall)"' "$TMP/netdump.jsonl" || true)
[ "$n" = 6 ] && ok "fed_eval/f1 and fed_eval/recall in each of the 3 rounds" || bad "fed_eval/f1, fed_eval/recall events: $n"

# ---- --resume: 2 more rounds, a second file in the same run folder ----
net_run 5 --resume "$TMP/net"
mapfile -t runs2 < <(run_dirs "$TMP/tbnet")
files=$(ls "$run"/events.out.tfevents.* 2>/dev/null | wc -l)
[ "${runs2[*]}" = "$run" ] && [ "$files" = 2 ] \
  && ok "--resume: the same run folder, a second event file beside the first" || bad "after --resume: folders ${runs2[*]}, $files files"
grep -qF "TensorBoard events in $run " "$TMP/coord.log" && ok "--resume says it writes into $(basename "$run")" \
  || bad "--resume: $(grep TensorBoard "$TMP/coord.log")"
py_checks "tb_read.py check (resumed)" "${TBR[@]}" check "$run" "$TMP/net.jsonl"
finish
