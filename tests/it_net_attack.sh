# fedlr-coordinator and 6 fedlr-client processes over loopback TCP, some of
# them started with --attack, in two runs:
#   1. the coordinate-wise median with clipping against two clients sending
#      sign-flipped, 5x scaled updates;
#   2. FedAvg with --max-examples against one client sending NaN (rejected:
#      the round closes without waiting for the deadline) and one claiming
#      10^9 examples (capped, over the wire: in its Join and its updates).
# Each run finishes, every process exits 0, and the final weights are
# bit-identical to fedlr-sim's with the same flags and --attackers: fedlr-sim
# picks its attackers from the seed and prints their ids, and a networked
# client's id is its --partition-index, so the same clients attack. One
# trainer applies the attack, one engine aggregates: one code path, two
# transports.
source "$(dirname "$0")/lib.sh"

# net_run NAME NATTACKERS "ATTACK_1 ATTACK_2 ..." FLAGS...: fedlr-sim with
# --attackers NATTACKERS, then the networked run where the k-th attacker id
# fedlr-sim printed gets --attack ATTACK_k; compares the final weights.
# COORD_FLAGS: extra flags for the coordinator only.
net_run() {
  local name=$1 na=$2 attacks=($3)
  shift 3
  local flags=("$@") ids
  "$SIM" --quiet --data-dir "$DATA_DIR" --partition iid "${flags[@]}" --attack "${attacks[0]}" \
    --attackers "$na" --out "$TMP/$name-sim" > /dev/null 2> "$TMP/$name-sim.err" \
    || { bad "$name: fedlr-sim failed: $(tail -3 "$TMP/$name-sim.err")"; return; }
  ids=$(sed -n "s/^fedlr-sim: $na of 6 clients attack ([^)]*): //p" "$TMP/$name-sim.err")
  if [ "$(wc -w <<< "$ids")" -ne "$na" ]; then bad "$name: no attacker ids in: $(cat "$TMP/$name-sim.err")"; return; fi
  ok "$name: fedlr-sim's attackers: $ids"
  local port; port=$(free_port)
  timeout 300 "$COORD" --bind "tcp://127.0.0.1:$port" "${flags[@]}" "${COORD_FLAGS[@]}" --start-clients 6 --round-timeout 120 \
    --metrics "$TMP/$name.jsonl" --out "$TMP/$name-net" > "$TMP/$name-coord.out" 2> "$TMP/$name-coord.log" &
  local cpid=$! pids=() i k a
  PIDS+=($cpid)
  for i in 0 1 2 3 4 5; do
    local extra=()
    k=0
    for a in $ids; do [ "$a" = "$i" ] && extra=(--attack "${attacks[$k]}"); k=$((k + 1)); done
    timeout 300 "$CLIENT" --connect "tcp://127.0.0.1:$port" --dataset fashion-mnist --data-dir "$DATA_DIR" \
      --partition iid --num-partitions 6 --partition-index $i --seed 11 "${extra[@]}" 2> "$TMP/$name-c$i.log" &
    pids+=($!); PIDS+=($!)
  done
  local rc=0 cfail=0; wait $cpid || rc=$?
  [ $rc -eq 0 ] && ok "$name: coordinator exited 0" || { bad "$name: coordinator exit $rc"; tail -20 "$TMP/$name-coord.log"; }
  for i in 0 1 2 3 4 5; do
    rc=0; wait "${pids[$i]}" || rc=$?
    [ $rc -eq 0 ] || { cfail=1; bad "$name: client $i exit $rc"; tail -5 "$TMP/$name-c$i.log"; }
  done
  [ $cfail -eq 0 ] && ok "$name: all 6 clients exited 0"
  local n; n=$(grep -l "ATTACKING" "$TMP/$name"-c*.log | wc -l)
  [ "$n" -eq "$na" ] && ok "$name: $na clients said they attack" || bad "$name: $n clients said they attack"
  local rows; rows=$(jsonl_eval "$TMP/$name.jsonl" "len(rows)")
  [ "$rows" = 6 ] && ok "$name: 6 rounds recorded" || bad "$name: $rows rounds recorded"
  if st_equal "$TMP/$name-net/model.safetensors" "$TMP/$name-sim/model.safetensors"; then
    ok "$name: networked weights under attack are bit-identical to fedlr-sim's"
  else
    bad "$name: networked weights differ from fedlr-sim's (max diff $(st_maxdiff "$TMP/$name-net/model.safetensors" "$TMP/$name-sim/model.safetensors"))"
  fi
}

BASE=(--model softmax --clients 6 --fraction 0.5 --rounds 6 --local-epochs 1 --batch-size 20
      --lr 0.05 --seed 11)

COORD_FLAGS=(--quorum 0.8)
net_run robust 2 "sign-flip,scale:5 sign-flip,scale:5" "${BASE[@]}" --aggregator median --clip-norm 1
clipped=$(jsonl_eval "$TMP/robust.jsonl" "sum(r['clipped'] for r in rows)")
[ "$clipped" -gt 0 ] && ok "robust: the coordinator clipped $clipped updates (metrics)" || bad "robust: nothing clipped"

# NaN: the quorum is 2 of the 3 sampled, so a round with the NaN client
# closes once the other two report, as fedlr-sim's does.
COORD_FLAGS=(--quorum 0.5)
net_run nan 1 "nan" "${BASE[@]}"
rej=$(jsonl_eval "$TMP/nan.jsonl" "sum(r['rejected'] for r in rows)")
logged=$(grep -c "rejected an update from .*NaN\|rejected an update from .*non-finite" "$TMP/nan-coord.log" || true)
[ "$rej" -gt 0 ] && [ "$rej" = "$logged" ] && ok "nan: $rej NaN updates rejected and logged" || bad "nan: rejected $rej, logged $logged"
if grep -q "round deadline" "$TMP/nan-coord.log"; then
  bad "nan: a round waited for its deadline"
else
  ok "nan: no round waited for the deadline: $(grep -m1 'its update was rejected' "$TMP/nan-coord.log")"
fi

# 10^9 examples claimed, capped at the true partition size (10,000).
net_run claim 1 "sign-flip,examples:1000000000" "${BASE[@]}" --max-examples 10000
grep -q "joined with 1000000000 examples" "$TMP/claim-coord.log" && ok "claim: the liar joined claiming 10^9 examples" || bad "claim: no 10^9 join"
capped=$(jsonl_eval "$TMP/claim.jsonl" "sum(r['capped'] for r in rows)")
[ "$capped" -gt 0 ] && ok "claim: $capped claims capped (metrics)" || bad "claim: nothing capped"
finish
