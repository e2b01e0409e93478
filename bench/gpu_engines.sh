#!/usr/bin/env bash
# The engines that need CUDA in one command: DeepSpeed ZeRO-2/3 (exact resume, LoRA) and QLoRA vs LoRA, each run as
# a user types it. Needs one GPU and `pip install deepspeed 'hftl[qlora]'`; about 3 minutes. Writes a markdown
# table to $OUT/gpu_engines.md and every run's log to $OUT/gpu_engines_logs.tar.gz (OUT defaults to a new temporary
# folder). --smoke: tiny sizes, runs anywhere (DeepSpeed and QLoRA rows then say why they cannot run).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT="${OUT:-$(mktemp -d -t hftl-gpu-engines-XXXX)}"
mkdir -p "$OUT"
status=0
python bench/gpu_engines.py --out "$OUT/work" --report "$OUT/gpu_engines.md" "$@" || status=$?
tar -czf "$OUT/gpu_engines_logs.tar.gz" -C "$OUT/work" $(cd "$OUT/work" && ls *.log 2>/dev/null) || true
rm -rf "$OUT/work"  # models, data and checkpoints: only the table and the logs are kept
echo "table: $OUT/gpu_engines.md"
exit $status
