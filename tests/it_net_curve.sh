# CurveZMQ (issue 5, part 1), real processes over loopback:
#  a) a CURVE run with 3 allowed clients completes, weights bit-identical to
#     fedlr-sim with the same flags and seed;
#  b) a client whose key is not allowed is refused by the ZAP handler (logged
#     with its address and key), exits 4 with a clear message, and never
#     gets a Welcome or a RoundStart, nor counts as a client;
#  c) a plaintext client against the CURVE coordinator: refused, logged;
#  d) a client with the wrong --coordinator-key: a clear error, exit 4;
#  e) an allowed client joining under another name: refused (exit 1);
#  f) half-open TCP connections (silent, or half a greeting) are dropped
#     after --handshake-timeout and do not hold up the rounds;
#  g) key-file and flag errors: a 0644 secret file, bad Z85, a missing file,
#     one of the two flags alone; fedlr-keygen's modes and no-overwrite;
#  h) a client is its key: a client SIGKILLed mid-run and restarted with the
#     same key (a new connection, a new routing id) takes its client over
#     (same id, same name) and the run completes with 2 clients, not 3.
source "$(dirname "$0")/lib.sh"

KEYGEN="$BUILD/fedlr-keygen"
for b in "$COORD" "$CLIENT" "$KEYGEN" "$SIM"; do
  [ -x "$b" ] || { echo "skip: $b is not built"; exit 77; }
done

# ---- keys ----
mkdir -p "$TMP/keys" "$TMP/allowed"
for n in coord c0 c1 c2 eve; do "$KEYGEN" "$TMP/keys/$n" > /dev/null; done
cp "$TMP/keys/c0.key" "$TMP/keys/c1.key" "$TMP/keys/c2.key" "$TMP/allowed/"
m=$(stat -c %a "$TMP/keys/c0.key_secret"); p=$(stat -c %a "$TMP/keys/c0.key")
[ "$m" = 600 ] && [ "$p" = 644 ] && ok "fedlr-keygen: secret file mode $m, public $p" \
  || bad "fedlr-keygen modes: secret $m, public $p"
(umask 000; "$KEYGEN" "$TMP/keys/loose" > /dev/null)
m=$(stat -c %a "$TMP/keys/loose.key_secret")
[ "$m" = 600 ] && ok "fedlr-keygen under umask 000: secret file mode $m" || bad "umask 000: mode $m"
expect_fail "fedlr-keygen refuses to overwrite" "exists" "$KEYGEN" "$TMP/keys/loose"
"$KEYGEN" --force "$TMP/keys/loose" > /dev/null && ok "fedlr-keygen --force replaces" \
  || bad "fedlr-keygen --force failed"

# ---- g) key-file and flag errors ----
SEED=3
FLAGS=(--model mlp:32 --clients 3 --fraction 0.67 --rounds 6 --local-epochs 1 --batch-size 20
       --lr 0.05 --seed $SEED)
PORT=$(free_port)
EP="tcp://127.0.0.1:$PORT"
CURVE_C=(--curve-secret "$TMP/keys/coord.key_secret" --allow-clients "$TMP/allowed")
cp "$TMP/keys/coord.key_secret" "$TMP/keys/open.key_secret"
chmod 644 "$TMP/keys/open.key_secret"
expect_fail "coordinator: --curve-secret without --allow-clients" "needs both" \
  "$COORD" --bind "$EP" "${FLAGS[@]}" --curve-secret "$TMP/keys/coord.key_secret"
expect_fail "coordinator: --allow-clients without --curve-secret" "needs both" \
  "$COORD" --bind "$EP" "${FLAGS[@]}" --allow-clients "$TMP/allowed"
expect_fail "coordinator: secret key file mode 0644" "too open" \
  "$COORD" --bind "$EP" "${FLAGS[@]}" --curve-secret "$TMP/keys/open.key_secret" --allow-clients "$TMP/allowed"
expect_fail "coordinator: missing secret key file" "$TMP/keys/none.key_secret" \
  "$COORD" --bind "$EP" "${FLAGS[@]}" --curve-secret "$TMP/keys/none.key_secret" --allow-clients "$TMP/allowed"
expect_fail "coordinator: missing allowlist" "$TMP/nowhere" \
  "$COORD" --bind "$EP" "${FLAGS[@]}" "${CURVE_C[@]/$TMP\/allowed/$TMP/nowhere}"
