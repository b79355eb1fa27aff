#!/usr/bin/env bash
# On the GPU machine, from the repo root with .gpu/ carried (benchmarks/gpu/prepare.sh): the quality table at
# --budget ${BUDGET:-1} for rows $ROWS into /tmp/gt<budget>; table.md, table.json, the log and, when the
# ensemble's members are there, both ensemble modes' results.json are copied to $OUT.
# Usage: ROWS=single-task,multitask,... BUDGET=1 LIMIT=480 bash benchmarks/gpu/run_table.sh
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
  || exit 1
mkdir -p /tmp/minilm && cp .gpu/model/*.json .gpu/model/vocab.txt /tmp/minilm/
python3 -c "
from safetensors.torch import load_file, save_file
weights = load_file('.gpu/model/model16.safetensors')
save_file({k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, '/tmp/minilm/model.safetensors')"
export PYTHONPATH=$PWD/src:$PWD/.gpu/site:/tmp/site MTBERT_DATA=$PWD/.gpu/data PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
out=/tmp/gt${BUDGET:-1}
start=$(date +%s)
timeout "${LIMIT:-500}" python3 -m mtbert bench quality --output_dir "$out" --budget "${BUDGET:-1}" --rows "$ROWS" 2>&1 \
  | tr '\r' '\n' | grep -v 'it/s\|s/it\|?it' | tee -a "$OUT/log.txt"
echo "bench rc ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s"
cp "$out/table.md" "$out/table.json" "$OUT/" 2>/dev/null
runs=$out/runs
if [ -f "$runs/pcgrad/results.json" ] && [ -f "$runs/two-step-pcgrad/results.json" ] \
   && [ -f "$runs/sw-pcgrad-0-3-1-two-step/results.json" ]; then
  for mode in vote soft; do
    python3 -m mtbert ensemble "$runs/sw-pcgrad-0-3-1-two-step" "$runs/two-step-pcgrad" "$runs/pcgrad" \
      --output_dir "/tmp/ensemble-$mode" --mode "$mode" > /dev/null 2>&1 \
      && cp "/tmp/ensemble-$mode/results.json" "$OUT/ensemble-$mode.json"
  done
fi
