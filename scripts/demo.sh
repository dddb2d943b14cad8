#!/usr/bin/env bash
# One command: install dependencies, build, and run a federated simulation of
# the FedAvg 2NN on Fashion-MNIST (100 clients, 10 per round, non-IID
# Dirichlet(0.5) split, decaying round schedule). Extra args go to fedlr-sim.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh
mkdir -p out/demo
exec ./build/fedlr-sim --dataset fashion-mnist --model mlp:200,200 --clients 100 --fraction 0.1 \
  --rounds 30 --local-epochs 2 --batch-size 10 --lr 0.05 --schedule "exp:gamma=0.97" \
  --partition dirichlet:0.5 --seed 1 --metrics out/demo/metrics.jsonl --out out/demo "$@"
