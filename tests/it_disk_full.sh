# A full disk under --out and --metrics, on small tmpfs file systems mounted
# in a private mount namespace (as root; skipped, exit 77, where mounting is
# not permitted):
#  - fedlr-sim whose disk fills mid-run: it carries on, logs the metrics
#    failure once, exits 1 naming model.safetensors and the OS error; the
#    metrics file holds only complete JSON lines; no empty config.ini, no
#    temporary files. The same run with room exits 0 with every output.
#  - fedlr-sim whose disk is full from the start and gets room mid-run: the
#    queued metrics lines are written, none is missing, exit 0.
#  - fedlr-coordinator with 2 fedlr-clients whose disk fills mid-run: the
#    failed checkpoints are logged and the run goes on, exit 1; the
#    checkpoint left is a complete file of an earlier round, and --resume
#    from it, once there is room, ends the run bit-identical to fedlr-sim.
if [ -z "${FEDLR_IN_MNTNS:-}" ]; then
  if ! unshare -m true 2>/dev/null; then
    echo "skip: cannot create a mount namespace (unshare -m needs root)"
    exit 77
  fi
  FEDLR_IN_MNTNS=1 exec unshare -m --propagation private bash "$0" "$@"
fi
source "$(dirname "$0")/lib.sh"
trap 'cleanup_pids; for d in "$TMP"/disk*; do umount "$d" 2>/dev/null; done; rm -rf "$TMP"' EXIT

# disk NAME SIZE: a tmpfs of SIZE at $TMP/NAME (skip the rest of the test if
# not allowed; a failure before that still fails it).
disk() {
  mkdir -p "$TMP/$1"
  if ! mount -t tmpfs -o "size=$2" fedlr-test "$TMP/$1" 2> "$TMP/mount.err"; then
    skip_rest "cannot mount a tmpfs: $(cat "$TMP/mount.err")"
  fi
}
# fill DIR [FREE_BYTES]: fills DIR's file system, then frees FREE_BYTES.
fill() {
  cat /dev/zero > "$1/filler" 2>/dev/null || true
  [ -z "${2:-}" ] || truncate -s "-$2" "$1/filler"
}
# metrics_rounds FILE: the rounds of its lines, "[1, 2, ...]", if every line
# is a complete JSON object ending in a newline; else BAD and why.
metrics_rounds() {
  "$PY" - "$1" <<'PY'
import json, sys
b = open(sys.argv[1], "rb").read()
if b and not b.endswith(b"\n"):
    print("BAD: the last line is cut"); sys.exit()
try:
    print([json.loads(l)["round"] for l in b.decode().splitlines()])
except Exception as e:
    print("BAD:", e)
PY
}
# st_rounds FILE KEY: a complete safetensors file (header, every tensor's
# bytes, nothing more): prints its metadata KEY; else BAD.
st_rounds() {
  "$PY" - "$1" "$2" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
meta = h.pop("__metadata__")
end = max(v["data_offsets"][1] for v in h.values())
print(meta[sys.argv[2]] if len(b) == 8 + n + end else "BAD: %d bytes, header says %d" % (len(b), 8 + n + end))
PY
}
# no_leftovers DIR DESC: no temporary file of an atomic write, no empty config.ini.
no_leftovers() {
  local tmps
  tmps=$(find "$1" -name '*.tmp.*' | wc -l)
  [ "$tmps" -eq 0 ] && ok "$2: no temporary files left" || bad "$2: temporary files: $(ls "$1")"
  if [ -e "$1/config.ini" ] && [ ! -s "$1/config.ini" ]; then bad "$2: an empty config.ini"
  else ok "$2: no empty config.ini"; fi
}
count() { grep -c -- "$1" "$2" || true; }

# ---- fedlr-sim, the disk fills mid-run ----
SIMFLAGS=(--data-dir "$DATA_DIR" --rounds 40 --eval-every 10 --seed 3)
disk disk1 256k
mkdir "$TMP/disk1/out"
fill "$TMP/disk1" 8192 # room for about 27 metrics lines
D=$TMP/disk1/out
rc=0
"$SIM" "${SIMFLAGS[@]}" --metrics "$D/m.jsonl" --out "$D" > "$TMP/sim1.out" 2> "$TMP/sim1.err" || rc=$?
grep "cannot\|not written" "$TMP/sim1.err" | sed 's/^/  /' || true
[ $rc -eq 1 ] && ok "sim, disk full: exit status 1" || bad "sim, disk full: exit status $rc"
grep -q "round  40/40" "$TMP/sim1.out" && ok "sim carried on to round 40" || bad "sim stopped early"
[ "$(count "cannot write metrics file '$D/m.jsonl': No space left on device" "$TMP/sim1.err")" = 1 ] \
  && ok "the metrics failure is logged once, naming the file and the OS error" || bad "metrics failure logged $(count "cannot write metrics file" "$TMP/sim1.err") times"
