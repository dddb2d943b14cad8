# Several hosts on one machine: fedlr-coordinator in its own network namespace
# and 3 fedlr-client processes, each in another, joined by veth pairs whose
# both ends delay (20 ms +- 5 ms) and lose (1 %) packets with tc netem. The run
# must complete (every process exits 0) with 5 rounds and a final accuracy
# >= 0.75; the mean seconds per round is reported. Needs root (skips
# otherwise). Traffic stays inside the namespaces this test creates; they are
# deleted on exit.
#
# A kernel without sch_netem (some VMs and containers) cannot delay or drop
# packets; the links are then rate-limited with tbf (2 Mbit/s each way)
# instead, said loudly in the output. FEDLR_REQUIRE_NETEM=1 makes that a skip.
source "$(dirname "$0")/lib.sh"

for b in "$COORD" "$CLIENT"; do
  [ -x "$b" ] || { echo "skip: $b is not built"; exit 77; }
done
[ "$(id -u)" -eq 0 ] || { echo "skip: network namespaces need root"; exit 77; }
command -v ip > /dev/null && command -v tc > /dev/null \
  || { echo "skip: iproute2 (ip, tc) is not installed"; exit 77; }

N=3
NS_COORD="fl-coord-$$"
NS_CLIENTS=()
for x in $(seq 1 $N); do NS_CLIENTS+=("fl-c$x-$$"); done
CREATED=()
LIMIT=300 # seconds, for every process of the run

# Processes (in any namespace) run under `timeout`; SIGTERM first, which
# `timeout` forwards, then SIGKILL. Then anything still inside one of our
# namespaces (only what this test started), then the namespaces themselves,
# which takes their veth ends with them.
teardown() {
  local p ns
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 10); do
    local alive=0
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.2
  done
  cleanup_pids
  for ns in "${CREATED[@]:-}"; do
    [ -n "$ns" ] || continue
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || echo "warning: could not delete namespace $ns"
  done
  rm -rf "$TMP"
}
trap teardown EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

if ! ip netns add "$NS_COORD" 2> "$TMP/netns.err"; then
  echo "skip: ip netns add failed: $(cat "$TMP/netns.err")"
  exit 77
fi
CREATED+=("$NS_COORD")
for ns in "${NS_CLIENTS[@]}"; do
  ip netns add "$ns"
  CREATED+=("$ns")
done

# Host x: veth "eth0" (10.77.x.2/30) in fl-cx-PID, peer "cx" (10.77.x.1/30)
# in fl-coord-PID. Created directly inside the namespaces, so the short
# names cannot clash with the machine's interfaces.
IMPAIR=(netem delay 20ms 5ms loss 1%)
LINK="20 ms +- 5 ms delay, 1 % loss each way"
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
in_ns "$NS_COORD" ip link set lo up
for x in $(seq 1 $N); do
  ns=${NS_CLIENTS[$((x - 1))]}
  ip link add "c$x" netns "$NS_COORD" type veth peer name eth0 netns "$ns"
  in_ns "$ns" ip link set lo up
  in_ns "$ns" ip addr add "10.77.$x.2/30" dev eth0
  in_ns "$ns" ip link set eth0 up
  in_ns "$NS_COORD" ip addr add "10.77.$x.1/30" dev "c$x"
  in_ns "$NS_COORD" ip link set "c$x" up
  if [ $x -eq 1 ] && ! in_ns "$ns" tc qdisc add dev eth0 root "${IMPAIR[@]}" 2> "$TMP/tc.err"; then
    if [ "${FEDLR_REQUIRE_NETEM:-0}" = 1 ]; then
      echo "skip: tc netem is not available: $(cat "$TMP/tc.err")"
      exit 77
    fi
    echo "NOTE: tc netem is not available ($(cat "$TMP/tc.err") - the kernel lacks sch_netem):"
    echo "NOTE: links rate-limited with tbf 2 Mbit/s each way; 1 % of packets dropped at random"
    echo "NOTE: in every namespace by iptables (statistic match); 20 +- 5 ms delay each way added"
    echo "NOTE: by a TCP delay proxy (tests/tools/delay_proxy.py) in the coordinator's namespace"
    IMPAIR=(tbf rate 2mbit burst 16kbit latency 400ms)
    LINK="tbf 2 Mbit/s + 1 % random loss (iptables) + 20 +- 5 ms delay (proxy) each way"
    IPT_LOSS=1
    in_ns "$ns" tc qdisc add dev eth0 root "${IMPAIR[@]}"
  elif [ $x -gt 1 ]; then
    in_ns "$ns" tc qdisc add dev eth0 root "${IMPAIR[@]}"
  fi
  in_ns "$NS_COORD" tc qdisc add dev "c$x" root "${IMPAIR[@]}"
done
# Without netem, packet loss comes from iptables' statistic match: real drops
# on the veth links that TCP (and so ZeroMQ) must recover from.
if [ "${IPT_LOSS:-0}" = 1 ]; then
  if command -v iptables > /dev/null; then
    for ns in "$NS_COORD" "${NS_CLIENTS[@]}"; do
      in_ns "$ns" iptables -A INPUT ! -i lo -m statistic --mode random --probability 0.01 -j DROP
    done
    ok "1 % random packet loss on every link: $(in_ns "$NS_COORD" iptables -S INPUT | tail -1)"
  else
    skip "1 % packet loss: iptables is not installed, no loss emulated"
    LINK="tbf 2 Mbit/s each way, no loss, no delay"
  fi
