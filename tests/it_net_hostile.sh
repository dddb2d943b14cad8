# Issue 9, defects 2, 3, 5 and 6: a hostile peer (tests/tools/fl_badpeer)
# against a real run of fedlr-coordinator and 3 fedlr-client processes.
#   - bad Joins (unsupported protocol version, empty, overlong, control-
#     character, C1 and non-UTF-8 names, 2^63 and 0 examples, a slot beyond
#     --clients, another client's slot) each get a Stop{error} whose reason
#     says why, is clean UTF-8 and never names another client; the log shows
#     the peer's bytes escaped, never raw;
#   - floods: 2,000 unjoined Updates, 2,000 multipart messages, 2,000
#     wrong-direction messages, 2,000 undecodable messages and 100,000
#     unjoined Heartbeats whose replies are never read write a bounded number
#     of log lines (at most 20 per reason per 10 s, the rest counted and
#     summarized);
#   - none of it changes the run: no refused Join registers anything (the
#     2^63-example one included), so the final weights are bit-identical to
#     fedlr-sim with the 3 honest clients.
source "$(dirname "$0")/lib.sh"

BADPEER="$BUILD/tests/fl_badpeer"
[ -x "$BADPEER" ] || { echo "skip: $BADPEER is not built"; exit 77; }
LIMIT=300
DATA=(--dataset fashion-mnist --data-dir "$DATA_DIR" --seed 7)
RUN=(--model softmax --fraction 1 --rounds 8 --local-epochs 2 --batch-size 10 --lr 0.05 "${DATA[@]}")
PORT=$(free_port)
EP="tcp://127.0.0.1:$PORT"
timeout -k 5 $LIMIT "$COORD" --bind "$EP" "${RUN[@]}" --clients 3 --start-clients 3 \
  --metrics "$TMP/net.jsonl" --out "$TMP/net" > /dev/null 2> "$TMP/coord.log" &
CPID=$!; PIDS+=($CPID)
wait_until 30 grep -q "listening on" "$TMP/coord.log" || { bad "no coordinator: $(cat "$TMP/coord.log")"; finish; exit 1; }
CL=()
for i in 0 1 2; do
  timeout -k 5 $LIMIT "$CLIENT" --connect "$EP" "${DATA[@]}" --partition iid --num-partitions 3 \
    --partition-index $i --name "legit-$i" --quiet 2> "$TMP/c$i.log" &
  CL+=($!); PIDS+=($!)
done
wait_until 30 grep -q "legit-0 (id 0) joined" "$TMP/coord.log" || bad "legit-0 did not join"

# Bad joins, while the run goes on.
timeout -k 5 60 "$BADPEER" --connect "$EP" --bad-joins all --taken-slot 0 --forbid legit-0 \
  --timeout 10 > "$TMP/badjoins.out" 2>&1 && ok "every bad Join was refused with its reason" \
  || bad "bad joins: $(grep FAIL "$TMP/badjoins.out")"
sed 's/^/  /' "$TMP/badjoins.out"
n=$(grep -c ": ok: Stop{error=1}" "$TMP/badjoins.out" || true)
[ "$n" -eq 12 ] && ok "12 refusals, each a Stop{error} with a clean reason" || bad "$n of 12 refusals ok"

# Floods, all at once.
t0=$SECONDS
SPAMS=()
for kind in update multipart welcome garbage; do
  timeout -k 5 120 "$BADPEER" --connect "$EP" --spam $kind --count 2000 > "$TMP/spam-$kind.out" 2>&1 &
  SPAMS+=($!); PIDS+=($!)
done
timeout -k 5 120 "$BADPEER" --connect "$EP" --spam heartbeat --count 100000 > "$TMP/spam-heartbeat.out" 2>&1 &
SPAMS+=($!); PIDS+=($!)
for p in "${SPAMS[@]}"; do wait "$p" || true; done
for kind in update multipart welcome garbage heartbeat; do
  grep -q "^spam: sent" "$TMP/spam-$kind.out" && ok "$(cat "$TMP/spam-$kind.out")" \
    || bad "spam $kind: $(cat "$TMP/spam-$kind.out")"
