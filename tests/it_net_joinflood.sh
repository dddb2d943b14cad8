# Join flood (issue 5, part 3): a networked run with 4 real clients, while
# two flooders (tests/tools/fl_badpeer --flood) send Joins with random names
# over 2 x 100 connections, 1,000 a second each, from the end of round 1 to
# the end of the run, never heartbeating. With the default limits
# (--join-rate 100/s, --join-burst 200):
#  - every round completes with the updates of all 4 real clients, and only
#    theirs (a joined flooder never heartbeats, so it is never sampled;
#    --clients 64 leaves 60 free slots for the flood to fill);
#  - the flood is rate-limited and logged: at most the budget (200 + 100/s)
#    of joins reaches the engine, the rest is answered 'busy' and counted;
#  - the final weights are bit-identical to fedlr-sim's with 4 clients.
# A run without the flood first gives the baseline seconds per round (both
# are printed, not compared: no timed assertions).
source "$(dirname "$0")/lib.sh"

BADPEER="$BUILD/tests/fl_badpeer"
for b in "$COORD" "$CLIENT" "$BADPEER" "$SIM"; do
  [ -x "$b" ] || { echo "skip: $b is not built"; exit 77; }
done

SEED=6
FLAGS=(--model mlp:32 --fraction 1 --rounds 20 --local-epochs 2 --batch-size 20 --lr 0.05 --seed $SEED)
DATA=(--dataset fashion-mnist --data-dir "$DATA_DIR" --partition iid --num-partitions 4 --seed $SEED)

# run NAME FLOOD(0|1)
run() {
  local name=$1 flood=$2 port
  port=$(free_port)
  local ep="tcp://127.0.0.1:$port" pids=() fpids=()
  # --max-connections 512: the 200 flood connections all stay (the bound on
  # connections is tests/it_net_conns.sh's subject; this one is the joins').
  timeout -k 10 300 "$COORD" --bind "$ep" "${FLAGS[@]}" --clients 64 --start-clients 4 --round-timeout 60 \
    --max-connections 512 \
    --data-dir "$DATA_DIR" --metrics "$TMP/$name.jsonl" --out "$TMP/$name" \
    > /dev/null 2> "$TMP/$name.coord.log" &
  local cpid=$!
  PIDS+=($cpid)
  for i in 0 1 2 3; do
    timeout -k 10 300 "$CLIENT" --connect "$ep" "${DATA[@]}" --partition-index $i --name "real$i" --quiet \
      2> "$TMP/$name.c$i.log" &
    pids+=($!); PIDS+=($!)
  done
  if [ "$flood" = 1 ]; then
    # From the end of round 1 on, so the real clients hold their slots.
    wait_until 120 lines_at_least "$TMP/$name.jsonl" 1 || bad "$name: round 1 never finished"
    for f in 0 1; do
      timeout -k 10 300 "$BADPEER" --connect "$ep" --flood 300000 --conns 100 --duration 300 --name "flood$f" \
        --timeout 250 > "$TMP/$name.flood$f.out" 2>&1 &
      fpids+=($!); PIDS+=($!)
    done
  fi
  local rc=0
  wait $cpid || rc=$?
  [ $rc -eq 0 ] && ok "$name: coordinator exited 0" || { bad "$name: coordinator exit $rc"; tail -20 "$TMP/$name.coord.log"; }
  for i in 0 1 2 3; do
    rc=0; wait "${pids[$i]}" || rc=$?
    [ $rc -eq 0 ] || { bad "$name: client real$i exit $rc"; tail -5 "$TMP/$name.c$i.log"; }
  done
  for p in "${fpids[@]:-}"; do
    [ -n "$p" ] || continue
    kill -TERM "$p" 2>/dev/null || true # the run is over: stop flooding
    # timeout -k: a flooder that does not end within 10 s of its TERM is
    # killed (exit 137) and reported, instead of holding the test for ever
    rc=0; wait "$p" || rc=$?
    [ $rc -eq 0 ] || bad "$name: flooder exit $rc$([ $rc -eq 137 ] && echo ': it did not end after SIGTERM')"
  done
}

run base 0
run flood 1

