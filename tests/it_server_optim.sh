# Server optimizers (--server-optimizer, --server-lr, --server-schedule),
# end to end with the real programs:
#   a) FedAvg at server rate 1 is the plain FedAvg step bit for bit: forcing
#      the optimizer path (a schedule that stays at 1) changes nothing;
#   b) FedYogi and FedAdam are bit-identical whatever --workers is, and the
#      server rate per round is in the metrics as its schedule says;
#   c) FedAdam over the network, coordinator SIGKILLed mid-run and resumed
#      from its checkpoint (moments included): bit-identical to an
#      uninterrupted fedlr-sim run; a resume with another server optimizer
#      or rate is refused naming the flag;
#   d) a networked FedYogi run equals fedlr-sim;
#   e) bad specs get clear errors.
source "$(dirname "$0")/lib.sh"

BASE=(--data-dir "$DATA_DIR" --model mlp:32 --clients 20 --fraction 0.25 --rounds 4 --batch-size 20
      --lr 0.05 --partition shards:2 --seed 5)
det() { # JSONL without wall times
  "$PY" - "$1" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    for k in ("seconds", "elapsed"): r.pop(k, None)
    print(json.dumps(r, sort_keys=True))
PY
}
sim() { # dir flags...
  local d=$1
  shift
  mkdir -p "$d"
  "$SIM" --quiet "${BASE[@]}" --metrics "$d/m.jsonl" --out "$d" "$@" > /dev/null 2> "$d/err" \
    || bad "fedlr-sim $*: $(tail -2 "$d/err")"
  det "$d/m.jsonl" > "$d/m.det"
}
same() { cmp -s "$1/model.safetensors" "$2/model.safetensors" && cmp -s "$1/m.det" "$2/m.det"; }

# ---- a) FedAvg at rate 1, through the optimizer path or not ----
sim "$TMP/plain"
sim "$TMP/forced" --server-optimizer fedavg --server-lr 1 --server-schedule "exp:gamma=1"
sim "$TMP/flags" --server-optimizer fedavg --server-lr 1 --server-schedule const
same "$TMP/plain" "$TMP/forced" && ok "FedAvg at server rate 1 through the server step = the plain FedAvg step, bit for bit" \
  || bad "forced server step at rate 1 differs from plain FedAvg"
same "$TMP/plain" "$TMP/flags" && ok "--server-optimizer fedavg --server-lr 1 = no flags, bit for bit" \
  || bad "explicit fedavg flags differ from the defaults"
# The same with a robust rule and clipping: the pseudo-gradient is the
# rule's aggregate (fl_agg_result), the very values it would have added.
sim "$TMP/plain_med" --aggregator median --clip-norm 0.5
sim "$TMP/forced_med" --aggregator median --clip-norm 0.5 --server-schedule "exp:gamma=1"
sim "$TMP/plain_tm" --aggregator trimmed-mean:0.2
sim "$TMP/forced_tm" --aggregator trimmed-mean:0.2 --server-schedule "exp:gamma=1"
same "$TMP/plain_med" "$TMP/forced_med" && same "$TMP/plain_tm" "$TMP/forced_tm" \
  && ok "median with clipping, trimmed mean: the server step at rate 1 = adding the rule's aggregate, bit for bit" \
  || bad "robust rules: the server step at rate 1 differs from adding the aggregate"
sim "$TMP/adam_med" --aggregator median --clip-norm 0.5 --server-optimizer fedadam --server-lr 0.01
accs=$(jsonl_eval "$TMP/adam_med/m.jsonl" "[r['test_accuracy'] for r in rows]")
"$PY" -c "import sys; a = $accs; sys.exit(0 if a[-1] > a[0] else 1)" \
  && ! cmp -s "$TMP/adam_med/model.safetensors" "$TMP/plain_med/model.safetensors" \
  && ok "FedAdam steps with the clipped median's aggregate (accuracy per round $accs)" \
  || bad "FedAdam on the clipped median: accuracy per round $accs"
lrs=$(jsonl_eval "$TMP/plain/m.jsonl" "[r['server_lr'] for r in rows]")
[ "$lrs" = "[1, 1, 1, 1]" ] && ok "plain FedAvg records server_lr 1 each round" || bad "server_lr $lrs"
sim "$TMP/half" --server-lr 0.5
cmp -s "$TMP/plain/model.safetensors" "$TMP/half/model.safetensors" \
  && bad "--server-lr 0.5 gave the weights of rate 1" || ok "--server-lr 0.5 moves the weights otherwise"

