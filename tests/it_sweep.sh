# fedlr-sweep (issue 12): the grid's runs equal standalone fedlr-sim runs
# with the same flags, bit for bit, with 1 and 2 workers; a [grid] section
# equals the flags; successive halving keeps and stops the right
# configurations on a case whose order is known; --resume skips the runs
# that ended and ends as an uninterrupted sweep; the range test stops at the
# divergence and its runs reproduce with fedlr-sim; bad specs are refused
# naming the part.
source "$(dirname "$0")/lib.sh"
SWEEP="$BUILD/fedlr-sweep"
BASE=(--data-dir "$DATA_DIR" --clients 20 --fraction 0.2 --rounds 3 --batch-size 20)

# det FILE: the metrics lines without wall times, sorted keys
det() {
  "$PY" - "$1" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    for k in ("seconds", "elapsed"): r.pop(k, None)
    print(json.dumps(r, sort_keys=True))
PY
}

# ---- 2 rates x 2 schedules x 2 seeds against standalone runs ----
for w in 1 2; do
  if "$SWEEP" --quiet "${BASE[@]}" --out "$TMP/w$w" --workers "$w" --grid 'lr=0.05|0.2' \
    --grid 'schedule=const|exp:gamma=0.7' --seeds 3-4 > "$TMP/w$w.out" 2> "$TMP/w$w.err"; then
    ok "a 2x2x2 sweep with --workers $w ran"
  else
    bad "sweep --workers $w: $(tail -3 "$TMP/w$w.err")"
  fi
