#!/usr/bin/python3
"""The table of docs/experiments.md, experiment 5, from fedlr-sweep output.

Usage: server_table.py TARGET SWEEP_DIR...   (e.g. 0.7 exp/server exp/fedprox)

For every configuration of the sweeps (its settings but the rate being tuned,
--server-lr or --prox-mu) and each server schedule, the tuned value is the
one with the best mean final accuracy over seeds; the table shows that mean ±
the sample standard deviation, and the rounds to TARGET test accuracy (mean
over the seeds that reached it, and how many did). Only the standard library.
"""
import csv
import json
import os
import statistics
import sys

target = float(sys.argv[1])
groups = {}  # (method, schedule) -> {tuned value: [(final, rounds to target or None)]}
for d in sys.argv[2:]:
    with open(os.path.join(d, "results.csv")) as f:
        for row in csv.DictReader(f):
            if row["status"] != "done":
                continue
            if "prox-mu" in row:
                method, tuned = "fedprox (mu)", row["prox-mu"]
            else:
                method, tuned = row["server-optimizer"], row["server-lr"]
            sched = row.get("server-schedule", "const")
            rounds = None
            with open(os.path.join(d, "runs", row["id"], "metrics.jsonl")) as m:
                for line in m:
                    r = json.loads(line)
                    if r.get("test_accuracy") is not None and r["test_accuracy"] >= target:
                        rounds = r["round"]
                        break
            groups.setdefault((method, sched), {}).setdefault(tuned, []).append(
                (float(row["final_accuracy"]), rounds))

print("| method | server schedule | tuned | final accuracy | rounds to %g | other values (mean final) |" % target)
print("|---|---|---|---|---|---|")
order = ["fedavg", "fedavgm", "fedadam", "fedyogi", "fedprox (mu)"]
for (method, sched) in sorted(groups, key=lambda k: (order.index(k[0]) if k[0] in order else 9, k[1] != "const")):
    by = groups[(method, sched)]
    means = {v: statistics.mean(a for a, _ in runs) for v, runs in by.items()}
    best = max(means, key=lambda v: means[v])
    runs = by[best]
    accs = [a for a, _ in runs]
    reached = [r for _, r in runs if r is not None]
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    rt = "%.1f (%d/%d)" % (statistics.mean(reached), len(reached), len(runs)) if reached else "never (0/%d)" % len(runs)
    others = ", ".join("%s: %.3f" % (v, means[v]) for v in sorted(by, key=float) if v != best)
    print("| %s | `%s` | %s | %.3f ± %.3f | %s | %s |" % (method, sched, best, statistics.mean(accs), sd, rt, others))
