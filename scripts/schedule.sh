#!/usr/bin/env bash
# Run a series of experiments one after another, e.g. overnight:
#   bash scripts/schedule.sh                         # as written below
#   bash scripts/schedule.sh trainer.max_epochs=5    # extra overrides go to every run
# Each run writes its own folder under logs/train/; a failed run does not stop the
# series, and the script exits non-zero at the end if any run failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
failed=0

run() {
    echo "==> src/train.py $*"
    "$PYTHON" src/train.py "$@" || failed=$((failed + 1))
}

run experiment=mlp_synthetic "$@"
run experiment=lenet_digits "$@"
# a small grid on the same data, in parallel processes
run -m model=mlp data=digits optimizer.lr=0.01,0.001 hydra/launcher=joblib hydra.launcher.n_jobs=2 "$@"
# 5-fold cross-validation, summarised as mean +- std in the sweep's summary.md
run -m model=lenet data=digits data.num_folds=5 data.fold=0,1,2,3,4 "$@"

if [ "$failed" -gt 0 ]; then
    echo "$failed run(s) failed" >&2
    exit 1
fi