sed 's/public-key = "\(.\{5\}\)./public-key = "\1~/' "$TMP/keys/c0.key" > "$TMP/bad.key"
mkdir -p "$TMP/badallow" && cp "$TMP/bad.key" "$TMP/badallow/"
expect_fail "coordinator: allowlist with bad Z85" "not 40 Z85 characters" \
  "$COORD" --bind "$EP" "${FLAGS[@]}" --curve-secret "$TMP/keys/coord.key_secret" --allow-clients "$TMP/badallow"
printf 'not-a-key alice\n' > "$TMP/allow.txt"
expect_fail "coordinator: allowlist file with a short key" "allow.txt:1" \
  "$COORD" --bind "$EP" "${FLAGS[@]}" --curve-secret "$TMP/keys/coord.key_secret" --allow-clients "$TMP/allow.txt"
DATA=(--dataset fashion-mnist --data-dir "$DATA_DIR" --partition iid --num-partitions 3 --seed $SEED)
expect_fail "client: --curve-secret without --coordinator-key" "needs both" \
  "$CLIENT" --connect "$EP" "${DATA[@]}" --curve-secret "$TMP/keys/c0.key_secret"
expect_fail "client: secret key file mode 0644" "too open" \
  "$CLIENT" --connect "$EP" "${DATA[@]}" --curve-secret "$TMP/keys/open.key_secret" --coordinator-key "$TMP/keys/coord.key"
expect_fail "client: --coordinator-key with bad Z85" "bad.key:8" \
  "$CLIENT" --connect "$EP" "${DATA[@]}" --curve-secret "$TMP/keys/c0.key_secret" --coordinator-key "$TMP/bad.key"
expect_fail "client: --coordinator-key neither file nor key" "neither a file nor" \
  "$CLIENT" --connect "$EP" "${DATA[@]}" --curve-secret "$TMP/keys/c0.key_secret" --coordinator-key "$TMP/keys/none.key"

# ---- the CURVE run ----
timeout 300 "$COORD" --bind "$EP" "${FLAGS[@]}" "${CURVE_C[@]}" --start-clients 3 --round-timeout 60 \
  --handshake-timeout 1 --data-dir "$DATA_DIR" --metrics "$TMP/net.jsonl" --out "$TMP/net" \
  > "$TMP/coord.out" 2> "$TMP/coord.log" &
CPID=$!; PIDS+=($CPID)
wait_until 60 grep -q "listening on" "$TMP/coord.log" || { bad "coordinator did not start: $(cat "$TMP/coord.log")"; finish; exit 1; }
grep -q "CurveZMQ: encrypted; 3 client keys admitted" "$TMP/coord.log" \
  && ok "coordinator: $(grep -o 'CurveZMQ: encrypted; 3 client keys admitted' "$TMP/coord.log")" \
  || bad "no CurveZMQ line: $(head -3 "$TMP/coord.log")"

# f) half-open connections, held from now on (the rounds run meanwhile).
timeout 120 "$PY" "$(dirname "$0")/tools/halfopen.py" 127.0.0.1 "$PORT" 30 > "$TMP/halfopen.out" 2>&1 &
HPID=$!; PIDS+=($HPID)

# b) an unlisted key; c) a plaintext client; d) the wrong coordinator key;
# e) an allowed key under another name. Each alone, before the run starts.
client_fails() { # desc want_rc want_text args...
  local desc=$1 want_rc=$2 want=$3 rc=0
  shift 3
  timeout 60 "$CLIENT" --connect "$EP" "${DATA[@]}" "$@" 2> "$TMP/r.log" || rc=$?
  if [ $rc -eq "$want_rc" ] && grep -qF -- "$want" "$TMP/r.log"; then
    ok "$desc: exit $rc, $(grep -m1 -F -- "$want" "$TMP/r.log" | cut -c1-150)"
  else
    bad "$desc: exit $rc (want $want_rc): $(tail -3 "$TMP/r.log")"
  fi
}
client_fails "b) unlisted key" 4 "refused this client's key (ZAP status 400)" \
  --partition-index 0 --curve-secret "$TMP/keys/eve.key_secret" --coordinator-key "$TMP/keys/coord.key"
cp "$TMP/r.log" "$TMP/eve.log"
grep -qE "joined run|round [0-9]+ trained" "$TMP/eve.log" \
  && bad "the unlisted client got a Welcome or a round: $(cat "$TMP/eve.log")" \
  || ok "b) the unlisted client never got a Welcome or a RoundStart"
