#!/usr/bin/env bash
# A study grid of benches/study.py on the synthetic set, Kvasir-SEG and HC18, one process per dataset
# side by side on one GPU (the U-Net is small, so one process leaves the GPU mostly idle).
#
#   OUT=gpu-out WHEELS=dist DATA_ROOT=../shared/data bash benches/gpu_study.sh
#   GRID=full SECONDS_PER_DATASET=10800 REPORT_SECONDS=600 OUT=... bash benches/gpu_study.sh
#
# GRID=gpu (default; 300-step fine-tuning, 3 judges x 2 miners x sft_top / DPO / RN-DPO x 3 seeds)
# took 325 s on one H200. GRID=full (2,673 runs) needs an estimated 1.4 h this way (docs/results.md).
# WHEELS= (empty) uses the rndpo already installed. Writes $OUT/results_$GRID.md (the report, plots
# beside it) and $OUT/study_$GRID.tgz (every run's record, without the cached arrays and weights).
set -uo pipefail
OUT=${OUT:?set OUT to a folder for the report}
WHEELS=${WHEELS-dist}
DATA_ROOT=${DATA_ROOT:-../shared/data}
GRID=${GRID:-gpu}
SECONDS_PER_DATASET=${SECONDS_PER_DATASET:-360}
STUDY=/tmp/study-$GRID
mkdir -p "$OUT" "$STUDY"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
if [ -n "$WHEELS" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
for name in synthetic kvasir_seg hc18; do
    timeout "$SECONDS_PER_DATASET" python3 benches/study.py --grid "$GRID" --datasets "$name" --device cuda \
        --data-root "$DATA_ROOT" --out "$STUDY" --report "$STUDY/report_$name.md" --quiet \
        >"$STUDY/$name.log" 2>&1 &
done
wait
for name in synthetic kvasir_seg hc18; do
    echo "$name: $(ls "$STUDY/$name/runs" 2>/dev/null | grep -c 'json$') runs"; tail -n 3 "$STUDY/$name.log"
done
# every stage is cached now: this only writes the combined report (and finishes any run cut short)
timeout "${REPORT_SECONDS:-60}" python3 benches/study.py --grid "$GRID" --device cuda --data-root "$DATA_ROOT" \
    --out "$STUDY" --report "$OUT/results_$GRID.md" --quiet 2>&1 | tail -n 5
tar czf "$OUT/study_$GRID.tgz" -C "$STUDY" --exclude='*.npy' --exclude='*.pt' --exclude='*.ckpt' .
ls -la "$OUT"
