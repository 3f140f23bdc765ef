"""The demo's closing numbers: probes of every backbone (k-NN@20 top-1), raw pixels, and what dedup did
with the planted copies. Prints them and writes WORKDIR/numbers.json, which stages/demo_readme.py
compares with README's demo block. Usage: python stages/demo_summary.py WORKDIR
"""
from __future__ import annotations

import json
import string
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from demo_dedup_truth import dedup_truth  # noqa: E402

# What the demo prints, one line each; README's demo block holds these lines with the demo's values.
LINES = (
    "k-NN@20 top-1 on the {val_images:d} held-out digits: pretrained {pretrained:.1f}%, "
    "same network at random init {random_mini8:.1f}%, raw pixels {raw_pixels:.1f}%",
    "at 64 px: pretrained {pretrained_64:.1f}%, after hires-adapt to 64 px {hires_64:.1f}%",
    "at 32 px, after hires-adapt (the distillation teacher) {hires_32:.1f}%; distilled students: vit_mini8 "
    "{mini8:.1f}% (random init {random_mini8:.1f}%), vit_micro8 {micro8:.1f}% (random init {random_micro8:.1f}%)",
    "dedup, 8x8-thumbnail copy descriptor at cosine {dedup_threshold:g}: removed {dedup_removed:d} of "
    "{dedup_images:d} images, {dedup_removed_copies:d} of the {dedup_planted:d} planted copies ingest left and "
    "{dedup_removed_distinct:d} distinct images",
    "dedup, the random ViT's features at cosine {vit_threshold:g}: removed {vit_removed:d}, "
    "{vit_removed_copies:d} planted copies and {vit_removed_distinct:d} distinct images",
)
PROBES = {"pretrained": "probe_backbone", "random_mini8": "probe_random_mini8", "hires_32": "probe_run_hr_backbone",
          "mini8": "probe_distill_vit_mini8_backbone", "micro8": "probe_distill_vit_micro8_backbone",
          "random_micro8": "probe_random_micro8", "pretrained_64": "probe64_run", "hires_64": "probe64_run_hr"}
DEDUPS = {"dedup": "dedup", "vit": "dedup_random_vit"}  # numbers' prefix -> the demo's dedup output


def fields() -> list[tuple[str, str]]:
    """(name, format spec) of every number in LINES, in order (a name may repeat)."""
    return [(name, spec) for line in LINES for _, name, spec, _ in string.Formatter().parse(line) if name]


def raw_pixels_knn(w: Path) -> tuple[float, int]:
    import torch

    from lvdtool.artifacts import ImagesArtifact
    from lvdtool.data.eval_transform import EvalTransform, normalize_batch
    from lvdtool.eval.knn import knn_classify

    def pixels(name: str):
        samples = sorted(ImagesArtifact(str(w / name)).iter_samples(), key=lambda s: s.key)
        x = normalize_batch(torch.stack([EvalTransform(crop=32, resize=32)(s.data) for s in samples])).flatten(1)
        return x, torch.tensor([int(s.meta["label"].removeprefix("digit")) for s in samples])

    (xt, yt), (xv, yv) = pixels("digits_train"), pixels("digits_val")
    return knn_classify(xt, yt, xv, yv, ks=(20,))[20]["top1"], len(yv)


def demo_numbers(w: Path) -> dict[str, float | int]:
    numbers: dict[str, float | int] = {}
    for name, folder in PROBES.items():
        numbers[name] = round(json.loads((w / folder / "report.json").read_text())["knn"]["20"]["top1"], 1)
    raw, numbers["val_images"] = raw_pixels_knn(w)
    numbers["raw_pixels"] = round(raw, 1)
    for prefix, folder in DEDUPS.items():
        truth = dedup_truth(w / "raw", w / folder)
        numbers[f"{prefix}_threshold"] = json.loads((w / folder / "manifest.json").read_text())["config"]["threshold"]
        numbers.update({f"{prefix}_{k}": truth[k] for k in ("images", "planted", "removed", "removed_copies",
                                                             "removed_distinct")})
    return numbers


def render(numbers: dict) -> list[str]:
    return [line.format(**numbers) for line in LINES]


if __name__ == "__main__":
    work = Path(sys.argv[1])
    found = demo_numbers(work)
    (work / "numbers.json").write_text(json.dumps(found, indent=2) + "\n")
    print("\n".join(render(found)))
