# 1,000 virtual clients fit in memory dominated by the dataset: peak RSS
# with 1,000 clients is within 32 MiB of the run with 10 clients, and within
# 64 MiB of the dataset's own size (train + test features as float32).
source "$(dirname "$0")/lib.sh"

peak() { # clients
  "$SIM" --quiet --data-dir "$DATA_DIR" --model mlp:200,200 --clients "$1" --fraction 0.01 \
    --min-clients 10 --rounds 2 --local-epochs 1 --partition dirichlet:0.5 --seed 1 \
    | sed -n 's/.*peak memory \([0-9]*\) MiB.*/\1/p'
}
small=$(peak 10); big=$(peak 1000)
data_mib=$(( (60000 + 10000) * 784 * 4 / 1048576 ))
echo "peak RSS: 10 clients $small MiB, 1000 clients $big MiB, dataset features $data_mib MiB"
[ -n "$big" ] && [ $((big - small)) -le 32 ] && ok "1000 clients cost $((big - small)) MiB over 10 clients" || bad "1000 clients: $big MiB vs $small MiB"
# ASan/TSan shadow memory and quarantine inflate absolute RSS: there only the
# relative check above is meaningful.
if grep -qE '^FEDLR_(SANITIZE|TSAN):BOOL=ON' "$BUILD/CMakeCache.txt" 2>/dev/null; then
  skip "absolute memory check: a sanitizer build ($big MiB)"
else
[ -n "$big" ] && [ $((big - data_mib)) -le 64 ] && ok "memory is dominated by the dataset ($big MiB vs $data_mib MiB)" || bad "memory $big MiB vs dataset $data_mib MiB"
fi
finish
