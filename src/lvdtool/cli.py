"""The `lvd` command line: one command per stage; options are sugar for Hydra `key=value` overrides."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, List, Optional

import typer

from lvdtool import __version__
from lvdtool.errors import LvdError, one_line

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="lvd: build curated image corpora (LVD-142M style) and train DINOv2-style ViT models.\n\n"
    "Every stage reads and writes sharded artifacts with a manifest, is restartable, and accepts "
    "Hydra-style key=value overrides after its options.",
)
OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}
EPILOG = "Any config key can be overridden after the options as key=value (list them with: lvd config {stage})."
_state = {"debug": os.environ.get("LVD_DEBUG") == "1"}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lvd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors (also after the command, or LVD_DEBUG=1)."),
    as_json: bool = typer.Option(False, "--json", help="Print the command's summary as one JSON object on stdout (human output: stderr)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    if debug:
        _state["debug"] = True


def _finish(command: str, out: Optional[Path], summary: Any) -> Any:
    """Record a command's summary for --json: {"command", "out" (absolute), "summary"}."""
    _state["result"] = {"command": command, "out": os.path.abspath(out) if out is not None else None, "summary": summary}
    return summary


@app.command("crawl-ingest", context_settings=OVERRIDES, epilog=EPILOG.format(stage="crawl-ingest"))
def crawl_ingest(
    ctx: typer.Context,
    urls: Optional[List[Path]] = typer.Option(None, "--urls", help="URL list (.txt, .csv, .tsv, .parquet, .jsonl); repeatable."),
    dirs: Optional[List[Path]] = typer.Option(None, "--dir", help="Image folder (recursive); repeatable."),
    out: Path = typer.Option(..., "--out", help="Output images artifact directory."),
    label_from_dir: Optional[bool] = typer.Option(None, "--label-from-dir", help="Parent folder name is the label (ImageFolder)."),
    shard_size: Optional[int] = typer.Option(None, "--shard-size", help="Input records per shard."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Concurrent fetch/decode threads per process."),
    processes: Optional[int] = typer.Option(None, "--processes", help="Local processes (each takes a share of the shards)."),
    allow_private_network: Optional[bool] = typer.Option(None, "--allow-private-network", help="Allow URLs resolving to loopback/private addresses."),
    keep_original: Optional[bool] = typer.Option(None, "--keep-original", help="Store original JPEG/PNG/WebP bytes when within limits."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an earlier lvd artifact of this stage in --out first (never inputs or other folders)."),
) -> None:
    """Fetch URL lists or scan folders into an images artifact (decode, validate, resize, dedup)."""
    from lvdtool.overrides import sugar
    from lvdtool.stages import crawl_ingest as stage

    overrides = sugar(
        **{
            "inputs.urls": [str(p) for p in urls or []],
            "inputs.dirs": [str(p) for p in dirs or []],
            "inputs.label_from_dir": label_from_dir,
            "out": str(out),
            "shard_size": shard_size,
            "threads": threads,
            "processes": processes,
            "fetch.allow_private_network": allow_private_network,
            "process.keep_original": keep_original,
        }
    )
    _finish("crawl-ingest", out, stage.main(overrides + list(ctx.args), overwrite=overwrite))


@app.command("embed", context_settings=OVERRIDES, epilog=EPILOG.format(stage="embed"))
def embed(
    ctx: typer.Context,
    images: Path = typer.Option(..., "--images", help="Input images artifact."),
    out: Path = typer.Option(..., "--out", help="Output embeddings artifact directory."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Backbone weights (official hub .pth, lvd backbone.pth, .safetensors)."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Architecture (default: read off the weights)."),
    selection: Optional[Path] = typer.Option(None, "--selection", help="Embed only the keys of this selection artifact."),
    token: Optional[str] = typer.Option(None, "--token", help="cls | avgpool | cls+avgpool"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an earlier lvd artifact of this stage in --out first (never inputs or other folders)."),
) -> None:
    """Embed images with a ViT backbone into an embeddings artifact (float16, L2-normalised)."""
    from lvdtool.overrides import sugar
    from lvdtool.stages import embed as stage

    overrides = sugar(
        images=str(images), out=str(out), weights=str(weights) if weights else None, arch=arch,
        selection=str(selection) if selection else None, token=token, batch_size=batch_size,
    )
    _finish("embed", out, stage.main(overrides + list(ctx.args), overwrite=overwrite))


@app.command("probe", context_settings=OVERRIDES, epilog=EPILOG.format(stage="probe"))
def probe(
    ctx: typer.Context,
    weights: Path = typer.Option(..., "--weights", help="Backbone to evaluate (frozen)."),
    train: Path = typer.Option(..., "--train", help="Labelled images artifact for training the probes."),
    val: Path = typer.Option(..., "--val", help="Labelled images artifact for evaluation."),
    out: Path = typer.Option(..., "--out", help="Report directory (report.json, report.md)."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Architecture (default: read off the weights)."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="cached (fast, default) | official (augmented, 12,500 iterations)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an earlier probe report in --out (of other weights or config) first."),
) -> None:
    """Evaluate a frozen backbone: weighted k-NN and a grid of linear classifiers."""
    from lvdtool.overrides import sugar
    from lvdtool.stages import probe as stage

    overrides = sugar(weights=str(weights), train=str(train), val=str(val), out=str(out), arch=arch, protocol=protocol)
    _finish("probe", out, stage.main(overrides + list(ctx.args), overwrite=overwrite))


# Options the three training commands (pretrain, hires-adapt, distill) share, and the keys they set.
_SHARED_HELP = {
    "--selection": "Train only on the keys of this selection (e.g. curate's output).",
    "--iterations": "Training length in iterations.",
    "--batch-size": "Images per GPU (per rank).",
    "--workers": "Decode + augment processes per rank.",
    "--device": "auto | cpu | cuda",
    "--overwrite": "Delete an earlier run directory of this stage in --out first (never inputs or other folders).",
}


def _shared_option(flag: str) -> Any:
    return typer.Option(False if flag == "--overwrite" else None, flag, help=_SHARED_HELP[flag])


def _training_keys(images: Optional[Path], selection: Optional[Path], out: Path, iterations: Optional[int],
                   batch_size: Optional[int], workers: Optional[int], device: Optional[str]) -> dict[str, Any]:
    return {"data.images": str(images) if images else None, "data.selection": str(selection) if selection else None,
            "out": str(out), "train.iterations": iterations, "train.batch_size_per_gpu": batch_size,
            "data.workers": workers, "parallel.device": device}


@app.command("pretrain", context_settings=OVERRIDES, epilog=EPILOG.format(stage="pretrain"))
def pretrain(
    ctx: typer.Context,
    arch: Optional[str] = typer.Option(None, "--arch", help="Recipe preset: vit_s14 | vit_b14 | vit_l14 | vit_g14 (+ _reg4) as the paper trains them; small_data (lvd's, for one machine and a small dataset); dinov3_vitl16 (the DINOv3 7B recipe on vit_l16_v3), dinov3_test; vit_tiny, vit_test."),
    images: Optional[Path] = typer.Option(None, "--images", "--data", help="Images artifact to train on."),
    selection: Optional[Path] = _shared_option("--selection"),
    out: Path = typer.Option(..., "--out", help="Run directory; rerunning the same command resumes it."),
    init: Optional[Path] = typer.Option(None, "--init", help="Backbone file to continue pretraining from (heads start fresh)."),
    iterations: Optional[int] = _shared_option("--iterations"),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Training length in passes over the data."),
    batch_size: Optional[int] = _shared_option("--batch-size"),
    workers: Optional[int] = _shared_option("--workers"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    device: Optional[str] = _shared_option("--device"),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto | bf16 | fp32"),
    compile: Optional[bool] = typer.Option(None, "--compile", help="torch.compile each block."),
    activation_checkpointing: Optional[bool] = typer.Option(None, "--activation-checkpointing", help="Recompute blocks in backward."),
    overwrite: bool = _shared_option("--overwrite"),
) -> None:
    """Train a ViT with the DINOv2 recipe (DINO + iBOT + KoLeo, EMA teacher, multi-crop, FSDP2, exact resume)."""
    from lvdtool.overrides import sugar
    from lvdtool.stages import pretrain as stage

    overrides = sugar(**{
        "recipe": arch, **_training_keys(images, selection, out, iterations, batch_size, workers, device),
        "init": str(init) if init else None, "train.epochs": epochs, "train.seed": seed,
        "parallel.precision": precision, "parallel.compile": compile, "parallel.activation_checkpointing": activation_checkpointing,
    })
    _finish("pretrain", out, stage.main(overrides + list(ctx.args), overwrite=overwrite))


@app.command("hires-adapt", context_settings=OVERRIDES, epilog=EPILOG.format(stage="hires-adapt"))
def hires_adapt(
    ctx: typer.Context,
    from_run: Path = typer.Option(..., "--from", help="Run directory to start from (its teacher: backbone and heads), or a backbone file (heads fresh)."),
    images: Path = typer.Option(..., "--images", "--data", help="Images artifact (ingested at least as large as the crop)."),
    selection: Optional[Path] = _shared_option("--selection"),
    out: Path = typer.Option(..., "--out", help="New run directory; rerunning the same command resumes it."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="dinov2 (518 px, lvd's schedule; default) | dinov3 (the official mixed-resolution phase, with Gram anchoring) | dinov3_gram (the official Gram-anchoring stage as a phase; give --size of the source)."),
    size: Optional[int] = typer.Option(None, "--size", help="Global crop size in pixels (default 518)."),
    iterations: Optional[int] = _shared_option("--iterations"),
    batch_size: Optional[int] = _shared_option("--batch-size"),
    workers: Optional[int] = _shared_option("--workers"),
    device: Optional[str] = _shared_option("--device"),
    overwrite: bool = _shared_option("--overwrite"),
) -> None:
    """Continue a run at high resolution (DINOv2's 518 px phase; DINOv3's resolution mixture with --recipe dinov3)."""
    from lvdtool.overrides import sugar
    from lvdtool.stages import hires_adapt as stage

    overrides = sugar(**{
        "from_run": str(from_run), **_training_keys(images, selection, out, iterations, batch_size, workers, device),
        "hires_recipe": recipe, "crops.global_crops_size": size,
    })
    _finish("hires-adapt", out, stage.main(overrides + list(ctx.args), overwrite=overwrite))


@app.command("distill", context_settings=OVERRIDES, epilog=EPILOG.format(stage="distill"))
def distill(
    ctx: typer.Context,
    teacher: Path = typer.Option(..., "--teacher", help="Run directory of the frozen teacher (backbone and heads)."),
    arch: Optional[List[str]] = typer.Option(None, "--arch", help="Student architecture (same patch size as the teacher); repeatable: one teacher forward serves all. Default: the recipe's students."),
    images: Path = typer.Option(..., "--images", "--data", help="Images artifact to distil on."),
    selection: Optional[Path] = _shared_option("--selection"),
    out: Path = typer.Option(..., "--out", help="Run directory: one checkpoint artifact per student under out/<arch>/."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="dinov2 (default) | dinov3 (the official distillation schedule) | small_data."),
    iterations: Optional[int] = _shared_option("--iterations"),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Training length in passes over the data."),
    batch_size: Optional[int] = _shared_option("--batch-size"),
    workers: Optional[int] = _shared_option("--workers"),
    device: Optional[str] = _shared_option("--device"),
    overwrite: bool = _shared_option("--overwrite"),
) -> None:
    """Distil a frozen teacher into one or more students (DINO + iBOT + KoLeo on its targets; EMA students exported)."""
    from lvdtool.overrides import sugar
    from lvdtool.stages import distill as stage

    overrides = sugar(**{
        "distill.teacher": str(teacher), "distill.students": list(arch or []), "distill_recipe": recipe,
        **_training_keys(images, selection, out, iterations, batch_size, workers, device), "train.epochs": epochs,
    })
    _finish("distill", out, stage.main(overrides + list(ctx.args), overwrite=overwrite))


# stage command -> (config name, module path, schema attribute); used by `lvd config`
STAGE_CONFIGS = {
    "crawl-ingest": ("crawl_ingest", "lvdtool.stages.crawl_ingest", "CrawlIngestConfig"),
    "embed": ("embed", "lvdtool.stages.embed", "EmbedConfig"),
    "probe": ("probe", "lvdtool.stages.probe", "ProbeConfig"),
    "dedup": ("dedup", "lvdtool.stages.dedup", "DedupConfig"),
    "curate": ("curate", "lvdtool.stages.curate", "CurateConfig"),
    "pretrain": ("pretrain", "lvdtool.stages.pretrain", "PretrainConfig"),
    "hires-adapt": ("hires_adapt", "lvdtool.stages.hires_adapt", "PretrainConfig"),
    "distill": ("distill", "lvdtool.stages.distill", "PretrainConfig"),
}


@app.command("dedup", context_settings=OVERRIDES, epilog=EPILOG.format(stage="dedup"))
def dedup(
    ctx: typer.Context,
    embeddings: Path = typer.Option(..., "--embeddings", help="Embeddings artifact of the pool (a copy-detection descriptor)."),
    against: Optional[List[str]] = typer.Option(None, "--against", help="Eval-set embeddings artifact, NAME=PATH or PATH; repeatable."),
    out: Path = typer.Option(..., "--out", help="Output selection artifact directory."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Cosine above which images are duplicates (default 0.6)."),
    against_threshold: Optional[float] = typer.Option(None, "--against-threshold", help="Cosine to an eval image that removes a component (default 0.45)."),
    k: Optional[int] = typer.Option(None, "--k", help="Neighbours per image (default 64)."),
    index: Optional[str] = typer.Option(None, "--index", help="Flat (exact) or a faiss index factory string, e.g. IVF65536,PQ64."),
    representative: Optional[str] = typer.Option(None, "--representative", help="highest_resolution | first"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an earlier lvd artifact of this stage in --out first (never inputs or other folders)."),
) -> None:
    """Remove near-duplicates (k-NN graph, components, one image kept each) and eval-set copies."""
    from lvdtool.overrides import sugar
    from lvdtool.stages import dedup as stage

    overrides = sugar(**{"embeddings": str(embeddings), "against": list(against or []), "out": str(out), "threshold": threshold,
                         "against_threshold": against_threshold, "k": k, "search.index": index, "representative": representative})
    _finish("dedup", out, stage.main(overrides + list(ctx.args), overwrite=overwrite))


@app.command("curate", context_settings=OVERRIDES, epilog=EPILOG.format(stage="curate"))
def curate(
    ctx: typer.Context,
    pool: Path = typer.Option(..., "--pool", help="Embeddings artifact of the uncurated pool."),
    seed: Optional[List[str]] = typer.Option(None, "--seed", help="Named seed set (configs/seed/NAME.yaml); repeatable."),
    seed_path: Optional[List[Path]] = typer.Option(None, "--seed-path", help="Embeddings artifact of an unnamed seed set; repeatable."),
    selection: Optional[Path] = typer.Option(None, "--selection", help="Restrict the pool to this selection (e.g. the dedup output)."),
    out: Path = typer.Option(..., "--out", help="Output selection artifact directory."),
    method: Optional[str] = typer.Option(None, "--method", help="retrieval (seed sets) | hkmeans (balanced subset, plus seeds if given)."),
    target: Optional[int] = typer.Option(None, "--target", help="Images in the balanced subset (--method hkmeans)."),
    index: Optional[str] = typer.Option(None, "--index", help="Flat (exact) or a faiss index factory string, e.g. IVF65536,PQ64."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the estimated costs and exit."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an earlier lvd artifact of this stage in --out first (never inputs or other folders)."),
) -> None:
    """Retrieve pool images near seed sets (k-NN or cluster sampling) and/or a balanced hierarchical k-means subset."""
    from lvdtool.overrides import sugar
    from lvdtool.stages import curate as stage

    overrides = sugar(**{"pool": str(pool), "seeds": list(seed or []), "seed_paths": [str(p) for p in seed_path or []],
                         "selection": str(selection) if selection else None, "out": str(out), "method": method,
                         "hkmeans.target": target, "search.index": index, "dry_run": True if dry_run else None})
    _finish("curate", out, stage.main(overrides + list(ctx.args), overwrite=overwrite))


@app.command("config")
def show_config(stage: str = typer.Argument(..., help="A stage command, e.g. crawl-ingest.")) -> None:
    """Print a stage's full default config: every key accepts a key=value override."""
    import importlib

    from lvdtool.config import default_config_yaml
    from lvdtool.errors import ConfigError

    if stage not in STAGE_CONFIGS:
        raise ConfigError(f"no stage {stage!r} (stages with configs: {', '.join(STAGE_CONFIGS)})")
    name, module, schema = STAGE_CONFIGS[stage]
    text = default_config_yaml(name, getattr(importlib.import_module(module), schema))
    typer.echo(text, nl=False)
    import yaml

    _finish("config", None, yaml.safe_load(text))


@app.command("index-offsets")
def index_offsets(images: Path = typer.Option(..., "--images", help="Images artifact ingested before lvd recorded image offsets.")) -> None:
    """Record each image's byte offset for artifacts ingested without them (rank-split under torchrun/srun; restartable)."""
    from lvdtool.stages import index_offsets as stage

    _finish("index-offsets", None, stage.run(images))


@app.command("inspect")
def inspect(
    path: Path = typer.Argument(..., help="An artifact directory."),
    grid: Optional[Path] = typer.Option(None, "--grid", help="Write a contact sheet of sample images to this PNG."),
    n: int = typer.Option(48, "--n", help="Images in the contact sheet."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed for the contact sheet."),
) -> None:
    """Summarise an artifact: manifest, counts per status and reason; optional image grid."""
    from lvdtool.stages import inspect as stage

    _finish("inspect", None, stage.main(path, grid=grid, n=n, seed=seed))


def _take_flag(args: list[str], flag: str) -> tuple[list[str], bool]:
    """`args` without `flag` (anywhere before a `--`), and whether it was there: --debug and --json
    are accepted before the command and after it."""
    end = args.index("--") if "--" in args else len(args)
    kept = [a for a in args[:end] if a != flag] + args[end:]
    return kept, len(kept) != len(args)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _error_line(exc: BaseException) -> tuple[str, int]:
    if isinstance(exc, LvdError):
        return one_line(exc), exc.exit_code
    if isinstance(exc, OSError):  # a path the OS refused (permissions, a full disk, a file where a folder goes)
        where = f"{exc.filename}: " if exc.filename else ""
        # no strerror: e.g. re-raised from a DataLoader worker with the worker's traceback as its text
        text = exc.strerror or ([ln for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__])[-1].strip()
        return f"{where}{text}", 1
    return "interrupted", 130


def main(argv: Optional[List[str]] = None) -> None:
    args, debug = _take_flag(list(sys.argv[1:] if argv is None else argv), "--debug")
    args, as_json = _take_flag(args, "--json")
    if debug:
        _state["debug"] = True
    code: Any = 0
    error: Optional[str] = None
    try:
        # with --json, stdout carries only the JSON object: everything else the run prints goes to stderr
        with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
            app(args=args, prog_name="lvd")
    except SystemExit as exc:
        code = exc.code if exc.code is not None else 0
    except (LvdError, OSError, KeyboardInterrupt) as exc:
        if _state["debug"] and not isinstance(exc, KeyboardInterrupt):
            traceback.print_exc()
        error, code = _error_line(exc)
        print(f"error: {error}", file=sys.stderr)
    if as_json and (code == 0 or error is not None):
        command = next((a for a in args if not a.startswith("-")), None)
        result = _state.get("result") or {"command": command, "out": None, "summary": None}
        if error is not None:
            result = {**result, "error": error, "exit_code": code}
        print(json.dumps(result, sort_keys=True, default=_jsonable))
    sys.exit(code)


if __name__ == "__main__":
    main()