# ---- b) thread count; the server schedule in the metrics ----
for w in 1 2; do
  sim "$TMP/yogi$w" --workers $w --server-optimizer fedyogi --server-lr 0.03
  sim "$TMP/adam$w" --workers $w --server-optimizer fedadam:beta1=0.8,tau=0.01 --server-lr 0.05 \
    --server-schedule "cos:T=4,min=0.005"
done
same "$TMP/yogi1" "$TMP/yogi2" && ok "FedYogi: workers 1 and 2 give identical weights and metrics" \
  || bad "FedYogi: workers 1 and 2 differ"
same "$TMP/adam1" "$TMP/adam2" && ok "FedAdam with a cosine server schedule: workers 1 and 2 identical" \
  || bad "FedAdam: workers 1 and 2 differ"
want=$("$PY" -c "import math; print([0.005 + (0.05 - 0.005) * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(4)])")
got=$(jsonl_eval "$TMP/adam1/m.jsonl" "[r['server_lr'] for r in rows]")
[ "$got" = "$want" ] && ok "server_lr per round follows cos:T=4,min=0.005 from 0.05: $got" || bad "server_lr $got, want $want"
grep -q "server rate" "$TMP/adam1/chart.svg" 2>/dev/null && ok "the chart draws the server rate" \
  || bad "no server rate in $(ls "$TMP/adam1")/chart.svg"
cmp -s "$TMP/plain/model.safetensors" "$TMP/yogi1/model.safetensors" \
  && bad "FedYogi gave FedAvg's weights" || ok "FedYogi's weights differ from FedAvg's"

# ---- c) FedAdam networked: SIGKILL, resume, = fedlr-sim ----
FLAGS=(--model mlp:32 --clients 4 --fraction 1 --rounds 5 --batch-size 20 --lr 0.05 --seed 9
       --server-optimizer fedadam --server-lr 0.02 --server-schedule "exp:gamma=0.8")
PORT=$(free_port)
coord() {
  timeout 300 "$COORD" --bind "tcp://127.0.0.1:$PORT" "${FLAGS[@]}" --start-clients 4 --round-timeout 120 \
    --heartbeat 0.5 --client-timeout 5 --metrics "$TMP/net/m.jsonl" "$@" >> "$TMP/coord.out" 2>> "$TMP/coord.log" &
  CPID=$!; PIDS+=($CPID)
}
mkdir -p "$TMP/net"
coord --out "$TMP/net"
CL=()
for i in 0 1 2 3; do
  timeout 300 "$CLIENT" --connect "tcp://127.0.0.1:$PORT" --dataset fashion-mnist --data-dir "$DATA_DIR" \
    --partition shards:2 --num-partitions 4 --partition-index $i --seed 9 2> "$TMP/c$i.log" &
  PIDS+=($!); CL+=($!)
done
wait_until 120 lines_at_least "$TMP/net/m.jsonl" 2 || bad "round 2 never finished"
kill9 $CPID
rc=0; wait $CPID 2>/dev/null || rc=$?
done_before=$(grep -c . "$TMP/net/m.jsonl")
[ $rc -eq 137 ] && [ "$done_before" -lt 5 ] && ok "FedAdam coordinator killed (SIGKILL) after $done_before of 5 rounds" \
  || bad "the coordinator was not killed mid-run: exit $rc after $done_before rounds"
