#!/usr/bin/env bash
# The CUDA checks, as one script for a GPU machine that has python3 with torch, pytest, hypothesis,
# scikit-image and matplotlib (rndpo itself comes as a wheel: `make wheel`, then WHEELS=dist).
#
#   OUT=gpu-out WHEELS=dist bash benches/gpu_checks.sh
#
# Steps, each under its own time limit so that one slow step cannot eat the others' time:
#   1. the CUDA tests (tests marked `cuda`: CPU vs CUDA preference loss);
#   2. the speed harness with its torch CUDA column and the fused-loss CUDA rows (benches/bench_miners_sweep.py);
#   3. the first minutes of the full study grid on the synthetic set (one seed, learned-QC judge), whose
#      log gives the base-training, proposal, judge and per-run times behind the full grid's expected run time.
set -uo pipefail
OUT=${OUT:?set OUT to a folder for the logs}
WHEELS=${WHEELS:-dist}
STUDY_SECONDS=${STUDY_SECONDS:-200}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl || exit 1
export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import rndpo, torch; print('rndpo', rndpo.__version__, 'torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"

echo "== 1. CUDA tests"
timeout 120 python3 -m pytest tests/test_losses.py -m cuda -p no:cacheprovider -q -o addopts="" 2>&1 | tee "$OUT/cuda_tests.log"

echo "== 2. speed harness"
timeout 150 python3 benches/bench_miners_sweep.py --threads 16 --skip-mmap \
    --markdown "$OUT/benchmarks_gpu.md" --plot "$OUT/bench_miners_gpu.png" 2>&1 | tail -n 30

echo "== 3. full grid timing"
timeout "$STUDY_SECONDS" python3 benches/study.py --grid full --datasets synthetic --seeds 0 \
    --judges learned_qc --device cuda --out /tmp/study-full --report "$OUT/study_partial.md" 2>&1 \
    | grep -v "it/s\]" | tee "$OUT/study.log" | tail -n 20
ls /tmp/study-full/synthetic/runs 2>/dev/null | grep -c "json$" | sed 's/^/finished runs: /' | tee -a "$OUT/study.log"
exit 0
