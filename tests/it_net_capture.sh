# A packet capture of a CurveZMQ run shows no plaintext weights; the same
# capture of a plaintext run does (the positive control that the search
# works). Inside a private network namespace made by this test (unshare -n:
# only its own loopback), tcpdump records the loopback traffic of a short
# run (coordinator + 2 clients, 3 rounds), once in plaintext and once with
# CURVE. What to look for: the weights the coordinator sends in round 3's
# RoundStart are the global model after round 2, which fedlr-sim computes
# bit for bit with --rounds 2 (networked runs are bit-identical to it). The
# TCP streams are reassembled from the capture and searched for 48 windows
# of 64 bytes spread over that model's tensors: all must be in the
# plaintext capture, none in the CURVE one. Needs root, unshare and tcpdump
# (skips with the reason otherwise).
if [ -z "${FEDLR_IN_NETNS:-}" ]; then
  [ "$(id -u)" -eq 0 ] || { echo "skip: a private network namespace needs root"; exit 77; }
  command -v tcpdump > /dev/null || { echo "skip: tcpdump is not installed (scripts/deps.sh installs it)"; exit 77; }
  command -v unshare > /dev/null || { echo "skip: unshare (util-linux) is not installed"; exit 77; }
  if ! err=$(unshare -n true 2>&1); then echo "skip: cannot create a network namespace: $err"; exit 77; fi
  FEDLR_IN_NETNS=1 exec unshare -n bash "$0" "$@"
fi
source "$(dirname "$0")/lib.sh"

KEYGEN="$BUILD/fedlr-keygen"
for b in "$COORD" "$CLIENT" "$KEYGEN" "$SIM"; do
  [ -x "$b" ] || { echo "skip: $b is not built"; exit 77; }
done
ip link set lo up
[ "$(ip -o link show | grep -vc ': lo:')" = 0 ] && ok "in a private network namespace: only lo ($(ip -o -4 addr show lo | awk '{print $4}'))" \
  || { bad "the namespace has other interfaces: $(ip -o link show)"; finish; exit 1; }

mkdir -p "$TMP/keys" "$TMP/allowed"
for n in coord c0 c1; do "$KEYGEN" "$TMP/keys/$n" > /dev/null; done
cp "$TMP/keys/c0.key" "$TMP/keys/c1.key" "$TMP/allowed/"
SEED=4
FLAGS=(--model mlp:16 --clients 2 --fraction 1 --local-epochs 1 --batch-size 50 --lr 0.05 --seed $SEED)
DATA=(--dataset fashion-mnist --data-dir "$DATA_DIR" --partition iid --num-partitions 2 --seed $SEED)
TCPDUMP_PID=

# run NAME CURVE(0|1): a 3-round run with tcpdump on lo; NAME.pcap, NAME/model.safetensors.
run() {
  local name=$1 curve=$2 port
  port=$(free_port)
  local ep="tcp://127.0.0.1:$port" cflags=() k=()
  tcpdump -i lo -U -s 0 -w "$TMP/$name.pcap" "tcp port $port" 2> "$TMP/$name.tcpdump.log" &
  TCPDUMP_PID=$!; PIDS+=($TCPDUMP_PID)
  wait_until 20 grep -q "listening on lo" "$TMP/$name.tcpdump.log" || bad "$name: tcpdump did not start: $(cat "$TMP/$name.tcpdump.log")"
  [ "$curve" = 1 ] && cflags=(--curve-secret "$TMP/keys/coord.key_secret" --allow-clients "$TMP/allowed")
  timeout 120 "$COORD" --bind "$ep" "${FLAGS[@]}" --rounds 3 --data-dir "$DATA_DIR" --start-clients 2 \
    "${cflags[@]}" --out "$TMP/$name" > /dev/null 2> "$TMP/$name.coord.log" &
  local cpid=$! pids=()
  PIDS+=($cpid)
  for i in 0 1; do
    [ "$curve" = 1 ] && k=(--curve-secret "$TMP/keys/c$i.key_secret" --coordinator-key "$TMP/keys/coord.key")
    timeout 120 "$CLIENT" --connect "$ep" "${DATA[@]}" --partition-index $i "${k[@]}" --quiet 2> "$TMP/$name.c$i.log" &
    pids+=($!); PIDS+=($!)
  done
  local rc=0
  wait $cpid || rc=$?
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  kill -INT $TCPDUMP_PID 2>/dev/null || true
  wait $TCPDUMP_PID 2>/dev/null || true
  [ $rc -eq 0 ] && ok "$name run: every process exited 0; $(grep -m1 -o '[0-9]* packets captured' "$TMP/$name.tcpdump.log")" \
    || { bad "$name run failed (exit $rc)"; tail -5 "$TMP/$name.coord.log"; }
}
run plain 0
run curve 1
grep -q "CurveZMQ: encrypted" "$TMP/curve.coord.log" && ok "the second run used CURVE" || bad "no CURVE line in the log"
if st_equal "$TMP/plain/model.safetensors" "$TMP/curve/model.safetensors"; then
  ok "plaintext and CURVE runs end with bit-identical weights"
