#!/usr/bin/env bash
# Study grids of benches/study.py on one GPU: one process per (dataset, seed), side by side (the U-Net is
# small, so one process leaves the GPU and the host mostly idle), under one deadline.
#
#   OUT=gpu-out DATA_ROOT=../shared/data bash benches/gpu_study.sh
#   GRIDS="ladder judges" DATASETS="kvasir_seg hc18" SEEDS="0 1 2 3 4" SIDE="stability:kvasir_seg:0 1 2" \
#       BUDGET=420 OUT=gpu-out DATA_ROOT=.gpu/data bash benches/gpu_study.sh
#
# Each (dataset, seed) process runs the GRIDS in order in its own folder (later grids reuse the earlier
# grids' cached base model, bank and judge scores); SIDE names one more grid, dataset and seeds run in
# processes of their own beside them. Every process stops at the deadline (BUDGET seconds from the start).
# Then, per grid and dataset, the seeds that finished are merged into one folder (hard links) and
# benches/study.py writes the combined reports from the cached runs, side by side (nothing is
# recomputed but the evaluations). Writes $OUT/study.tgz (reports, plots, results.json, every run's record) and $OUT/study.log.
# rndpo must be importable: PYTHONPATH=python with the extension copied into python/rndpo, or a wheel
# installed. OMP_NUM_THREADS=1 per process.
set -uo pipefail
OUT=${OUT:?set OUT to a folder for the report}
DATA_ROOT=${DATA_ROOT:-../shared/data}
GRIDS=${GRIDS:-ladder}
DATASETS=${DATASETS:-kvasir_seg hc18}
SEEDS=${SEEDS:-0 1 2 3 4}
SIDE=${SIDE:-}
BUDGET=${BUDGET:-420}
DEVICE=${DEVICE:-cuda}
REPORT_SECONDS=${REPORT_SECONDS:-90}
STUDY=${STUDY:-/tmp/study}
mkdir -p "$OUT" "$STUDY/reports"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
deadline=$((SECONDS + BUDGET))
log() { echo "[$(date +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$OUT/study.log"; }

run_grids() {  # folder dataset seed grid...
    local folder=$1 name=$2 seed=$3 grid
    shift 3
    for grid in "$@"; do
        local left=$((deadline - SECONDS))
        [ "$left" -gt 5 ] || return 0
        if timeout "$left" python3 benches/study.py --grid "$grid" --datasets "$name" --seeds "$seed" \
            --device "$DEVICE" --data-root "$DATA_ROOT" --out "$STUDY/s$seed-$folder" \
            --report "$STUDY/s$seed-$folder/report_$name.md" --quiet \
            >>"$STUDY/$name-s$seed.log" 2>&1; then
            touch "$STUDY/done-$grid-$name-s$seed"
            log "$grid $name seed $seed done"
        else
            log "$grid $name seed $seed stopped (exit $?)"
            return 0
        fi
    done
}

log "start: GRIDS=$GRIDS DATASETS=$DATASETS SEEDS=$SEEDS SIDE=$SIDE BUDGET=$BUDGET"
# the grids of one (dataset, seed) share one folder: name it after the first grid
first=${GRIDS%% *}
for name in $DATASETS; do
    for seed in $SEEDS; do
        run_grids "$first" "$name" "$seed" $GRIDS &
    done
done
if [ -n "$SIDE" ]; then
    IFS=: read -r side_grid side_name side_seeds <<<"$SIDE"
    for seed in $side_seeds; do
        run_grids "$side_grid" "$side_name" "$seed" "$side_grid" &
    done
fi
wait
log "grids finished or stopped"

merge_report() {  # grid dataset folder-grid
    local grid=$1 name=$2 folder=$3 seeds=() seed
    for seed in $SEEDS 0 1 2 3 4 5 6 7 8 9; do
        [ -e "$STUDY/done-$grid-$name-s$seed" ] && [[ ! " ${seeds[*]} " == *" $seed "* ]] && seeds+=("$seed")
    done
    [ ${#seeds[@]} -gt 0 ] || { log "$grid $name: no finished seed"; return; }
    local merged="$STUDY/merged-$grid/$name"
    mkdir -p "$merged/stages" "$merged/runs"
    for seed in "${seeds[@]}"; do
        local src="$STUDY/s$seed-$folder/$name"
        cp -al "$src/stages/." "$merged/stages/" 2>/dev/null
        cp -al "$src/runs/." "$merged/runs/" 2>/dev/null
        cp "$src/config.json" "$merged/config.json"
    done
    log "$grid $name: report over seeds ${seeds[*]}"
    timeout "$REPORT_SECONDS" python3 benches/study.py --grid "$grid" --datasets "$name" --seeds "${seeds[@]}" \
        --device "$DEVICE" --data-root "$DATA_ROOT" --out "$STUDY/merged-$grid" \
        --report "$STUDY/reports/results_${grid}_$name.md" --quiet >>"$OUT/study.log" 2>&1 \
        || log "$grid $name: report step failed (exit $?)"
    cp "$merged/results.json" "$STUDY/reports/results_${grid}_$name.json" 2>/dev/null
    mkdir -p "$STUDY/reports/runs_${grid}_$name"
    cp "$merged"/runs/*.json "$STUDY/reports/runs_${grid}_$name/" 2>/dev/null
}

for grid in $GRIDS; do
    for name in $DATASETS; do merge_report "$grid" "$name" "$first" & done
done
if [ -n "$SIDE" ]; then merge_report "$side_grid" "$side_name" "$side_grid" & fi
wait
tail -n 3 "$STUDY"/*.log >"$STUDY/reports/tails.log" 2>/dev/null
tar czf "$OUT/study.tgz" -C "$STUDY/reports" .
log "wrote $OUT/study.tgz"
