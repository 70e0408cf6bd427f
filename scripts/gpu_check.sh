#!/usr/bin/env bash
# The check to run on a machine with an NVIDIA GPU, in at most 8 minutes: tests/test_gpu.py
# (train, resume, evaluate and predict on CUDA; mixed precision; torch.compile; DDP where
# there are two GPUs), then scripts/benchmark.py on CUDA, and one table of both.
#   bash scripts/gpu_check.sh [benchmark options]    (default: --only pairs --rounds 1)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "error: torch sees no CUDA GPU on this machine; run this check where one is." >&2
    exit 2
fi
[ $# -gt 0 ] || set -- --only pairs --rounds 1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

timeout 270 python -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py --junitxml="$out/tests.xml"
tests=$?
timeout 180 python scripts/benchmark.py --device cuda --json "$out/benchmark.json" "$@"
benchmark=$?

python - "$out" <<'EOF'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path

import torch

out = Path(sys.argv[1])
print(f"\n{torch.cuda.device_count()} x {torch.cuda.get_device_name()}, torch {torch.__version__}\n")
print("| check | result | time or speed |\n| --- | --- | ---: |")
if (out / "tests.xml").is_file():
    for case in ET.parse(out / "tests.xml").iter("testcase"):
        outcome = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        print(f"| {case.get('name')} | {outcome} | {float(case.get('time')):.1f} s |")
else:
    print("| tests/test_gpu.py | timed out (270 s) | |")
if (out / "benchmark.json").is_file():
    for row in json.loads((out / "benchmark.json").read_text()).get("pairs", []):
        print(
            f"| benchmark {row['model']} x {row['data']}, batch {row['batch_size']} "
            f"| {row['ratio']:.2f} x the plain loop's epoch time "
            f"| {row['project_samples_per_s']:,.0f} samples/s |"
        )
else:
    print("| scripts/benchmark.py --device cuda | failed or timed out (180 s) | |")
EOF
[ "$tests" -eq 0 ] && [ "$benchmark" -eq 0 ]
