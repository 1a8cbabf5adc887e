#!/usr/bin/env bash
# The CUDA checks, as one script for a GPU machine that has python3 with torch, triton, pytest,
# hypothesis, scikit-image and matplotlib (rndpo itself comes as a wheel: `make wheel`, then
# WHEELS=dist; WHEELS= (empty) uses the rndpo that python3 already imports, e.g. through
# PYTHONPATH=python with the extension copied into python/rndpo).
#
#   OUT=gpu-out WHEELS=dist bash benches/gpu_checks.sh
#   OUT=gpu-out WHEELS= PYTHONPATH=python STEPS="tests losses" bash benches/gpu_checks.sh
#
# Steps (STEPS picks a subset; default all), each under its own time limit so that one slow step cannot
# eat the others' time:
#   tests    the CUDA tests: tests marked `cuda` in tests/losses/test_losses.py (CPU vs CUDA preference loss) and
#            all of tests/losses/test_losses_triton.py (its small cases run compiled on CUDA, plus realistic sizes
#            and float64 finite differences);
#   losses   the loss benchmark on CUDA (B = 64, 256 x 256: Triton and gather paths vs the naive
#            composition and a read pass, eager and as CUDA graph replays), once per Triton launch mode:
#            RNDPO_TRITON_LAUNCH=direct (the default; with U-Net step times, RN-DPO vs supervised)
#            -> $OUT/bench_losses.md, and RNDPO_TRITON_LAUNCH=jit (boundary masks) -> $OUT/bench_losses_jit.md;
#   harness  the speed harness with its torch CUDA column and the loss rows (benches/bench_miners_sweep.py);
#   study    the first minutes of the full study grid on the synthetic set (one seed, learned-QC judge),
#            whose log gives the base-training, proposal, judge and per-run times behind the full grid's
#            expected run time.
set -uo pipefail
OUT=${OUT:?set OUT to a folder for the logs}
WHEELS=${WHEELS-dist}
STEPS=${STEPS:-tests losses harness study}
STUDY_SECONDS=${STUDY_SECONDS:-200}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -n "$WHEELS" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
has() { [[ " $STEPS " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import rndpo, torch, triton; print('rndpo', rndpo.__version__, 'torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"

if has tests; then
    echo "== tests: CUDA tests"
    timeout 120 python3 -m pytest tests/losses/test_losses.py -m cuda -p no:cacheprovider -q -o addopts="" 2>&1 | tee "$OUT/cuda_tests.log"
    timeout 200 python3 -m pytest tests/losses/test_losses_triton.py tests/losses/test_triton_launch.py -p no:cacheprovider -q \
        -o addopts="" -ra 2>&1 | tee -a "$OUT/cuda_tests.log"
fi

if has losses; then
    echo "== losses: loss benchmark (launch mode jit), then (launch mode direct) with U-Net step times"
    RNDPO_TRITON_LAUNCH=jit timeout 60 python3 benches/bench_losses.py --device cuda --repeats 10 \
        --masks boundary --graphs 2>&1 | grep -v "^USDT\|^STAGE:" | tee "$OUT/bench_losses_jit.md"
    RNDPO_TRITON_LAUNCH=direct timeout 120 python3 benches/bench_losses.py --device cuda --repeats 10 \
        --graphs --steps 2>&1 | grep -v "^USDT\|^STAGE:" | tee "$OUT/bench_losses.md"
fi

if has harness; then
    echo "== harness: speed harness"
    timeout 150 python3 benches/bench_miners_sweep.py --threads 16 --skip-mmap \
        --markdown "$OUT/benchmarks_gpu.md" --plot "$OUT/bench_miners_gpu.png" 2>&1 | tail -n 30
fi

if has study; then
    echo "== study: full grid timing"
    timeout "$STUDY_SECONDS" python3 benches/study.py --grid full --datasets synthetic --seeds 0 \
        --judges learned_qc --device cuda --out /tmp/study-full --report "$OUT/study_partial.md" 2>&1 \
        | grep -v "it/s\]" | tee "$OUT/study.log" | tail -n 20
    ls /tmp/study-full/synthetic/runs 2>/dev/null | grep -c "json$" | sed 's/^/finished runs: /' | tee -a "$OUT/study.log"
fi
exit 0