done
n=$(ls "$TMP/w1/runs" | wc -l)
[ "$n" -eq 8 ] && ok "8 runs in runs/" || bad "$n runs in runs/, not 8"
same=0
for lr in 0.05 0.2; do
  for sch in const exp:gamma=0.7; do
    for seed in 3 4; do
      d="$TMP/sa-$lr-${sch%%:*}-$seed"
      mkdir -p "$d"
      "$SIM" --quiet "${BASE[@]}" --lr "$lr" --schedule "$sch" --seed "$seed" --workers 2 \
        --metrics "$d/m.jsonl" --out "$d" > /dev/null 2>&1
      # the run of the sweep with these values, found by its config.ini
      id=$(grep -l "^lr = $lr\$" "$TMP"/w1/runs/*/config.ini | xargs grep -l "^schedule = $sch\$" |
        xargs grep -l "^seed = $seed\$" | head -1 | xargs dirname | xargs basename)
      for w in 1 2; do
        r="$TMP/w$w/runs/$id"
        if [ -n "$id" ] && cmp -s "$d/model.safetensors" "$r/model.safetensors" &&
          [ "$(det "$d/m.jsonl")" = "$(det "$r/metrics.jsonl")" ] && [ -s "$d/m.jsonl" ]; then
          same=$((same + 1))
        else
          bad "lr $lr schedule $sch seed $seed (run '$id', --workers $w) differs from fedlr-sim"
        fi
      done
    done
  done
done
[ "$same" -eq 16 ] && ok "all 8 runs x 2 worker counts equal standalone fedlr-sim: weights and metrics"
for f in results.csv summary.md curves.svg sweep.ini; do
  [ -s "$TMP/w1/$f" ] && ok "wrote $f" || bad "no $f"
done
rows=$(($(wc -l < "$TMP/w1/results.csv") - 1))
[ "$rows" -eq 8 ] && ok "results.csv: one row per run" || bad "results.csv has $rows rows"
xmllint --noout "$TMP/w1/curves.svg" 2>/dev/null && ok "curves.svg is well-formed XML" || bad "curves.svg is not XML"
# a run reproduces from its own config.ini
r=$(ls -d "$TMP"/w1/runs/* | head -1)
"$SIM" --quiet --config "$r/config.ini" --workers 1 --out "$TMP/repro" --metrics "$TMP/repro.jsonl" > /dev/null 2>&1
cmp -s "$TMP/repro/model.safetensors" "$r/model.safetensors" && ok "fedlr-sim --config runs/<id>/config.ini reproduces the run" \
  || bad "runs/<id>/config.ini does not reproduce $r"

# ---- the same sweep from a config file's [grid] and [sweep] sections ----
cat > "$TMP/sweep.ini" <<EOF
clients = 20
fraction = 0.2
rounds = 3
batch-size = 20
data-dir = $DATA_DIR
[grid]
lr = 0.05 | 0.2
schedule = const|exp:gamma=0.7
[sweep]
seeds = 3-4
EOF
"$SWEEP" --quiet --config "$TMP/sweep.ini" --out "$TMP/ini" --workers 2 > /dev/null 2>&1 || bad "sweep from an INI file failed"
for r in "$TMP"/w1/runs/*; do
  id=$(basename "$r")
  cmp -s "$r/model.safetensors" "$TMP/ini/runs/$id/model.safetensors" || bad "[grid] run $id differs from --grid's"
done
[ "$(ls "$TMP/ini/runs" | wc -l)" -eq 8 ] && ok "[grid] and [sweep] in --config give the same 8 runs as the flags"

# ---- successive halving on a case whose order is known ----
# softmax after 2 and 4 rounds: the higher the rate, the better, far apart
"$SWEEP" --quiet "${BASE[@]}" --rounds 6 --out "$TMP/h" --workers 2 \
  --grid 'lr=0.00001|0.0001|0.003|0.1' --halving 2,min_rounds=2 > /dev/null 2> "$TMP/h.err" || bad "halving sweep failed: $(tail -2 "$TMP/h.err")"
st() { sed -n 's/^status = //p' "$TMP/h/runs/$1-s1/result.ini"; }
sr() { sed -n 's/^stop_round = //p' "$TMP/h/runs/$1-s1/result.ini"; }
if [ "$(st c0)" = halved ] && [ "$(sr c0)" = 2 ] && [ "$(st c1)" = halved ] && [ "$(sr c1)" = 2 ] &&
  [ "$(st c2)" = halved ] && [ "$(sr c2)" = 4 ] && [ "$(st c3)" = done ]; then
  ok "halving ETA 2 from round 2: lr 1e-5 and 1e-4 stopped at round 2, 0.003 at round 4, 0.1 ran all 6"
else
  bad "halving: c0 $(st c0)@$(sr c0) c1 $(st c1)@$(sr c1) c2 $(st c2)@$(sr c2) c3 $(st c3)"
fi
rounds=$(wc -l < "$TMP/h/runs/c0-s1/metrics.jsonl")
[ "$rounds" -eq 2 ] && ok "a run stopped at round 2 has 2 metrics lines" || bad "stopped run has $rounds lines"
grep -q "successive halving at round 2: rank [34] of 4" "$TMP/h/runs/c0-s1/result.ini" && ok "result.ini says when and why it was stopped" \
  || bad "result.ini: $(cat "$TMP/h/runs/c0-s1/result.ini")"
# a stopped run is the standalone run's first rounds; the survivor is the whole run
"$SIM" --quiet "${BASE[@]}" --rounds 6 --lr 0.1 --workers 2 --out "$TMP/h3" --metrics "$TMP/h3.jsonl" > /dev/null 2>&1
cmp -s "$TMP/h3/model.safetensors" "$TMP/h/runs/c3-s1/model.safetensors" && ok "the survivor paused twice equals the standalone run" \
  || bad "the survivor differs from the standalone run"
"$SIM" --quiet "${BASE[@]}" --rounds 2 --lr 0.00001 --workers 2 --out "$TMP/h0" > /dev/null 2>&1
cmp -s "$TMP/h0/model.safetensors" "$TMP/h/runs/c0-s1/model.safetensors" && ok "a run stopped at round 2 holds the weights of round 2" \
  || bad "the stopped run's weights are not round 2's"
grep -qi "halving" "$TMP/h/summary.md" && ok "summary.md has the halving section" || bad "summary.md says nothing of halving"

# ---- --resume: runs that ended are not run again ----
"$SWEEP" "${BASE[@]}" --model mlp:64 --rounds 4 --out "$TMP/r" --workers 1 --grid 'lr=0.02|0.05|0.1' \
  --seeds 1-2 > "$TMP/r1.out" 2> "$TMP/r1.err" &
pid=$!
for _ in $(seq 1 600); do
  [ "$(ls "$TMP"/r/runs/*/result.ini 2>/dev/null | wc -l)" -ge 2 ] && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done