done
t_flood=$((SECONDS - t0 + 1))

rc=0; wait $CPID || rc=$?
[ $rc -eq 0 ] && ok "coordinator exited 0" || { bad "coordinator exit $rc"; tail -20 "$TMP/coord.log"; }
for i in 0 1 2; do
  rc=0; wait "${CL[$i]}" || rc=$?
  [ $rc -eq 0 ] || bad "client $i exit $rc: $(tail -3 "$TMP/c$i.log")"
done

# The log: bounded per reason (20 lines per 10 s window), suppression counted.
lines=$(wc -l < "$TMP/coord.log")
bytes=$(wc -c < "$TMP/coord.log")
windows=$(( (t_flood + 20) / 10 + 1 ))
max_lines=$(( 13 * 21 * windows + 60 ))
[ "$lines" -le "$max_lines" ] && ok "the coordinator wrote $lines log lines ($bytes bytes) for ~110,000 hostile messages (bound $max_lines)" \
  || bad "$lines log lines > $max_lines"
for pat in "unknown peer .*(not joined|has not joined)" "dropped a 2-frame message" "dropped a message of kind 2" \
           "dropped a bad message from"; do
  n=$(grep -cE "$pat" "$TMP/coord.log" || true)
  [ "$n" -ge 1 ] && [ "$n" -le $((20 * windows)) ] && ok "'$pat': $n lines" \
    || bad "'$pat': $n lines (want 1..$((20 * windows)))"
done
for reason in "message from an unknown peer" "multipart message" "wrong-direction message" "undecodable message"; do
  grep -qE "[0-9]+ more '$reason' events in the last" "$TMP/coord.log" \
    && ok "suppressed lines counted: $(grep -oE "[0-9]+ more '$reason' events in the last [0-9]+ s" "$TMP/coord.log" | head -1)" \
    || bad "no suppression summary for '$reason'"
done
# Nothing raw from a peer reaches the log: no control bytes, no bytes >= 0x80.
if LC_ALL=C grep -q $'[\x01-\x08\x0b-\x1f\x7f-\xff]' "$TMP/coord.log"; then
  bad "raw bytes in the log: $(LC_ALL=C grep -n $'[\x01-\x08\x0b-\x1f\x7f-\xff]' "$TMP/coord.log" | head -2 | cat -v)"
else
  ok "the log holds no control or non-ASCII bytes (peer data escaped)"
fi
grep -q 'x1b\[31mred' "$TMP/coord.log" && ok "an escape sequence in a name is logged escaped: $(grep -o "'[^']*x1b\[31mred'" "$TMP/coord.log" | head -1)" \
  || bad "the escape-sequence name is not in the log"
thief=$(grep "slot-thief" "$TMP/coord.log" || true)
[ -n "$thief" ] && ! grep -q "legit-0" <<<"$thief" && ok "no refusal names another client" \
  || bad "the slot thief's refusal names another client, or is not logged: '$thief'"

# No refused Join registered anything: bit-identical to fedlr-sim with 3 clients.
"$SIM" --quiet "${RUN[@]}" --partition iid --clients 3 --out "$TMP/sim" > /dev/null 2> "$TMP/sim.err" \
  || bad "fedlr-sim failed: $(tail -2 "$TMP/sim.err")"
rows=$(jsonl_eval "$TMP/net.jsonl" "len(rows)")
[ "$rows" = 8 ] && ok "8 rounds" || bad "$rows rounds"
st_equal "$TMP/net/model.safetensors" "$TMP/sim/model.safetensors" \
  && ok "final weights bit-identical to fedlr-sim with the 3 honest clients" \
  || bad "final weights differ (max diff $(st_maxdiff "$TMP/net/model.safetensors" "$TMP/sim/model.safetensors"))"
finish
