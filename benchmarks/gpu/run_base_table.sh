#!/usr/bin/env bash
# On the GPU machine, from the repo root, once every .gpu-base/carry-K has arrived (benchmarks/gpu/ship_base.py):
# checks and unpacks all-mpnet-base-v2 into /tmp/mpnet (fp32 from the fp16 that travelled), then the quality
# table on it (configs/bench-base) at --budget ${BUDGET:-5} for rows $ROWS into /tmp/gb<budget>; table.md,
# table.json and the log are copied to $OUT.
# Here, before: MTBERT_DATA=../shared/data/cs224n bash benchmarks/gpu/prepare.sh && python benchmarks/gpu/ship_base.py pack
# Then one `run` call per carry, back to back: carry [".gpu-base/carry-1"] ... [".gpu-base/carry-4"], the last with
# ROWS=two-step-pcgrad,sw-pcgrad-0-3-1-two-step BUDGET=5 LIMIT=480 bash benchmarks/gpu/run_base_table.sh
# A later call on a fresh machine goes on from an earlier call's table.json, committed or left in the working tree:
# FROM_TABLE=path/to/table.json takes its finished rows (and their dev predictions) instead of training them again.
set -o pipefail
python3 benchmarks/gpu/ship_base.py unpack /tmp/mpnet || exit 1
base=.gpu-base/carry-1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$base"/whl/*.whl \
  || exit 1
export PYTHONPATH=$PWD/src:/tmp/site MTBERT_DATA=$PWD/$base/data PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
out=/tmp/gb${BUDGET:-5}
start=$(date +%s)
timeout "${LIMIT:-500}" python3 -m mtbert bench quality --configs configs/bench-base --backbone /tmp/mpnet \
  --output_dir "$out" --budget "${BUDGET:-5}" --rows "$ROWS" ${FROM_TABLE:+--from_table "$FROM_TABLE"} 2>&1 \
  | tr '\r' '\n' | grep -v 'it/s\|s/it\|?it' | tee -a "$OUT/log.txt"
echo "bench rc ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s"
cp "$out/table.md" "$out/table.json" "$OUT/" 2>/dev/null