kill -KILL $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
ended=$(ls "$TMP"/r/runs/*/result.ini 2>/dev/null | wc -l)
if [ "$ended" -ge 2 ] && [ "$ended" -lt 6 ]; then
  ok "killed the sweep after $ended of 6 runs had ended"
  stamps=$(stat -c '%n %Y.%y' "$TMP"/r/runs/*/result.ini)
  "$SWEEP" --resume "$TMP/r" --workers 2 > "$TMP/r2.out" 2> "$TMP/r2.err" || bad "--resume failed: $(tail -2 "$TMP/r2.err")"
  grep -q -- "--resume: $ended of 6 runs ended before, not run again" "$TMP/r2.err" && ok "--resume: $ended runs not run again" \
    || bad "--resume did not say it skipped $ended runs: $(grep resume "$TMP/r2.err")"
  for f in $(awk '{print $1}' <<< "$stamps"); do
    grep -qF "$(stat -c '%n %Y.%y' "$f")" <<< "$stamps" || bad "$f was rewritten by --resume"
  done
  "$SWEEP" --quiet "${BASE[@]}" --model mlp:64 --rounds 4 --out "$TMP/r0" --workers 2 --grid 'lr=0.02|0.05|0.1' \
    --seeds 1-2 > /dev/null 2>&1
  diffs=0
  for r in "$TMP"/r0/runs/*; do
    id=$(basename "$r")
    cmp -s "$r/model.safetensors" "$TMP/r/runs/$id/model.safetensors" &&
      [ "$(det "$r/metrics.jsonl")" = "$(det "$TMP/r/runs/$id/metrics.jsonl")" ] || diffs=$((diffs + 1))
  done
  [ "$diffs" -eq 0 ] && ok "the resumed sweep equals an uninterrupted one (6 runs: weights, metrics)" \
    || bad "$diffs runs of the resumed sweep differ from the uninterrupted sweep"
  cmp -s <(cut -d, -f1-8 "$TMP/r0/results.csv") <(cut -d, -f1-8 "$TMP/r/results.csv") && ok "results.csv of both agree" \
    || bad "results.csv differs after --resume"
else
  bad "could not interrupt the sweep midway ($ended runs had ended)"
fi
expect_exit 2 "--resume with a grid flag is refused" "give only --workers or --quiet" \
  "$SWEEP" --resume "$TMP/r" --grid lr=0.1
expect_fail "--resume of a folder without sweep.ini" "no sweep.ini there" "$SWEEP" --resume "$TMP/nothing"

# ---- the learning-rate range test ----
if "$SWEEP" --quiet "${BASE[@]}" --model mlp:64 --out "$TMP/lf" --workers 2 \
  --lr-find min=0.001,max=1000,rounds=24 > "$TMP/lf.out" 2> "$TMP/lf.err"; then
  ok "--lr-find ran"
else
  bad "--lr-find failed: $(tail -2 "$TMP/lf.err")"
fi
n=$(wc -l < "$TMP/lf/runs/c0-s1/metrics.jsonl")
why=$(sed -n 's/^why = //p' "$TMP/lf/runs/c0-s1/result.ini")
if [ "$n" -lt 24 ] && grep -q "range test:" <<< "$why"; then
  ok "the range test stopped at round $n of 24: $why"
else
  bad "the range test ran $n rounds: $why"
fi
sugg=$(sed -n 's/.*--lr \([0-9.e+-]*\) (lowest.*/\1/p' "$TMP/lf.out")
if [ -n "$sugg" ] && "$PY" -c "import sys; s=float('$sugg'); sys.exit(not (0.001 <= s <= 1000))"; then
  ok "suggested initial rate $sugg (within the range)"
else
  bad "no suggestion: $(cat "$TMP/lf.out")"
fi
xmllint --noout "$TMP/lf/lr_find.svg" 2>/dev/null && ok "lr_find.svg is well-formed" || bad "lr_find.svg"
[ -s "$TMP/lf/lr_find.md" ] && [ "$(($(wc -l < "$TMP/lf/lr_find.csv") - 1))" -eq "$n" ] && ok "lr_find.md and lr_find.csv (one row per round)" \
  || bad "lr_find.md / lr_find.csv"
