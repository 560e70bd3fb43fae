"""End-to-end prediction over a folder of JPEGs: `alexnet predict` against the usual torchvision inference loop.

    python bench/predict_folder.py                  # 1,000 JPEGs, 3 alternating repeats of each arm
    python bench/predict_folder.py --quick          # 20 JPEGs, 1 repeat: a smoke run
    python bench/predict_folder.py --json docs/inference/predict_folder.json

The folder (bench/_data/photos-<N>, built once and reused) holds real photographs shipped with scikit-image and
scikit-learn, randomly cropped and rescaled (short side 300-500 px, bench/photos.py). The network is torchvision's
AlexNet (``alexnet_owt``) at 224 px with random weights (fc8 scaled up so its softmax is peaked and the two arms'
top-5 can be compared), its state_dict turned into a checkpoint by ``alexnet convert`` (torchvision's
preprocessing: resize 256, centre 224, ImageNet mean/std). Arms, each timed from the files and the weights on
disk to the top-5 of every image (loading the weights included), repeated alternately:

  (a) torchvision: ImageFolder + the weights' own transforms (PIL) + DataLoader(num_workers=2, batch_size=64),
      torchvision's alexnet in eager mode under torch.inference_mode (3 processes: the loop and 2 decoders);
  (b) ``alexnet.inference.predict.predict`` as ``alexnet predict CKPT FOLDER`` runs it (one process: decoding threads a
      batch ahead of the network), with its default ``--backend auto``; then with ``--backend torch`` and
      ``--backend onnxruntime`` forced, for the record; (b0) predict's loop with one decoding thread and no overlap
      with the network (as predict ran before it decoded in parallel).
Decoding alone (no network) is timed first with 1 and with one thread per core, and loading per backend.

The ratio is (a)'s median seconds over (b)'s (> 1: predict is faster). Load average is printed before and after.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alexnet.util import memory

memory.configure()   # the memory settings, explicitly, before torch is imported (see alexnet.util.memory)

import torch  # noqa: E402
import torchvision  # noqa: E402

from alexnet.inference import backends  # noqa: E402
from alexnet.cli.main import main as alexnet_main  # noqa: E402
from alexnet.inference.predict import Predictor, decode_threads, expand_paths, predict  # noqa: E402
from jsonout import check_json_path, write_json  # noqa: E402  (bench/jsonout.py)
from machine import load_average, machine  # noqa: E402  (bench/machine.py)
from photos import make_photo_folder  # noqa: E402  (bench/photos.py)

HERE = Path(__file__).resolve().parent


def make_checkpoint(folder: Path) -> tuple[Path, Path]:
    """(torchvision state_dict .pth, the checkpoint `alexnet convert` made of it), built once in ``folder``."""
    pth, ckpt = folder / "alexnet-owt-random.pth", folder / "alexnet-owt-random.pt"
    if not ckpt.exists():
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        net = torchvision.models.alexnet()
        with torch.no_grad():
            net.classifier[6].weight.mul_(300)     # a peaked softmax, as tests/interchange/test_caffe.py does
        torch.save(net.state_dict(), pth)
        with contextlib.redirect_stdout(io.StringIO()):
            if alexnet_main(["convert", str(pth), "--out", str(ckpt)]) != 0:
                raise SystemExit("alexnet convert failed")
    return pth, ckpt


def torchvision_loop(folder: Path, pth: Path, batch_size: int, workers: int) -> list[list[int]]:
    """(a): the top-5 class indices of every image, in ImageFolder's order (sorted: the same as predict's)."""
    weights = torchvision.models.AlexNet_Weights.IMAGENET1K_V1
    dataset = torchvision.datasets.ImageFolder(str(folder), transform=weights.transforms())
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    net = torchvision.models.alexnet()
    net.load_state_dict(torch.load(pth, weights_only=True))
    net.eval()
    tops = []
    with torch.inference_mode():
        for x, _ in loader:
            tops += net(x).topk(5, dim=1).indices.tolist()
    return tops


def ours(folder: Path, ckpt: Path, backend: str) -> list[list[int]]:
    """(b): `alexnet predict CKPT FOLDER --backend BACKEND`, as the function the command calls."""
    results, skipped = predict(str(ckpt), [str(folder)], topk=5, device="cpu", backend=backend, progress=False)
    if skipped:
        raise SystemExit(f"predict skipped {len(skipped)} files: {skipped[:3]}")
    return [[t["index"] for t in r["topk"]] for r in results]


def serial_decoding(folder: Path, ckpt: Path) -> list[list[int]]:
    """(b0): predict as it was before it decoded in parallel: one decoding thread, no overlap with the network."""
    predictor = Predictor(str(ckpt), device="cpu", backend="torch")
    tops = predictor.predict_paths(expand_paths([str(folder)]), 5, threads=1, ahead=0)
    return [[t["index"] for t in top] for _, top, _ in tops]


def decode_rates(folder: Path, ckpt: Path) -> dict[int, float]:
    """Images decoded per second (no network) by 1 and by ``decode_threads()`` threads."""
    predictor, paths = Predictor(str(ckpt), device="cpu", backend="torch"), expand_paths([str(folder)])
    rates = {}
    for threads in sorted({1, decode_threads()}):
        with ThreadPoolExecutor(threads) as pool:
            start = time.perf_counter()
            list(pool.map(predictor.decode_or_reason, paths))
            rates[threads] = len(paths) / (time.perf_counter() - start)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=1000, help="JPEGs in the folder (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each arm, alternating (default 3)")
    parser.add_argument("--data-dir", default=str(HERE / "_data"), help="where the folder and checkpoint are built")
    parser.add_argument("--quick", action="store_true", help="20 files, 1 repeat: a smoke run")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON (atomically)")
    args = parser.parse_args()
    if args.quick:
        args.files, args.repeats = 20, 1
    if args.files < 1 or args.repeats < 1:
        parser.error("--files and --repeats must be at least 1")
    check_json_path(parser, args.json)   # named now, not after minutes of measuring
    data = Path(args.data_dir)
    folder = make_photo_folder(data, args.files, workers=2)
    pth, ckpt = make_checkpoint(data / "predict_folder")
    auto = backends.auto_backend(str(ckpt), "cpu", args.files)
    arms = {"(a) torchvision ImageFolder + DataLoader(2 workers) + eager": lambda: torchvision_loop(folder, pth, 64, 2),
            f"(b) alexnet predict, default (auto -> {auto})": lambda: ours(folder, ckpt, "auto"),
            "(b') alexnet predict --backend torch": lambda: ours(folder, ckpt, "torch"),
            "(b'') alexnet predict --backend onnxruntime": lambda: ours(folder, ckpt, "onnxruntime"),
            "(b0) predict, torch, 1 decoding thread, no overlap (as before)": lambda: serial_decoding(folder, ckpt)}
    if not backends.onnxruntime_installed():
        arms.pop("(b'') alexnet predict --backend onnxruntime")
    print(f"machine: {machine()}")
    before = load_average()
    print(f"load average before: {before} (a shared machine: compare numbers within this run only)")
    print(f"{args.files} JPEGs in {folder}; alexnet_owt 224 px, random weights; predict decodes with "
          f"{decode_threads()} threads; {args.repeats} alternating repeats")
    decoding = decode_rates(folder, ckpt)
    print("decoding alone: " + ", ".join(f"{t} thread(s) {r:.0f} img/s" for t, r in decoding.items()))
    loads = load_seconds(ckpt, args.repeats)
    print("loading the checkpoint (median): " + ", ".join(f"{b} {t:.2f} s" for b, t in loads.items()) +
          " (onnxruntime: exported to ONNX in memory first)")
    seconds: dict[str, list[float]] = {label: [] for label in arms}
    tops: dict[str, list] = {}
    for _ in range(args.repeats):
        for label, arm in arms.items():
            start = time.perf_counter()
            tops[label] = arm()
            seconds[label].append(time.perf_counter() - start)
    report(args, arms, seconds, tops, before, folder, {"load_s": loads, "decode_img_s": decoding})


def load_seconds(ckpt: Path, repeats: int) -> dict[str, float]:
    """Median seconds of ``backends.load`` per backend: what --backend auto weighs against the images."""
    names = ["torch", "onnxruntime"] if backends.onnxruntime_installed() else ["torch"]
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            start = time.perf_counter()
            backends.load(str(ckpt), name, "cpu")
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def report(args, arms: dict, seconds: dict, tops: dict, before: str, folder: Path, extra: dict) -> None:
    labels = list(arms)
    base = statistics.median(seconds[labels[0]])
    rows = {}
    for label in labels:
        median = statistics.median(seconds[label])
        same = sum(a == b for a, b in zip(tops[label], tops[labels[0]])) / max(1, len(tops[labels[0]]))
        rows[label] = {"seconds": seconds[label], "median_s": median, "img_s": args.files / median,
                       "speed_vs_a": base / median, "top5_equal_to_a": same}
        print(f"{label:<64} {median:7.2f} s  {args.files / median:7.1f} img/s  {base / median:5.2f}x (a)  "
              f"top-5 as (a): {100 * same:.1f}%")
    after = load_average()
    print(f"ratio (a)/(b) seconds: {rows[labels[1]]['speed_vs_a']:.2f}x (> 1: alexnet predict is faster)")
    print(f"load average after: {after}")
    if args.json:
        record = {"command": "python bench/predict_folder.py " + " ".join(sys.argv[1:]), "machine": machine(),
                  "load_average_before": before, "load_average_after": after, "files": args.files,
                  "folder": str(folder.name), "decode_threads": decode_threads(), **extra, "arms": rows,
                  "ratio_a_over_b": rows[labels[1]]["speed_vs_a"]}
        write_json(args.json, record)


if __name__ == "__main__":
    main()
