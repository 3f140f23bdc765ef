"""Does pretraining learn? k-NN of the trained backbone against the pretraining budget, as a table.

For each budget (a complete `lvd pretrain` run of that many iterations, so each run has its own
full schedule) the table gives the wall-clock seconds of the run, the final DINO loss against
ln K, and weighted k-NN@20 top-1 (`lvd probe`, CLS features) of the trained teacher backbone, of
the same network at random init and of raw pixels, all on the same held-out images.

    python benchmarks/learning.py                                 # scikit-learn digits (the demo split)
    python benchmarks/learning.py --train data/mnist_train --val data/mnist_val --budgets 1000 4000
    python benchmarks/learning.py --set crops.flip_prob=0.5       # any pretrain key, for ablations

Without --train/--val it ingests scikit-learn's digits (1000 train / 400 val, as `make demo`
does) into a temporary folder with `lvd crawl-ingest`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lvdtool.artifacts import ImagesArtifact
from lvdtool.data.eval_transform import EvalTransform, normalize_batch
from lvdtool.eval.knn import knn_classify

RECIPE = "small_data"


def lvd(*args: str) -> None:
    env = {**os.environ, "LVD_QUIET": "1"}
    proc = subprocess.run([sys.executable, "-m", "lvdtool.cli", *args], capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"lvd {' '.join(args[:1])} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


def sklearn_digits(root: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
    import demo_data  # noqa: PLC0415  (the demo's own data generator)

    demo_data.main(root)
    arts = []
    for split in ("train", "val"):
        # digits are near-duplicates of each other by nature: keep them all
        lvd("crawl-ingest", "--dir", str(root / "labeled" / split), "--label-from-dir", "--out", str(root / split),
            "process.min_side=32", "dedup.perceptual=false", "dedup.exact=false")
        arts.append(root / split)
    return arts[0], arts[1]


def pixels(images: Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    samples = sorted(ImagesArtifact(str(images)).iter_samples(), key=lambda s: s.key)
    transform = EvalTransform(crop=size, resize=size)
    x = normalize_batch(torch.stack([transform(s.data) for s in samples]))
    labels = sorted({s.meta["label"] for s in samples})
    y = torch.tensor([labels.index(s.meta["label"]) for s in samples])
    return x, y


def probe_knn(weights: Path, train: Path, val: Path, out: Path, size: int) -> float:
    lvd("probe", "--weights", str(weights), "--train", str(train), "--val", str(val), "--out", str(out),
        f"resolution={size}", f"resize={size}", "linear.epochs=1", "pca_images=0")
    return json.loads((out / "report.json").read_text())["knn"]["20"]["top1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=Path, help="labelled images artifact to pretrain on and to fit k-NN on")
    ap.add_argument("--val", type=Path, help="labelled images artifact to evaluate on")
    ap.add_argument("--budgets", type=int, nargs="+", default=[200, 400, 800, 1600], help="iterations per run")
    ap.add_argument("--size", type=int, default=32, help="evaluation resolution (the recipe's global crop)")
    ap.add_argument("--set", nargs="*", default=[], help="extra pretrain overrides key=value")
    ap.add_argument("--work", type=Path, help="keep runs here (default: a temporary folder)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        train, val = (args.train, args.val) if args.train else sklearn_digits(work / "digits")
        (xt, yt), (xv, yv) = pixels(train, args.size), pixels(val, args.size)
        raw = knn_classify(xt.flatten(1), yt, xv.flatten(1), yv, ks=(20,))[20]["top1"]
        rows = []
        for budget in args.budgets:
            run = work / f"run_{budget}"
            started = time.perf_counter()
            lvd("pretrain", "--arch", RECIPE, "--images", str(train), "--out", str(run), "--iterations", str(budget),
                "--overwrite", "checkpoint.every=1000000", *args.set)
            seconds = time.perf_counter() - started
            last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
            manifest = json.loads((run / "manifest.json").read_text())
            prototypes = manifest["config"]["dino"]["prototypes"]
            if budget == args.budgets[0]:
                random_path = work / "random_init.pth"
                build_random(manifest["config"], random_path)
                random = probe_knn(random_path, train, val, work / "probe_random", args.size)
            trained = probe_knn(run / "backbone.pth", train, val, work / f"probe_{budget}", args.size)
            rows.append((budget, seconds, last["dino"], math.log(prototypes), trained, random, raw))

    print(f"\nlearning curve: recipe {RECIPE} {' '.join(args.set)}; {len(yt)} train / {len(yv)} val images, "
          f"k-NN@20 top-1 (CLS), torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'iterations':>10s} {'seconds':>8s} {'DINO':>6s} {'ln K':>6s} {'trained':>8s} {'random':>7s} {'pixels':>7s}")
    for budget, seconds, dino, lnk, trained, random, raw in rows:
        print(f"{budget:10d} {seconds:8.0f} {dino:6.3f} {lnk:6.3f} {trained:8.2f} {random:7.2f} {raw:7.2f}")


def build_random(config: dict, path: Path) -> None:
    """The run's backbone at random init (seed 0), saved as a backbone file."""
    from lvdtool.models import build_backbone, save_backbone  # noqa: PLC0415

    model = config["model"]
    overrides = {k: model[k] for k in ("patch_size", "img_size", "embed_dim", "depth", "num_heads", "layerscale_init")
                 if model.get(k) is not None}
    torch.manual_seed(0)
    save_backbone(build_backbone(model["arch"], **overrides), path)


if __name__ == "__main__":
    main()