# its run is a plain fedlr-sim run: the first rounds reproduce
"$SIM" --quiet --config "$TMP/lf/runs/c0-s1/config.ini" --rounds "$n" --out "$TMP/lfr" --metrics "$TMP/lfr.jsonl" > /dev/null 2>&1 || true
a=$(det "$TMP/lfr.jsonl" | "$PY" -c "import json,sys; print([json.loads(l)['train_loss'] for l in sys.stdin])")
b=$(det "$TMP/lf/runs/c0-s1/metrics.jsonl" | "$PY" -c "import json,sys; print([json.loads(l)['train_loss'] for l in sys.stdin])")
[ "$a" = "$b" ] && ok "the range test's run reproduces with fedlr-sim --config (train loss of all $n rounds)" \
  || bad "the range test's run does not reproduce"

# ---- bad specs ----
expect_exit 2 "--grid without '='" "expected NAME=V1|V2" "$SWEEP" --out "$TMP/x" --grid lr
expect_exit 2 "--grid with a bad value" "value 'x'" "$SWEEP" --out "$TMP/x" --grid 'lr=0.1|x'
expect_exit 2 "--grid with an empty value" "an empty value" "$SWEEP" --out "$TMP/x" --grid 'lr=0.1||0.2'
expect_exit 2 "--grid with an unknown key" "'nosuch' is not a fedlr-sim key" "$SWEEP" --out "$TMP/x" --grid 'nosuch=1|2'
expect_exit 2 "--grid with a coordinator key" "not an option of fedlr-sim" "$SWEEP" --out "$TMP/x" --grid 'bind=tcp://127.0.0.1:1'
expect_exit 2 "--grid over the shared data" "does not vary --dataset" "$SWEEP" --out "$TMP/x" --grid 'dataset=mnist|fashion-mnist'
expect_exit 2 "--grid with a bad schedule" "value 'exp:gama=0.9'" "$SWEEP" --out "$TMP/x" --grid 'schedule=const|exp:gama=0.9'
expect_exit 2 "--grid twice for one key" "already a dimension" "$SWEEP" --out "$TMP/x" --grid 'lr=0.1' --grid 'lr=0.2'
expect_exit 2 "a repeated value" "given twice" "$SWEEP" --out "$TMP/x" --grid 'lr=0.1|0.1'
expect_exit 2 "--seeds backwards" "A <= B" "$SWEEP" --out "$TMP/x" --seeds 5-1
expect_exit 2 "--seeds garbage" "is not a seed" "$SWEEP" --out "$TMP/x" --seeds 1,x
expect_exit 2 "--halving 1" "ETA must be an integer in 2..100" "$SWEEP" --out "$TMP/x" --halving 1
expect_exit 2 "--halving past --rounds" "nothing to halve" "$SWEEP" --out "$TMP/x" --rounds 5 --halving 2,min_rounds=5
expect_exit 2 "--rank-by target without a target" "needs --target-accuracy" "$SWEEP" --out "$TMP/x" --rank-by target
expect_exit 2 "--lr-find with a grid over the rate" "sets --lr" "$SWEEP" --out "$TMP/x" --lr-find --grid 'lr=0.1|0.2'
expect_exit 2 "--lr-find min >= max" "0 < min < max" "$SWEEP" --out "$TMP/x" --lr-find min=1,max=0.1
expect_exit 2 "--metrics given to a sweep" "runs/<id>/metrics.jsonl" "$SWEEP" --out "$TMP/x" --metrics m.jsonl
expect_exit 2 "no --out" "--out DIR is required" "$SWEEP" --grid 'lr=0.1|0.2'
# halving keeps every run open until its first rung: too many for the open-file limit is refused upfront
expect_exit 2 "--halving past the open-file limit" "open-file limit is 100" \
  bash -c 'ulimit -n 100 && exec "$@"' _ "$SWEEP" --out "$TMP/x" --grid 'lr=0.01|0.02|0.03|0.04' --seeds 1-10 \
  --halving 2,min_rounds=2 --rounds 5
printf '[grid]\nlr = 0.1|oops\n' > "$TMP/bad.ini"
expect_exit 2 "a bad [grid] line" "[grid] lr=0.1|oops: value 'oops'" "$SWEEP" --out "$TMP/x" --config "$TMP/bad.ini"
printf '[sweep]\nseedz = 1-3\n' > "$TMP/bad2.ini"
expect_exit 2 "an unknown [sweep] key" "unknown key 'seedz'" "$SWEEP" --out "$TMP/x" --config "$TMP/bad2.ini"
[ -e "$TMP/x" ] && bad "a refused sweep created its --out folder" || ok "no refused sweep created its --out folder"
finish