else
  bad "plaintext and CURVE weights differ"
fi

# The global model after round 2 = the weights in round 3's RoundStart.
"$SIM" --quiet --data-dir "$DATA_DIR" --partition iid "${FLAGS[@]}" --rounds 2 --out "$TMP/sim2" > /dev/null

"$PY" - "$TMP/sim2/model.safetensors" "$TMP/plain.pcap" "$TMP/curve.pcap" > "$TMP/search.out" <<'PY' || true
import json, struct, sys

def tensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    return [b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for v in h.values()]

def streams(path):
    """TCP payload per direction, reassembled by sequence number."""
    d = open(path, "rb").read()
    magic = struct.unpack("<I", d[:4])[0]
    end = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(end + "I", d[20:24])[0]
    off, flows = 24, {}
    while off + 16 <= len(d):
        _, _, incl, _ = struct.unpack(end + "IIII", d[off:off + 16])
        pkt = d[off + 16:off + 16 + incl]
        off += 16 + incl
        l2 = {1: 14, 113: 16, 276: 20, 0: 4}.get(linktype)
        if l2 is None or len(pkt) < l2 + 20:
            continue
        ip = pkt[l2:]
        if ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        ihl = (ip[0] & 15) * 4
        tot = struct.unpack(">H", ip[2:4])[0]
        tcp = ip[ihl:tot]
        sport, dport, seq = struct.unpack(">HHI", tcp[:8])
        payload = tcp[(tcp[12] >> 4) * 4:]
        if payload:
            flows.setdefault((ip[12:16], sport, ip[16:20], dport), {})[seq] = payload
    out = []
    for segs in flows.values():
        seqs = sorted(segs)
        base, buf = seqs[0], bytearray()
        for s in seqs:
            at = (s - base) & 0xFFFFFFFF
            p = segs[s]
            if at + len(p) > len(buf):
                buf.extend(b"\0" * (at + len(p) - len(buf)))
            buf[at:at + len(p)] = p
        out.append(bytes(buf))
    return out

ts = [t for t in tensors(sys.argv[1]) if len(t) >= 64]
windows = []
per = 48 // len(ts) + 1
for t in ts:
    for k in range(per):
        at = (len(t) - 64) * k // max(per - 1, 1)
        w = t[at:at + 64]
        if len(set(w)) >= 16:  # skip runs of zeros and other low-entropy windows
            windows.append(w)
windows = windows[:48]
for name, path in (("plain", sys.argv[2]), ("curve", sys.argv[3])):
    ss = streams(path)
    total = sum(len(s) for s in ss)
    found = sum(1 for w in windows if any(w in s for s in ss))
    print(f"{name} {found} {len(windows)} {total} {len(ss)}")
PY
cat "$TMP/search.out"
read -r _ pf pn pbytes pflows < <(grep '^plain ' "$TMP/search.out") || true
read -r _ cf cn cbytes cflows < <(grep '^curve ' "$TMP/search.out") || true
if [ -n "${pn:-}" ] && [ "$pn" -ge 32 ] && [ "$pf" = "$pn" ]; then
  ok "plaintext capture ($pbytes bytes in $pflows TCP streams): all $pn weight windows found (positive control)"
else
  bad "plaintext capture: ${pf:-?} of ${pn:-?} weight windows found: the search does not work"
fi
if [ -n "${cn:-}" ] && [ "$cf" = 0 ] && [ "$((2 * ${cbytes:-0}))" -ge "${pbytes:-1}" ]; then
  ok "CURVE capture ($cbytes bytes in $cflows TCP streams): none of the $cn weight windows found"
else
  bad "CURVE capture: ${cf:-?} of ${cn:-?} weight windows found in ${cbytes:-?} bytes"
fi
finish