grep -q "model.safetensors.*No space left on device" "$TMP/sim1.err" \
  && ok "the failed model write is named with the OS error" || bad "no message for model.safetensors"
grep -q "metrics file '$D/m.jsonl': [0-9]* lines from round [0-9]* on not written: No space left on device" "$TMP/sim1.err" \
  && ok "the missing metrics lines are reported at the end" || bad "no message for the missing lines"
r=$(metrics_rounds "$D/m.jsonl")
"$PY" -c "r = $r; import sys; sys.exit(0 if r == list(range(1, len(r) + 1)) and 10 < len(r) < 40 else 1)" 2>/dev/null \
  && ok "metrics: ${r:0:12}... $(wc -l < "$D/m.jsonl") complete JSON lines, none cut" || bad "metrics: $r"
[ ! -e "$D/model.safetensors" ] && ok "no model.safetensors (it did not fit)" || bad "a model.safetensors of $(stat -c %s "$D/model.safetensors") bytes"
no_leftovers "$D" "sim, disk full"

# The control: the same run with room.
disk disk0 16m
D=$TMP/disk0/out
rc=0
"$SIM" "${SIMFLAGS[@]}" --quiet --metrics "$D/m.jsonl" --out "$D" > /dev/null 2> "$TMP/sim0.err" || rc=$?
[ $rc -eq 0 ] && ok "sim with room: exit 0" || { bad "sim with room: exit $rc"; cat "$TMP/sim0.err"; }
[ "$(metrics_rounds "$D/m.jsonl")" = "$(seq -s ', ' 1 40 | sed 's/^/[/;s/$/]/')" ] && ok "sim with room: 40 metrics lines" || bad "sim with room: $(metrics_rounds "$D/m.jsonl")"
[ "$(st_rounds "$D/model.safetensors" rounds)" = 40 ] && [ -s "$D/chart.svg" ] && [ -s "$D/config.ini" ] \
  && ok "sim with room: model (40 rounds), chart and config" || bad "sim with room: outputs $(ls -l "$D")"

# ---- fedlr-sim, full from the start, room comes back mid-run ----
disk disk2 4m
mkdir "$TMP/disk2/out"
fill "$TMP/disk2"
D=$TMP/disk2/out
"$SIM" --data-dir "$DATA_DIR" --model mlp:200,200 --rounds 25 --eval-every 5 --seed 4 \
  --metrics "$D/m.jsonl" --out "$D" > "$TMP/sim2.out" 2> "$TMP/sim2.err" &
SPID=$!; PIDS+=($SPID)
wait_until 120 grep -q "round   3/25" "$TMP/sim2.out" || bad "sim never reached round 3"
kill -STOP $SPID
if grep -q "^final:" "$TMP/sim2.out"; then bad "sim ended before the disk could be freed"; fi
[ ! -s "$D/m.jsonl" ] && ok "while full, no metrics line reached the file" || bad "metrics lines on a full disk: $(cat "$D/m.jsonl")"
rm "$TMP/disk2/filler"
kill -CONT $SPID
rc=0; wait $SPID || rc=$?
[ $rc -eq 0 ] && ok "sim, room back mid-run: exit 0" || { bad "sim, room back: exit $rc"; cat "$TMP/sim2.err"; }
[ "$(count "cannot write metrics file" "$TMP/sim2.err")" = 1 ] && ok "the failure was logged once, not per retry" \
  || bad "metrics failure logged $(count "cannot write metrics file" "$TMP/sim2.err") times"
[ "$(metrics_rounds "$D/m.jsonl")" = "$(seq -s ', ' 1 25 | sed 's/^/[/;s/$/]/')" ] \
  && ok "every round's line was written once there was room: none missing, in order" || bad "metrics: $(metrics_rounds "$D/m.jsonl")"
[ "$(st_rounds "$D/model.safetensors" rounds)" = 25 ] && [ -s "$D/chart.svg" ] && [ -s "$D/config.ini" ] \
  && ok "and every output written" || bad "outputs: $(ls -l "$D")"
no_leftovers "$D" "sim, room back"

# ---- fedlr-coordinator and 2 clients, the disk fills mid-run ----
FLAGS=(--model softmax --clients 2 --fraction 1 --rounds 20 --local-epochs 1 --batch-size 10
       --lr 0.05 --seed 5)