fi
qd=$(in_ns "${NS_CLIENTS[0]}" tc qdisc show dev eth0)
grep -q "${IMPAIR[0]}" <<<"$qd" && ok "$((N + 1)) namespaces, $N veth links with: $qd" \
  || bad "qdisc not in place: $qd"

SEED=9
DATA=(--seed $SEED --dataset fashion-mnist --data-dir "$DATA_DIR")
PART=(--partition iid)
t0=$SECONDS
in_ns "$NS_COORD" timeout -k 5 $LIMIT "$COORD" --bind tcp://0.0.0.0:7070 "${DATA[@]}" \
  --model softmax --clients $N --min-clients $N --fraction 1 --rounds 5 --local-epochs 1 \
  --batch-size 20 --lr 0.05 --round-timeout 60 \
  --metrics "$TMP/net.jsonl" --out "$TMP/net" > "$TMP/coord.out" 2> "$TMP/coord.log" &
CPID=$!; PIDS+=($CPID)
# Without netem, latency comes from the delay proxy: clients reach the
# coordinator through it (port 7071 -> 7070), 20 +- 5 ms each way.
PORT=7070
if [ "${IPT_LOSS:-0}" = 1 ]; then
  in_ns "$NS_COORD" timeout -k 5 $LIMIT "$PY" "$(dirname "$0")/tools/delay_proxy.py" 0.0.0.0 7071 \
    127.0.0.1 7070 20 5 2> "$TMP/proxy.log" &
  PIDS+=($!)
  PORT=7071
  sleep 0.5
fi
CLIENT_PIDS=()
for x in $(seq 1 $N); do
  in_ns "${NS_CLIENTS[$((x - 1))]}" timeout -k 5 $LIMIT "$CLIENT" --connect "tcp://10.77.$x.1:$PORT" \
    "${DATA[@]}" "${PART[@]}" --num-partitions $N --partition-index $((x - 1)) --name "host$x" --quiet \
    > "$TMP/c$x.out" 2> "$TMP/c$x.log" &
  CLIENT_PIDS+=($!); PIDS+=($!)
done

crc=0; wait $CPID || crc=$?
[ $crc -eq 0 ] && ok "coordinator exited 0 after $((SECONDS - t0)) s" \
  || { bad "coordinator exit $crc"; tail -20 "$TMP/coord.log"; }
for x in $(seq 1 $N); do
  rc=0; wait "${CLIENT_PIDS[$((x - 1))]}" || rc=$?
  [ $rc -eq 0 ] && ok "client host$x (10.77.$x.2) exited 0" || { bad "client host$x exit $rc"; tail -5 "$TMP/c$x.log"; }
done
if [ "$PORT" = 7071 ]; then
  n=$(grep -c "connection from 10.77" "$TMP/proxy.log" || true)
  [ "$n" -ge $N ] && ok "the clients' traffic went through the delay proxy ($n connections)" \
    || bad "delay proxy saw $n connections: $(cat "$TMP/proxy.log")"
fi
joined=$(grep -c "joined with" "$TMP/coord.log" || true)
[ "$joined" -ge $N ] && ok "$joined joins logged by the coordinator" || bad "only $joined joins: $(cat "$TMP/coord.log")"

rows=$(jsonl_eval "$TMP/net.jsonl" "len(rows)" 2>/dev/null || echo 0)
[ "$rows" = 5 ] && ok "metrics: 5 rounds" || bad "metrics: $rows rounds"
rep=$(jsonl_eval "$TMP/net.jsonl" "[r['clients_reported'] for r in rows]" 2>/dev/null || echo "?")
[ "$rep" = "[3, 3, 3, 3, 3]" ] && ok "all 3 clients reported in every round" || bad "reports per round: $rep"
acc=$(jsonl_eval "$TMP/net.jsonl" "rows[-1]['test_accuracy']" 2>/dev/null || echo 0)
"$PY" -c "import sys; sys.exit(0 if $acc >= 0.75 else 1)" \
  && ok "final test accuracy $acc >= 0.75" || bad "final test accuracy $acc < 0.75"
"$SIM" --quiet "${DATA[@]}" "${PART[@]}" --model softmax --clients $N --fraction 1 --rounds 5 --local-epochs 1 \
  --batch-size 20 --lr 0.05 --out "$TMP/sim" > /dev/null
st_equal "$TMP/net/model.safetensors" "$TMP/sim/model.safetensors" \
  && ok "weights across impaired links are bit-identical to fedlr-sim's" || bad "weights differ from fedlr-sim's"
per=$(jsonl_eval "$TMP/net.jsonl" "'%.2f s mean, %.2f-%.2f s' % (sum(r['seconds'] for r in rows) / len(rows), min(r['seconds'] for r in rows), max(r['seconds'] for r in rows))" 2>/dev/null || echo "?")
echo "seconds per round ($LINK): $per"
finish
