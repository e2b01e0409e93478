#!/usr/bin/env bash
# GPU benchmarks in one command: ViT-B/16 full fine-tuning (samples/s, MFU), ViT-B/16 head-only with the feature
# cache vs transformers.Trainer, BERT-base SST-2-like full fine-tuning vs Trainer; all bf16, random weights built
# from configs (no Hub needed), synthetic data. About 5 minutes on one H100; writes a markdown table to
# $OUT/gpu_benchmarks.md (OUT defaults to a new temporary folder). Extra arguments go to the Python script
# (--smoke: tiny sizes, runs anywhere).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT="${OUT:-$(mktemp -d -t hftl-gpu-bench-XXXX)}"
mkdir -p "$OUT"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python bench/gpu_benchmarks.py --out "$OUT/work" --report "$OUT/gpu_benchmarks.md" "$@"
rm -rf "$OUT/work"  # models, caches and checkpoints: only the table is kept
echo "table: $OUT/gpu_benchmarks.md"
