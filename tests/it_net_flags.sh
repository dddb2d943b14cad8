# The networked programs' flags: endpoints that libzmq would misread or that
# no client could reach are refused with exit status 2 and a message naming
# the flag and the accepted forms (as flags and from a --config file), and
# an accepted ipc:// endpoint really carries a run.
source "$(dirname "$0")/lib.sh"

# Each refused command runs under `timeout`: if a check let it through, the
# program would start and wait for clients instead of hanging the test.
T=(timeout -k 5 30)
FORMS="takes tcp://HOST:PORT"
expect_exit 2 "--bind port 99999 (libzmq would listen on 34463)" "--bind: 'tcp://127.0.0.1:99999': port 99999 is above 65535" \
  "${T[@]}" "$COORD" --bind tcp://127.0.0.1:99999
expect_exit 2 "--bind refusal lists the accepted forms" "--bind $FORMS" "${T[@]}" "$COORD" --bind tcp://127.0.0.1:99999
expect_exit 2 "--bind ephemeral port" "an ephemeral port" "${T[@]}" "$COORD" --bind 'tcp://*:0'
expect_exit 2 "--bind udp://" "not a tcp:// or ipc:// endpoint" "${T[@]}" "$COORD" --bind udp://127.0.0.1:7070
expect_exit 2 "--bind ipc path too long for sun_path" "a Unix socket's at most 107" \
  "${T[@]}" "$COORD" --bind "ipc://$TMP/$(printf 'x%.0s' $(seq 1 120))"
printf '[fedlr]\nbind = tcp://127.0.0.1:70000\n' > "$TMP/coord.ini"
expect_exit 2 "--bind from a config file" "--bind: 'tcp://127.0.0.1:70000'" "${T[@]}" "$COORD" --config "$TMP/coord.ini"
expect_exit 2 "--connect port 0" "--connect: 'tcp://x:0': port 0" "${T[@]}" "$CLIENT" --connect tcp://x:0 --num-partitions 2
expect_exit 2 "--connect refusal lists the accepted forms" "--connect $FORMS" "${T[@]}" "$CLIENT" --connect tcp://x:0
expect_exit 2 "--connect to HOST *" "HOST * (every interface) is only for --bind" "${T[@]}" "$CLIENT" --connect 'tcp://*:7070'

# Timeouts that contradict how clients heartbeat (--client-timeout >= 3 x
# --heartbeat) or the round's deadline (--round-timeout >= --client-timeout).
expect_exit 2 "--heartbeat 5 --client-timeout 1 (idle clients would flap dead/alive)" \
  "--client-timeout 1: must be >= 3 x --heartbeat (5 s)" "${T[@]}" "$COORD" --heartbeat 5 --client-timeout 1
expect_exit 2 "--round-timeout below --client-timeout" "--round-timeout 5: must be >= --client-timeout (10 s)" \
  "${T[@]}" "$COORD" --round-timeout 5
printf 'heartbeat = 5\nclient-timeout = 10\n' > "$TMP/hb.ini"
expect_exit 2 "timeouts from a config file" "--client-timeout 10: must be >= 3 x --heartbeat (5 s)" \
  "${T[@]}" "$COORD" --config "$TMP/hb.ini"

# The specs that fl_config only stores (--aggregator, --attack) are parsed
# right after it, from a flag or a file alike: exit 2 before any data.
expect_exit 2 "coordinator: bad --aggregator" "fedlr-coordinator: --aggregator: 'median:1' is not fedavg, median" \
  "${T[@]}" "$COORD" --aggregator median:1 --data-dir "$TMP/nodata"
printf '[fedlr]\naggregator = trimmed-mean:x\n' > "$TMP/agg.ini"
expect_exit 2 "coordinator: bad aggregator in a config file" "--aggregator: 'trimmed-mean:x': BETA must be" \
  "${T[@]}" "$COORD" --config "$TMP/agg.ini" --data-dir "$TMP/nodata"
expect_exit 2 "client: bad --attack" "fedlr-client: --attack: 'scale:0': scale:K needs a finite K other than 0" \
  "${T[@]}" "$CLIENT" --attack scale:0 --num-partitions 2 --data-dir "$TMP/nodata"
printf 'attack = nan,nan\n' > "$TMP/attack.ini"
expect_exit 2 "client: bad attack in a config file" "fedlr-client: --attack: 'nan,nan': 'nan' given twice" \
  "${T[@]}" "$CLIENT" --config "$TMP/attack.ini" --num-partitions 2 --data-dir "$TMP/nodata"

# The shipped example configs pass validation: each gets as far as loading
# data from a directory that does not exist (exit 1, not 2).
SRC=$(cd "$(dirname "$0")/.." && pwd)
for prog in sim:"$SIM" coordinator:"$COORD" client:"$CLIENT"; do
  expect_exit 1 "examples/${prog%%:*}.ini is accepted" "$TMP/nodata" \
    "${T[@]}" "${prog#*:}" --config "$SRC/examples/${prog%%:*}.ini" --data-dir "$TMP/nodata"
done

# An ipc:// endpoint passes the check and works: one client, one round.
EP="ipc://$TMP/coord.sock"
timeout -k 5 120 "$COORD" --bind "$EP" --data-dir "$DATA_DIR" --model softmax --clients 1 --fraction 1 \
  --rounds 1 --quiet > /dev/null 2> "$TMP/ipc-coord.log" &
CPID=$!; PIDS+=($CPID)
timeout -k 5 120 "$CLIENT" --connect "$EP" --dataset fashion-mnist --data-dir "$DATA_DIR" --num-partitions 20 \
  --partition-index 0 --quiet 2> "$TMP/ipc-client.log" &
KPID=$!; PIDS+=($KPID)
rc=0; wait $CPID || rc=$?
krc=0; wait $KPID || krc=$?
[ $rc -eq 0 ] && [ $krc -eq 0 ] && ok "a run over $EP: coordinator and client exit 0" \
  || { bad "ipc run: coordinator exit $rc, client exit $krc"; tail -5 "$TMP/ipc-coord.log" "$TMP/ipc-client.log"; }
finish
