#!/usr/bin/env bash
# The checks only a CUDA machine can run, as one script (run from the repository root; results under $OUT):
#   OUT=cuda-out bash bench/cuda_checks.sh
# 1. the tests marked gpu (towers on CUDA, augmentation, loader, LRN); 2. bench/towers.py (does a stream per
# tower overlap the towers?); 3. `alexnet train --towers cuda:0,cuda:0` end to end, evaluated by the plain
# model; 4. `--recipe paper` for 3 epochs, seeds 0-2 then 3-4, on both photo sets (fp32: the recipe turns bf16 off).
# Each step is capped by `timeout` and logged; a failing step does not stop the others. Uses the python3 on
# PATH with the repository on PYTHONPATH (no install), and needs scikit-image/scikit-learn for the photos.
set -u
OUT=${OUT:-cuda-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 ALEXNET_CACHE=${ALEXNET_CACHE:-/tmp/alexnet-cache}
exec > >(tee "$OUT/log.txt") 2>&1
step() {   # step NAME SECONDS COMMAND...
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "== $name ($(date -u +%H:%M:%S))"
    timeout "$limit" "$@"
    echo "== $name: exit $?, $((SECONDS - start)) s"
}
step machine 60 bash -c 'nvidia-smi -L; python3 -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name(), torch.cuda.device_count())"'
step gpu-tests 150 python3 -m pytest -m gpu -q -rs -p no:cacheprovider tests/test_towers.py tests/test_augment.py \
    tests/test_loader.py tests/test_lrn.py
step towers-bench 120 python3 bench/towers.py --json "$OUT/towers.json"
step photos 90 python3 -c "import sys; sys.path.insert(0, 'bench'); from pathlib import Path; from photos import make_photo_folder
for files, source in ((3000, 'colour'), (2400, 'grey')): print(make_photo_folder(Path('bench/_data'), files, workers=16, source=source))"
step towers-train 120 bash -c 'python3 -m alexnet train --recipe paper --data bench/_data/photos-3000 --epochs 3 --seed 0 \
    --towers cuda:0,cuda:0 --out /tmp/towers-run --force --quiet && python3 -m alexnet eval /tmp/towers-run/last.pt \
    --split val --device cuda'
for seeds in "0 1 2" "3 4"; do
    step "paper-colour-seeds-${seeds// /-}" 150 python3 bench/paper_diagnosis.py epochs --variants paper --seeds $seeds \
        --json "$OUT/epochs-colour-paper-cuda-seeds-${seeds// /-}.json"
    step "paper-grey-seeds-${seeds// /-}" 150 python3 bench/paper_diagnosis.py epochs --photos grey --variants paper \
        --seeds $seeds --json "$OUT/epochs-grey-paper-cuda-seeds-${seeds// /-}.json"
done