for f in 0 1; do cat "$TMP/flood.flood$f.out"; done
# Replies per flooder: "W welcome, B busy, R refused" (welcome and refused
# joins reached the engine; busy ones did not).
sum_field() { cat "$TMP"/flood.flood*.out | sed -n "s/$1/\\1/p" | awk '{ s += $1 } END { print s + 0 }'; }
sent=$(sum_field '^flood: sent \([0-9]*\) joins.*')
busy=$(sum_field '.* \([0-9]*\) busy,.*')
engine=$(sum_field '.* \([0-9]*\) welcome.*')
engine=$((engine + $(sum_field '.* \([0-9]*\) refused,.*')))
secs=$(sed -n 's/.* in \([0-9.]*\) s;.*/\1/p' "$TMP/flood.flood0.out")
secs=${secs:-0}
budget=$("$PY" -c "print(int(200 + 100 * ($secs + 3)))")
[ "${sent:-0}" -ge 1000 ] && ok "the flooders sent $sent joins over 200 connections in ${secs} s" || bad "flooders sent ${sent:-0} joins"
# Once the run is over, the coordinator answers everything with its final
# Stop while it waits for the peers to leave: the joins it refused for the
# rate are the busy answers the flooders got.
refused_rate=$(sed -n 's/.*refused: \([0-9]*\) joins over the rate limit.*/\1/p' "$TMP/flood.coord.log")
[ "${busy:-0}" -ge 1000 ] && [ "${busy:-0}" -ge $(( ${refused_rate:-0} * 95 / 100 )) ] \
  && ok "$busy of them were answered 'busy' by the rate limit (the coordinator counted ${refused_rate:-0})" \
  || bad "only ${busy:-0} busy answers (the coordinator refused ${refused_rate:-?})"
[ "$engine" -le "$budget" ] && ok "$engine joins reached the engine (budget 200 + 100/s: $budget)" \
  || bad "$engine joins reached the engine, over the budget $budget"
refused=$(sed -n 's/.*refused: \([0-9]*\) joins over the rate limit.*/\1/p' "$TMP/flood.coord.log")
[ "${refused:-0}" -ge "${busy:-1}" ] && ok "coordinator: $(grep -m1 -o 'refused: [0-9]* joins over the rate limit.*' "$TMP/flood.coord.log")" \
  || bad "coordinator refusal summary: ${refused:-none} (busy replies ${busy:-0})"
grep -q "join rate limit reached" "$TMP/flood.coord.log" && grep -qE "[0-9]+ more 'join over the rate' events" "$TMP/flood.coord.log" \
  && ok "logged: $(grep -m1 -oE "[0-9]+ more 'join over the rate' events.*" "$TMP/flood.coord.log")" \
  || bad "no rate-limit log lines"
joined=$(grep -c "client flood.* joined" "$TMP/flood.coord.log" || true)
welcomed=$(sum_field '.* \([0-9]*\) welcome.*')
[ "$welcomed" -ge 1 ] && [ "$welcomed" -le 60 ] && [ "$joined" -le "$welcomed" ] \
  && ok "$welcomed flood joins were admitted ($joined logged), within the 60 free slots (the rest 'run is full')" \
  || bad "flood joins admitted: $welcomed welcomed, $joined logged; the free slots were 60"
lines=$(wc -l < "$TMP/flood.coord.log")
[ "$lines" -lt 1000 ] && ok "the coordinator's log stayed short under the flood ($lines lines)" \
  || bad "the flood flooded the log: $lines lines"

for name in base flood; do
  rows=$(jsonl_eval "$TMP/$name.jsonl" "len(rows)")
  allin=$(jsonl_eval "$TMP/$name.jsonl" "all(r['clients_reported'] == 4 and r['participants'] == [0, 1, 2, 3] and r['dropped'] == [] for r in rows)")
  [ "$rows" = 20 ] && [ "$allin" = True ] && ok "$name: 20 rounds, each with the updates of exactly the 4 real clients" \
    || bad "$name: $rows rounds; rounds: $(cat "$TMP/$name.jsonl")"
done
mean() { jsonl_eval "$1" "'%.3f' % (sum(r['seconds'] for r in rows[1:]) / len(rows[1:]))"; }
echo "seconds per round (rounds 2..20): without the flood $(mean "$TMP/base.jsonl"), with it $(mean "$TMP/flood.jsonl")"

"$SIM" --quiet --data-dir "$DATA_DIR" --partition iid "${FLAGS[@]}" --clients 4 --out "$TMP/sim" > /dev/null
for name in base flood; do
  if st_equal "$TMP/$name/model.safetensors" "$TMP/sim/model.safetensors"; then
    ok "$name: weights bit-identical to fedlr-sim's"
  else
    bad "$name: weights differ from fedlr-sim's (max diff $(st_maxdiff "$TMP/$name/model.safetensors" "$TMP/sim/model.safetensors"))"
  fi
done
finish
