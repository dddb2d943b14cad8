# Checkpoints are not trusted. A short real run writes one; corrupted copies
# of it are each refused by `fedlr-coordinator --resume` at once (non-zero
# exit, a message naming what is wrong, no round started): values edited
# with a valid checksum (NaN and 1e30 weights, plateau scale nan,
# target_reached 1 below the target), a flipped bit in the data, a file
# without a checksum (an older fedlr), a FIFO in place of the file. The
# intact copy still resumes and finishes the run with its clients.
source "$(dirname "$0")/lib.sh"

FLAGS=(--model softmax --clients 2 --fraction 1 --local-epochs 1 --batch-size 50 --lr 0.05
       --schedule "plateau:factor=0.5,patience=0" --target-accuracy 0.99 --seed 3)
PORT=$(free_port)
coord() {
  timeout 120 "$COORD" --bind "tcp://127.0.0.1:$PORT" "${FLAGS[@]}" --start-clients 2 \
    --round-timeout 60 --heartbeat 0.5 --client-timeout 5 "$@" >> "$TMP/coord.out" 2>> "$TMP/coord.log" &
  CPID=$!; PIDS+=($CPID)
}

coord --rounds 2 --out "$TMP/run"
start_clients 2 3
wait_run "2-round run with --out"
CK="$TMP/run/checkpoint.safetensors"
[ -s "$CK" ] || { bad "no checkpoint written"; finish; exit 1; }

# corrupt KIND DIR: DIR/checkpoint.safetensors = the checkpoint, corrupted.
# Value edits go through the documented checksum (CRC-32 of the file with
# its 8 digits read as 0), so it is the value check that must refuse them;
# resealing the intact file must give back its exact bytes.
corrupt() {
  mkdir -p "$2"
  "$PY" - "$CK" "$2/checkpoint.safetensors" "$1" <<'PY'
import copy, json, struct, sys, zlib
import numpy as np
src, dst, kind = sys.argv[1:4]
b = open(src, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
data = bytearray(b[8 + n:])

def seal(h, data):
    h["__metadata__"]["fedlr_crc32"] = "00000000"
    hb = json.dumps(h, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    out = bytearray(struct.pack("<Q", len(hb)) + hb + data)
    at = out.index(b'"fedlr_crc32":"') + len(b'"fedlr_crc32":"')
    out[at:at + 8] = b"%08x" % zlib.crc32(bytes(out))
    return bytes(out)

def set_weight(i, v):
    s = h["layers.0.weight"]["data_offsets"][0]
    np.frombuffer(data, "<f4", offset=s)[i] = v  # a writable view of data

assert seal(copy.deepcopy(h), bytearray(data)) == b, "resealing the intact checkpoint changed it"
meta = h["__metadata__"]
if kind == "nan-weight":
    set_weight(3, np.nan); out = seal(h, data)
elif kind == "huge-weight":
    set_weight(3, 1e30); out = seal(h, data)
elif kind == "scale-nan":
    meta["fedlr_plateau_scale"] = "nan"; out = seal(h, data)
elif kind == "target-reached":
    meta["fedlr_target_reached"] = "1"; out = seal(h, data)
elif kind == "flipped-bit":
    out = bytearray(b); out[8 + n + 1000] ^= 0x10; out = bytes(out)
elif kind == "no-checksum":  # as an older fedlr wrote it
    del meta["fedlr_crc32"]
    hb = json.dumps(h, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    out = struct.pack("<Q", len(hb)) + hb + bytes(data)
else:
    sys.exit("unknown kind " + kind)
open(dst, "wb").write(out)
PY
}

# refused KIND NEEDLE: --resume of the corrupted copy exits non-zero within
# 10 s (not by timeout) and says NEEDLE.
refused() {
  local dir="$TMP/bad-$1" rc=0 t0=$SECONDS out
  if [ "$1" = fifo ]; then mkdir -p "$dir" && mkfifo "$dir/checkpoint.safetensors"; else corrupt "$1" "$dir"; fi
  out=$(timeout 20 "$COORD" --bind "tcp://127.0.0.1:$PORT" "${FLAGS[@]}" --rounds 3 --resume "$dir" 2>&1 >/dev/null) || rc=$?
  local took=$((SECONDS - t0))
  if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then
    bad "$1: --resume exit $rc after ${took}s (expected a quick refusal)"
  elif [ $took -gt 10 ]; then
    bad "$1: refused only after ${took}s"
  elif ! grep -qF -- "$2" <<<"$out"; then
    bad "$1: message lacks '$2': $out"
  else
    ok "$1 refused (exit $rc, ${took}s): $(grep -F -- "$2" <<<"$out" | head -1 | cut -c1-220)"
  fi
}
refused nan-weight "weight 3 of tensor 'layers.0.weight' is nan: weights must be finite"
refused huge-weight "weight 3 of tensor 'layers.0.weight' is 1e+30"
refused scale-nan "fedlr_plateau_scale = 'nan': must be in (0, 1]"
refused target-reached "fedlr_target_reached = '1': its best accuracy"
refused flipped-bit "checksum mismatch: the file is corrupt"
refused no-checksum "has no checksum (metadata 'fedlr_crc32'): it was written by an older fedlr"
refused fifo "is a FIFO (named pipe), expected a regular file"
for d in "$TMP"/bad-*; do
  [ -e "$d/model.safetensors" ] && bad "$(basename "$d"): a refused resume wrote outputs"
done

# The intact checkpoint resumes: round 3 runs and the run ends normally.
mkdir -p "$TMP/good" && cp "$CK" "$TMP/good/"
coord --rounds 3 --resume "$TMP/good" --metrics "$TMP/good.jsonl"
start_clients 2 3
wait_run "intact checkpoint resumed"
grep -q "resumed from .* after 2 rounds" "$TMP/coord.log" && ok "$(grep -m1 'resumed from' "$TMP/coord.log" | cut -c1-160)" || bad "no 'resumed from' in the log"
rounds=$(jsonl_eval "$TMP/good.jsonl" "[r['round'] for r in rows]")
[ "$rounds" = "[3]" ] && ok "the resumed run ran round 3 only" || bad "resumed run rounds $rounds"
finish