EVE_KEY=$(sed -n 's/.*public-key = "\(.*\)"/\1/p' "$TMP/keys/eve.key")
grep -qF "refused a CURVE client at 127.0.0.1 with key $EVE_KEY: key not in --allow-clients" "$TMP/coord.log" \
  && ok "b) coordinator logged the refusal with address and key" \
  || bad "b) no refusal logged for key $EVE_KEY: $(cat "$TMP/coord.log")"
client_fails "c) plaintext client" 4 "requires CurveZMQ" --partition-index 0
# The coordinator sees the mechanism mismatch, or, when the plaintext client
# has already hung up (it saw the mismatch first), the connection close in
# the middle of the handshake: either way it is logged.
C_LOG="it does not use CURVE|closed during its handshake"
wait_until 10 grep -qE "$C_LOG" "$TMP/coord.log" \
  && ok "c) coordinator logged: $(grep -m1 -E "$C_LOG" "$TMP/coord.log" | cut -c1-120)" \
  || bad "c) no handshake failure logged: $(cat "$TMP/coord.log")"
client_fails "d) wrong --coordinator-key" 4 "is probably not the coordinator's public key" \
  --partition-index 0 --curve-secret "$TMP/keys/c0.key_secret" --coordinator-key "$TMP/keys/eve.key"
# The coordinator hears of the failed handshake from its socket monitor,
# which may come after the client has given up and exited (a loaded machine);
# c)'s plaintext client, reconnecting until it gives up, logs under another
# reason ("wrong security mechanism"), so its lines cannot crowd this one out.
wait_until 10 grep -q "its CURVE handshake failed" "$TMP/coord.log" \
  && ok "d) coordinator logged: $(grep -m1 "its CURVE handshake failed" "$TMP/coord.log" | cut -c1-120)" \
  || bad "d) no handshake failure logged: $(cat "$TMP/coord.log")"
client_fails "e) allowed key under another name" 1 "run it with --name c0" \
  --partition-index 0 --curve-secret "$TMP/keys/c0.key_secret" --coordinator-key "$TMP/keys/coord.key" --name mallory

# a) the allowed clients; the coordinator's key given as Z85 on the command line to one of them.
COORD_KEY=$(sed -n 's/.*public-key = "\(.*\)"/\1/p' "$TMP/keys/coord.key")
CPIDS=()
for i in 0 1 2; do
  ck="$TMP/keys/coord.key"; [ $i -eq 2 ] && ck=$COORD_KEY
  timeout 300 "$CLIENT" --connect "$EP" "${DATA[@]}" --partition-index $i \
    --curve-secret "$TMP/keys/c$i.key_secret" --coordinator-key "$ck" 2> "$TMP/c$i.log" &
  CPIDS+=($!); PIDS+=($!)
done
rc=0; wait $CPID || rc=$?
[ $rc -eq 0 ] && ok "a) coordinator exited 0" || { bad "a) coordinator exit $rc"; tail -20 "$TMP/coord.log"; }
for i in 0 1 2; do
  crc=0; wait "${CPIDS[$i]}" || crc=$?
  [ $crc -eq 0 ] && ok "a) client c$i exited 0" || { bad "a) client c$i exit $crc"; tail -5 "$TMP/c$i.log"; }
done
n=$(jsonl_eval "$TMP/net.jsonl" "len(rows)")
[ "$n" = 6 ] && ok "a) 6 rounds" || bad "a) $n rounds"
grep -q "participation: 3 clients" "$TMP/coord.log" \
  && ok "b) the coordinator counted 3 clients: $(grep -o 'participation: 3 clients.*' "$TMP/coord.log")" \
  || bad "b) participation: $(grep participation "$TMP/coord.log")"
grep -E "client (eve|mallory|[a-z0-9-]+-p0) .*joined" "$TMP/coord.log" | grep -v "client c0 " \
  && bad "b/c/e) a refused client joined" || ok "b/c/e) only c0, c1, c2 ever joined"
"$SIM" --quiet --data-dir "$DATA_DIR" --partition iid "${FLAGS[@]}" --out "$TMP/sim" > /dev/null
if st_equal "$TMP/net/model.safetensors" "$TMP/sim/model.safetensors"; then
  ok "a) CURVE run weights are bit-identical to fedlr-sim's"
