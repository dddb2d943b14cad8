# A checkpoint carries the run's identity (coordinator/fl_checkpoint.h). A
# short run of the coordinator and two clients writes one; `--resume` with
# a changed --aggregator, --clip-norm, --schedule, --model, --lr, --fraction
# or --seed is refused at once with exit status 2 and a message naming the
# flag and both values, as is --rounds below the rounds done, leaving the
# checkpoint and the metrics as they were; a checkpoint of an older fedlr,
# without the identity, is refused with exit status 1. With the same flags
# and --rounds raised (and a different --round-timeout, which is not part of
# the identity) the run continues, logs the change, and ends bit-identical
# to an uninterrupted fedlr-sim run with the larger --rounds.
source "$(dirname "$0")/lib.sh"

FLAGS=(--model softmax --clients 2 --fraction 1 --local-epochs 1 --batch-size 20 --lr 0.05
       --schedule exp:gamma=0.9 --aggregator median --clip-norm 5 --seed 4)
PORT=$(free_port)
coord() {
  timeout 120 "$COORD" --bind "tcp://127.0.0.1:$PORT" --data-dir "$DATA_DIR" --start-clients 2 \
    --heartbeat 0.5 --client-timeout 5 --metrics "$TMP/m.jsonl" "$@" >> "$TMP/coord.out" 2>> "$TMP/coord.log" &
  CPID=$!; PIDS+=($CPID)
}

coord "${FLAGS[@]}" --rounds 2 --round-timeout 60 --out "$TMP/run"
start_clients 2 4
wait_run "2-round run with --out"
CK="$TMP/run/checkpoint.safetensors"
[ -s "$CK" ] || { bad "no checkpoint written"; finish; exit 1; }
sum0=$(cksum < "$CK"); msum0=$(cksum < "$TMP/m.jsonl")