disk disk3 1m
D=$TMP/disk3/run
PORT=$(free_port)
coord() {
  timeout 300 "$COORD" --bind "tcp://127.0.0.1:$PORT" "${FLAGS[@]}" --start-clients 2 --round-timeout 60 \
    --heartbeat 0.5 --client-timeout 5 --metrics "$D/m.jsonl" --out "$D" "$@" > /dev/null 2>> "$TMP/coord.log" &
  CPID=$!; PIDS+=($CPID)
}
clients() {
  CLIENTS=()
  for i in 0 1; do
    timeout 300 "$CLIENT" --connect "tcp://127.0.0.1:$PORT" --dataset fashion-mnist --data-dir "$DATA_DIR" \
      --partition iid --num-partitions 2 --partition-index $i --seed 5 2> "$TMP/c$i.log" &
    CLIENTS+=($!); PIDS+=($!)
  done
}
coord
clients
wait_until 120 lines_at_least "$D/m.jsonl" 3 || bad "round 3 never finished"
COORD_PID=$(pgrep -P $CPID)
kill -STOP "$COORD_PID"
stopped_at=$(wc -l < "$D/m.jsonl")
[ "$stopped_at" -lt 20 ] || bad "the run ended before the disk filled"
fill "$TMP/disk3"
kill -CONT "$COORD_PID"
rc=0; wait $CPID || rc=$?
grep -i "not written\|cannot\|exiting" "$TMP/coord.log" | sed 's/^/  /' || true
[ $rc -eq 1 ] && ok "coordinator, disk full after round $stopped_at: exit status 1" || bad "coordinator exit $rc"
for i in 0 1; do
  crc=0; wait "${CLIENTS[$i]}" || crc=$?
  [ $crc -eq 0 ] && ok "client $i was told the run ended (exit 0)" || bad "client $i exit $crc"
done
# A run of failed checkpoints: logged at its first and at the end, not every round.
[ "$(count "checkpoint not written (1 in a row; an earlier one, if any, is kept): cannot write '$D/checkpoint.safetensors.tmp.[0-9]*': No space left on device" "$TMP/coord.log")" = 1 ] \
  && [ "$(count "checkpoint not written" "$TMP/coord.log")" = 2 ] \
  && ok "failed checkpoints logged at the first and the last, the run went on" || bad "checkpoint failures logged: $(count "checkpoint not written" "$TMP/coord.log")"
[ "$(count "cannot write metrics file '$D/m.jsonl': No space left on device" "$TMP/coord.log")" = 1 ] \
  && ok "the metrics failure logged once" || bad "metrics failure logged $(count "cannot write metrics file" "$TMP/coord.log") times"
grep -q "model.safetensors.*No space left on device" "$TMP/coord.log" && grep -q "lines from round" "$TMP/coord.log" \
  && ok "the final model and the missing metrics lines are reported" || bad "final failures not reported"
grep -q "metrics: metrics:" "$TMP/coord.log" && bad "a doubled 'metrics:' prefix"
r=$(metrics_rounds "$D/m.jsonl")
ck=$(st_rounds "$D/checkpoint.safetensors" fedlr_rounds_done)
"$PY" -c "r = $r; import sys; sys.exit(0 if r == list(range(1, len(r) + 1)) and len(r) < 20 else 1)" 2>/dev/null \
  && ok "metrics: rounds 1..$(wc -l < "$D/m.jsonl"), complete JSON lines only" || bad "metrics: $r"
"$PY" -c "import sys; k = int('$ck'); sys.exit(0 if 2 <= k < 20 and k <= len($r) else 1)" 2>/dev/null \
  && ok "the checkpoint left is complete, of round $ck" || bad "checkpoint: $ck"
[ ! -e "$D/model.safetensors" ] && ok "no model.safetensors" || bad "a model.safetensors"
no_leftovers "$D" "coordinator, disk full"

# Room again: --resume from that checkpoint finishes the run.
rm "$TMP/disk3/filler"
coord --resume "$D"
clients
rc=0; wait $CPID || rc=$?
[ $rc -eq 0 ] && ok "resumed from round $ck once there was room: exit 0" || { bad "resume: exit $rc"; tail -5 "$TMP/coord.log"; }
for i in 0 1; do wait "${CLIENTS[$i]}" || bad "client $i of the resumed run failed"; done
[ "$(metrics_rounds "$D/m.jsonl")" = "$(seq -s ', ' 1 20 | sed 's/^/[/;s/$/]/')" ] \
  && ok "metrics: rounds 1..20, each once" || bad "metrics: $(metrics_rounds "$D/m.jsonl")"
[ -s "$D/chart.svg" ] && [ -s "$D/config.ini" ] && [ "$(st_rounds "$D/model.safetensors" rounds)" = 20 ] \
  && ok "model, chart and config written" || bad "outputs: $(ls -l "$D")"
no_leftovers "$D" "resumed coordinator"
"$SIM" --quiet --data-dir "$DATA_DIR" --partition iid "${FLAGS[@]}" --out "$TMP/sim" > /dev/null
st_equal "$D/model.safetensors" "$TMP/sim/model.safetensors" \
  && ok "the weights are bit-identical to fedlr-sim's" || bad "weights differ from fedlr-sim's"
finish
