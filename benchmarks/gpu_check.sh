#!/usr/bin/env bash
# The GPU path, checked on a machine with an NVIDIA GPU (issue 15), in one run of about ten minutes:
#  1. the synthetic default DAG with ray.use_gpu, bf16 and channels-last (infra/params/gpu-smoke.yaml),
#     in a scratch copy of the project: train on the GPU, export, evaluate, report;
#  2. benchmarks/train_speed.py for ResNet50 and VGG16 at 224 px (resize 256), CAM and ICL, fp32 and bf16,
#     channels-last off and on.
# From a fresh clone, one command: outside a virtual environment it makes .venv (the project with its
# gpu extra: NVML for MLflow's GPU metrics) unless there is one, and runs in it. Step 1 is skipped (said
# so) where dvc, Ray or MLflow is missing; step 2 needs only torch, torchvision, pydantic, ruamel.yaml,
# OpenCV and Pillow (PYTHONPATH=. from the project root). Writes to $OUT (default: gpu_check/):
# device.txt, dag.log, report.md, speed.txt (the tables) and speed.jsonl (one JSON result per line).
#     bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -d .venv ] || { python3 -m venv .venv && .venv/bin/pip install -q -U pip && .venv/bin/pip install -q -e ".[gpu]"; }
  . .venv/bin/activate
fi
out=$(realpath -m "${OUT:-gpu_check}")
mkdir -p "$out"
export PYTHONUNBUFFERED=1 DVC_NO_ANALYTICS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/device.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" | tee -a "$out/device.txt"

if command -v dvc > /dev/null && command -v wsol > /dev/null && python3 -c "import ray, mlflow" 2> /dev/null; then
  scratch=$(mktemp -d)
  git ls-files -z | xargs -0 cp --parents -t "$scratch"
  (cd "$scratch" && git init -q && git add -A && git -c user.name=check -c user.email=check@localhost commit -qm scratch \
     && wsol params apply infra/params/gpu-smoke.yaml && /usr/bin/time -v dvc repro) > "$out/dag.log" 2>&1 \
     || { tail -40 "$out/dag.log"; exit 1; }
  grep -E "img/s|Elapsed|Maximum resident" "$out/dag.log" | tail -12
  cp "$scratch/report/synth/report.md" "$out/report.md"
else
  echo "step 1 (the DAG on the GPU) skipped: dvc, wsol, Ray or MLflow is not installed here" | tee "$out/dag.log"
fi

for backbone in resnet50 vgg16; do
  for amp in none bf16; do
    for layout in "" --channels-last; do
      python3 benchmarks/train_speed.py --backbone "$backbone" --crop 224 --resize 256 --batch 64 --steps 10 \
        --threads 8 --loader-workers 6 --device cuda --amp "$amp" $layout --json > "$out/one.json"
      python3 -c "import json, sys; print(json.dumps(json.load(sys.stdin)))" < "$out/one.json" >> "$out/speed.jsonl"
      python3 -c "import json, sys; sys.path.insert(0, 'benchmarks'); import train_speed; print(train_speed.table(json.load(sys.stdin)))" \
        < "$out/one.json" | tee -a "$out/speed.txt"
    done
  done
done
rm -f "$out/one.json"
