#!/usr/bin/env bash
# The checks only a CUDA machine can run, as one script (run from the repository root; results under $OUT):
#   OUT=cuda-out bash bench/cuda_checks.sh                       # every step below, in order
#   OUT=cuda-out bash bench/cuda_checks.sh gpu-tests towers-bench # the steps named
# Steps: machine; gpu-tests (the tests marked gpu: towers on CUDA, augmentation, loader, LRN; and the LRN's
# compile limit); towers-bench (bench/towers.py: does a stream per tower overlap the towers?); photos (the
# two bench photo folders); towers-train (`alexnet train --towers cuda:0,cuda:0`, then `alexnet eval` of the
# checkpoint by the plain model); paper-seeds-0-4 and paper-seeds-5-9 (`--recipe paper`, 3 epochs, both photo
# sets, fp32: the recipe turns bf16 off; $PAPER_VARIANT names another bench/paper_diagnosis.py variant);
# gpu-feed (bench/gpu_feed.py: the paper net's training rate fed from the jpeg cache with nvJPEG decoding on the
# GPU, over its rate on a batch already on the device; issue 21's target >= 0.9).
# Each step is capped by `timeout` and logged; a failing step does not stop the others. Uses the python3 on PATH with the repository on PYTHONPATH (no install); the photos need
# scikit-image and scikit-learn.
set -u
OUT=${OUT:-cuda-out}
mkdir -p "$OUT"
PAPER_VARIANT=${PAPER_VARIANT:-paper}   # a bench/paper_diagnosis.py variant: the H200 runs were the text's conventions
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 ALEXNET_CACHE=${ALEXNET_CACHE:-/tmp/alexnet-cache}
exec > >(tee -a "$OUT/log.txt") 2>&1

step() {   # step NAME SECONDS COMMAND...
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "== $name ($(date -u +%H:%M:%S))"
    timeout "$limit" "$@"
    echo "== $name: exit $?, $((SECONDS - start)) s"
}

photos() {
    step photos 90 python3 -c "import sys; sys.path.insert(0, 'bench'); from pathlib import Path
from photos import make_photo_folder
for files, source in ((3000, 'colour'), (2400, 'grey')): make_photo_folder(Path('bench/_data'), files, 16, source)"
}

paper_seeds() {   # paper_seeds FIRST LAST: both photo sets, seeds FIRST..LAST
    local seeds
    seeds=$(seq -s ' ' "$1" "$2")
    [ -e bench/_data/photos-grey-2400/.complete ] || photos
    step "paper-grey-seeds-$1-$2" 200 python3 bench/paper_diagnosis.py epochs --photos grey --variants "$PAPER_VARIANT" \
        --seeds $seeds --json "$OUT/epochs-grey-paper-cuda-seeds-$1-$2.json"
    step "paper-colour-seeds-$1-$2" 200 python3 bench/paper_diagnosis.py epochs --variants "$PAPER_VARIANT" --seeds $seeds \
        --json "$OUT/epochs-colour-paper-cuda-seeds-$1-$2.json"
}

run_step() {
    case $1 in
        machine) step machine 60 bash -c 'nvidia-smi -L; python3 -c "import torch, torchvision
print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name(), torch.cuda.device_count())"' ;;
        gpu-tests) step gpu-tests 150 python3 -m pytest -m "gpu or not slow" -q -rs -p no:cacheprovider \
            tests/models/test_towers.py tests/data/test_augment.py tests/data/test_loader.py tests/ops/test_lrn.py tests/data/test_jpeg_store.py \
            -k "cuda or many_shapes" ;;
        towers-bench) step towers-bench 150 python3 bench/towers.py --steps 5 --rounds 5 --json "$OUT/towers.json" ;;
        photos) photos ;;
        towers-train) [ -e bench/_data/photos-3000/.complete ] || photos
            step towers-train 120 bash -c 'python3 -m alexnet train --recipe paper --data bench/_data/photos-3000 \
                --epochs 3 --seed 0 --towers cuda:0,cuda:0 --out /tmp/towers-run --force --quiet &&
                python3 -m alexnet eval /tmp/towers-run/last.pt --split val --device cuda' ;;
        gpu-feed) step gpu-feed 240 python3 bench/gpu_feed.py --json "$OUT/gpu_feed.json" ;;
        paper-seeds-0-4) paper_seeds 0 4 ;;
        paper-seeds-5-9) paper_seeds 5 9 ;;
        *) echo "cuda_checks.sh: no step $1" >&2; return 2 ;;
    esac
}

for name in "${@:-machine gpu-tests gpu-feed towers-bench photos towers-train paper-seeds-0-4}"; do
    for one in $name; do run_step "$one"; done
done