else
  bad "a) CURVE run weights differ from fedlr-sim's (max diff $(st_maxdiff "$TMP/net/model.safetensors" "$TMP/sim/model.safetensors"))"
fi

# f) the half-open connections were dropped, by the 1 s handshake timeout.
hrc=0; wait $HPID || hrc=$?
cat "$TMP/halfopen.out"
[ $hrc -eq 0 ] && grep -q "closed silent" "$TMP/halfopen.out" && grep -q "closed partial-greeting" "$TMP/halfopen.out" \
  && ok "f) both half-open connections were closed by the coordinator" || bad "f) half-open: $(cat "$TMP/halfopen.out")"
grep -q "no handshake within 1 s (--handshake-timeout)" "$TMP/coord.log" \
  && ok "f) logged: $(grep -m1 "no handshake within" "$TMP/coord.log" | cut -c1-120)" \
  || bad "f) no handshake time-out logged: $(cat "$TMP/coord.log")"

# h) restart under the same key. 2 clients, both sampled every round; the
# quorum of 1 of 2 lets a round close if c0's restart were too slow.
PORT=$(free_port)
EP="tcp://127.0.0.1:$PORT"
H_FLAGS=(--model mlp:32 --clients 2 --fraction 1 --rounds 10 --local-epochs 2 --batch-size 10 --lr 0.05 --seed $SEED)
H_DATA=(--dataset fashion-mnist --data-dir "$DATA_DIR" --partition iid --num-partitions 2 --seed $SEED)
timeout 300 "$COORD" --bind "$EP" "${H_FLAGS[@]}" "${CURVE_C[@]}" --start-clients 2 --quorum 0.5 \
  --round-timeout 60 --data-dir "$DATA_DIR" --metrics "$TMP/h.jsonl" > /dev/null 2> "$TMP/h-coord.log" &
CPID=$!; PIDS+=($CPID)
start_client() { # i log
  timeout 300 "$CLIENT" --connect "$EP" "${H_DATA[@]}" --partition-index "$1" \
    --curve-secret "$TMP/keys/c$1.key_secret" --coordinator-key "$TMP/keys/coord.key" 2> "$2" &
  PIDS+=($!)
}
start_client 0 "$TMP/h-c0.log"; H0=$!
start_client 1 "$TMP/h-c1.log"; H1=$!
if wait_until 120 lines_at_least "$TMP/h.jsonl" 2; then
  kill9 "$H0"
  rc=0; wait "$H0" || rc=$?
  start_client 0 "$TMP/h-c0b.log"; H0B=$!
  [ $rc -eq 137 ] && ok "h) c0 SIGKILLed after round 2 and restarted with the same key" \
    || bad "h) c0 had exited ($rc) before the kill"
else
  bad "h) the run did not reach round 2: $(tail -5 "$TMP/h-coord.log")"
fi
rc=0; wait $CPID || rc=$?
[ $rc -eq 0 ] && ok "h) coordinator exited 0" || { bad "h) coordinator exit $rc"; tail -20 "$TMP/h-coord.log"; }
for p in ${H0B:-} $H1; do
  crc=0; wait "$p" || crc=$?
  [ $crc -eq 0 ] || bad "h) a client exited $crc"
done
n=$(jsonl_eval "$TMP/h.jsonl" "len(rows)")
[ "$n" = 10 ] && ok "h) 10 rounds" || bad "h) $n rounds"
joins=$(grep -c "client c0 (id 0) joined" "$TMP/h-coord.log" || true)
others=$(grep "joined" "$TMP/h-coord.log" | grep -vc "client c[01] (id [01]) joined" || true)
[ "$joins" -ge 2 ] && [ "$others" -eq 0 ] \
  && ok "h) the restarted c0 took over client c0 (id 0): $joins joins, no other client" \
  || bad "h) joins of c0: $joins, other joins: $others: $(grep joined "$TMP/h-coord.log")"
grep -q "participation: 2 clients" "$TMP/h-coord.log" && ok "h) $(grep -o 'participation: 2 clients.*' "$TMP/h-coord.log")" \
  || bad "h) $(grep participation "$TMP/h-coord.log")"
grep -q "round [0-9]* trained" "$TMP/h-c0b.log" && ok "h) the restarted c0 trained: $(grep -c 'round [0-9]* trained' "$TMP/h-c0b.log") rounds" \
  || bad "h) the restarted c0 never trained: $(tail -3 "$TMP/h-c0b.log")"
finish