# with FLAG VALUE: the run's flags with FLAG set to VALUE instead.
with() {
  local out=() i
  for ((i = 0; i < ${#FLAGS[@]}; i += 2)); do
    [ "${FLAGS[$i]}" = "$1" ] && out+=("$1" "$2") || out+=("${FLAGS[$i]}" "${FLAGS[$((i + 1))]}")
  done
  printf '%s\n' "${out[@]}"
}
# refused STATUS DESC NEEDLE FLAGS...: --resume with these flags exits with
# STATUS within 20 s, saying NEEDLE.
refused() {
  local status=$1 desc=$2 needle=$3
  shift 3
  expect_exit "$status" "$desc" "$needle" timeout 20 "$COORD" --bind "tcp://127.0.0.1:$PORT" \
    --data-dir "$DATA_DIR" --metrics "$TMP/m.jsonl" --resume "$TMP/run" "$@"
}
SAME="resume with the same flags (or start a new run)"
W="--resume: checkpoint $CK was written with"
mapfile -t f < <(with --aggregator fedavg)
refused 2 "changed --aggregator" "$W --aggregator median; this run has --aggregator fedavg: $SAME" "${f[@]}" --rounds 4
mapfile -t f < <(with --clip-norm 1)
refused 2 "changed --clip-norm" "$W --clip-norm 5; this run has --clip-norm 1: $SAME" "${f[@]}" --rounds 4
mapfile -t f < <(with --schedule exp:gamma=0.8)
refused 2 "changed --schedule" \
  "$W --schedule exp:gamma=0.9,every=1; this run has --schedule exp:gamma=0.8,every=1: $SAME" "${f[@]}" --rounds 4
mapfile -t f < <(with --model mlp:10)
refused 2 "changed --model" "$W --model softmax; this run has --model mlp:10: $SAME" "${f[@]}" --rounds 4
mapfile -t f < <(with --lr 0.1)
refused 2 "changed --lr" "$W --lr 0.05; this run has --lr 0.1: $SAME" "${f[@]}" --rounds 4
mapfile -t f < <(with --fraction 0.5)
refused 2 "changed --fraction" "$W --fraction 1; this run has --fraction 0.5: $SAME" "${f[@]}" --rounds 4
mapfile -t f < <(with --seed 5)
refused 2 "changed --seed" "$W --seed 4; this run has --seed 5: $SAME" "${f[@]}" --rounds 4
mapfile -t f < <(with --aggregator trimmed-mean:0.25)
refused 2 "two changes: the first named, the other listed" \
  "$W --aggregator median; this run has --aggregator trimmed-mean:0.25 (and a different --clip-norm): $SAME" \
  "${f[@]}" --clip-norm 2 --rounds 4
refused 2 "--rounds below the rounds done" \
  "written after 2 rounds (of --rounds 2); this run has --rounds 1: resume with --rounds 2 or more" \
  "${FLAGS[@]}" --rounds 1
[ "$(cksum < "$CK")" = "$sum0" ] && [ "$(cksum < "$TMP/m.jsonl")" = "$msum0" ] \
  && ok "the refusals left the checkpoint and the metrics as they were" || bad "a refused resume changed the run's files"

# A checkpoint as an older fedlr wrote it: the run state without the
# identity keys, under a valid checksum.
mkdir -p "$TMP/old"
"$PY" - "$CK" "$TMP/old/checkpoint.safetensors" <<'PY'
import json, struct, sys, zlib
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
old = {"model", "fedlr_crc32", "fedlr_rounds_done", "fedlr_seed", "fedlr_plateau_best", "fedlr_plateau_scale",
       "fedlr_plateau_bad", "fedlr_plateau_cool", "fedlr_best_accuracy", "fedlr_target_reached", "fedlr_quarantine"}
h["__metadata__"] = {k: v for k, v in h["__metadata__"].items() if k in old}
h["__metadata__"]["fedlr_crc32"] = "00000000"
hb = json.dumps(h, separators=(",", ":")).encode()
hb += b" " * (-len(hb) % 8)
out = bytearray(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
at = out.index(b'"fedlr_crc32":"') + len(b'"fedlr_crc32":"')
out[at:at + 8] = b"%08x" % zlib.crc32(bytes(out))
open(sys.argv[2], "wb").write(out)
PY
expect_exit 1 "a checkpoint without the identity (an older fedlr)" \
  "which did not record the run's flags, so it cannot be checked against this run's" \
  timeout 20 "$COORD" --bind "tcp://127.0.0.1:$PORT" --data-dir "$DATA_DIR" --resume "$TMP/old" "${FLAGS[@]}" --rounds 4

# The same flags, --rounds raised and another --round-timeout: the run goes on.
coord "${FLAGS[@]}" --rounds 4 --round-timeout 90 --resume "$TMP/run"
start_clients 2 4
wait_run "resumed with --rounds 4"
line=$(grep -m1 "resumed from" "$TMP/coord.log" || true)
[[ "$line" == *"resumed from $CK after 2 rounds; changed: --rounds 2 -> 4"* ]] \
  && ok "the change is logged: ${line#*fedlr-coordinator: }" || bad "no change logged: '$line'"
rounds=$(jsonl_eval "$TMP/m.jsonl" "[r['round'] for r in rows]")
[ "$rounds" = "[1, 2, 3, 4]" ] && ok "metrics hold rounds $rounds" || bad "metrics rounds $rounds"
"$SIM" --quiet --data-dir "$DATA_DIR" --partition iid "${FLAGS[@]}" --rounds 4 --out "$TMP/sim" > /dev/null
if st_equal "$TMP/run/model.safetensors" "$TMP/sim/model.safetensors"; then
  ok "the extended run is bit-identical to fedlr-sim with --rounds 4"
else
  bad "extended run differs from fedlr-sim (max diff $(st_maxdiff "$TMP/run/model.safetensors" "$TMP/sim/model.safetensors"))"
fi
finish