names=$("$PY" -c "
import json, struct, sys
b = open('$TMP/net/checkpoint.safetensors', 'rb').read()
h = json.loads(b[8:8 + struct.unpack('<Q', b[:8])[0]])
print(' '.join(sorted(k for k in h if k.startswith('fedlr.server_opt.'))), h['__metadata__']['fedlr_server_optimizer'])")
[ "$names" = "fedlr.server_opt.m.0 fedlr.server_opt.m.1 fedlr.server_opt.m.2 fedlr.server_opt.m.3 fedlr.server_opt.v.0 fedlr.server_opt.v.1 fedlr.server_opt.v.2 fedlr.server_opt.v.3 fedadam:beta1=0.9,beta2=0.99,tau=0.001" ] \
  && ok "the checkpoint holds FedAdam's moments (m and v per tensor) and its canonical spec" || bad "checkpoint tensors/spec: $names"
# A resume with another server optimizer or rate computes another run: refused.
expect_fail "resume with --server-optimizer fedyogi" \
  "was written with --server-optimizer fedadam:beta1=0.9,beta2=0.99,tau=0.001; this run has --server-optimizer fedyogi:beta1=0.9,beta2=0.99,tau=0.001" \
  timeout 60 "$COORD" --bind "tcp://127.0.0.1:$(free_port)" "${FLAGS[@]}" --server-optimizer fedyogi --resume "$TMP/net"
expect_fail "resume with --server-lr 0.03" "was written with --server-lr 0.02; this run has --server-lr 0.03" \
  timeout 60 "$COORD" --bind "tcp://127.0.0.1:$(free_port)" "${FLAGS[@]}" --server-lr 0.03 --resume "$TMP/net"
coord --resume "$TMP/net"
rc=0; wait $CPID || rc=$?
[ $rc -eq 0 ] && ok "resumed FedAdam coordinator finished (exit 0)" || { bad "coordinator exit $rc"; tail -20 "$TMP/coord.log"; }
for p in "${CL[@]}"; do wait "$p" || true; done
rounds=$(jsonl_eval "$TMP/net/m.jsonl" "[r['round'] for r in rows]")
[ "$rounds" = "[1, 2, 3, 4, 5]" ] && ok "metrics hold each round once: $rounds" || bad "metrics rounds $rounds"
mkdir -p "$TMP/netsim"
"$SIM" --quiet --data-dir "$DATA_DIR" --partition shards:2 "${FLAGS[@]}" --metrics "$TMP/netsim/m.jsonl" \
  --out "$TMP/netsim" > /dev/null
if st_equal "$TMP/net/model.safetensors" "$TMP/netsim/model.safetensors"; then
  ok "killed-and-resumed FedAdam run is bit-identical to fedlr-sim"
else
  bad "resumed FedAdam weights differ from fedlr-sim (max diff $(st_maxdiff "$TMP/net/model.safetensors" "$TMP/netsim/model.safetensors"))"
fi
a=$(jsonl_eval "$TMP/net/m.jsonl" "[(r['server_lr'], r['train_loss'], r['test_accuracy']) for r in rows]")
b=$(jsonl_eval "$TMP/netsim/m.jsonl" "[(r['server_lr'], r['train_loss'], r['test_accuracy']) for r in rows]")
[ "$a" = "$b" ] && ok "... and so are its metrics (server rate, train loss, test accuracy per round)" || bad "metrics differ: $a vs $b"

# ---- d) FedYogi networked = fedlr-sim ----
FLAGS=(--model mlp:32 --clients 3 --fraction 1 --rounds 3 --batch-size 20 --lr 0.05 --seed 4
       --server-optimizer fedyogi:tau=0.01 --server-lr 0.01)
PORT=$(free_port)
timeout 300 "$COORD" --bind "tcp://127.0.0.1:$PORT" "${FLAGS[@]}" --start-clients 3 --round-timeout 120 \
  --out "$TMP/yogi_net" > /dev/null 2> "$TMP/ycoord.log" &
CPID=$!; PIDS+=($CPID)
for i in 0 1 2; do
  timeout 300 "$CLIENT" --connect "tcp://127.0.0.1:$PORT" --dataset fashion-mnist --data-dir "$DATA_DIR" \
    --partition iid --num-partitions 3 --partition-index $i --seed 4 2> "$TMP/y$i.log" &
  PIDS+=($!)
done
rc=0; wait $CPID || rc=$?
[ $rc -eq 0 ] && ok "FedYogi coordinator exited 0" || { bad "FedYogi coordinator exit $rc"; tail -5 "$TMP/ycoord.log"; }
"$SIM" --quiet --data-dir "$DATA_DIR" --partition iid "${FLAGS[@]}" --out "$TMP/yogi_sim" > /dev/null
st_equal "$TMP/yogi_net/model.safetensors" "$TMP/yogi_sim/model.safetensors" \
  && ok "networked FedYogi is bit-identical to fedlr-sim" \
  || bad "networked FedYogi differs from fedlr-sim (max diff $(st_maxdiff "$TMP/yogi_net/model.safetensors" "$TMP/yogi_sim/model.safetensors"))"

# ---- e) bad specs ----
expect_fail "unknown server optimizer" "--server-optimizer: server optimizer 'fedsgd': unknown kind 'fedsgd' (fedavg, fedavgm" \
  "$SIM" --server-optimizer fedsgd
expect_fail "tau 0" "server optimizer 'fedyogi:tau=0': tau=0 must be > 0" "$SIM" --server-optimizer fedyogi:tau=0
expect_fail "tau below 0 (coordinator)" "tau=-1 must be > 0" "$COORD" --server-optimizer fedadam:tau=-1
expect_fail "negative server rate" "--server-lr -0.1" "$SIM" --server-lr -0.1
expect_fail "server rate 0" "--server-lr 0" "$COORD" --server-lr 0
expect_fail "bad server schedule" "--server-schedule" "$SIM" --server-schedule "exp:gama=0.9"
expect_fail "negative FedProx mu" "--prox-mu -1" "$SIM" --prox-mu -1
finish
