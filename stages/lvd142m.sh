#!/usr/bin/env bash
# LVD-142M: the DINOv2 data pipeline at full scale, with the paper's parameters (arXiv 2304.07193, §3, app. A).
#
#   crawl-ingest (1.2B web images) -> copy-detection embeddings -> dedup (self 0.6, against eval sets 0.45)
#   -> ViT-H/16 (or ViT-L/14) embeddings of the kept pool and of the seed sets
#   -> curate (ImageNet-22k k=4, ImageNet-1k k=32, Google Landmarks v2 k=4; small sets: 100k pool clusters,
#      10k images per cluster linked to > 3 seed images, 1M per set; IVF-PQ indices) -> the LVD-142M selection.
#
# This script is documentation you can run: it is not run by the tests (it needs the crawl, GPUs and days;
# `bash -n stages/lvd142m.sh` checks it). Every step is restartable: rerun the script after a failure and
# finished shards and saved global steps (_work/) are skipped. See docs/curation.md for the scale notes.
#
# Usage: bash stages/lvd142m.sh [WORKDIR]
# Inputs (environment):
#   URLS          URL lists of the crawl (space separated .parquet/.txt files, `url` column)
#   SEED_DIRS     folder holding imagenet22k/ imagenet1k/ gldv2/ (ImageFolder layout) and small seed sets
#   EVAL_DIRS     folder holding one ImageFolder per evaluation set (train and test splits)
#   COPY_WEIGHTS  a ViT backbone used as the copy-detection descriptor; or set COPY_EMB_DIR to a folder of
#                 embeddings artifacts (pool/ and one per eval set) made by an SSCD exporter: dedup reads
#                 any embeddings artifact (docs/artifacts.md) and its thresholds assume SSCD-like scores
#   RETRIEVAL_WEIGHTS  ViT-H/16 or ViT-L/14 backbone for retrieval (e.g. dinov2_vitl14_pretrain.pth)
#   SMALL_SEED_EMB     optional: space-separated embeddings artifacts of small seed sets (cluster mode)
#   LAUNCH        how embed runs on many GPUs (default: torchrun on 8 local GPUs; shards split by rank)
set -euo pipefail

W=${1:-data/lvd142m}
URLS=${URLS:?set URLS to the crawl URL lists}
SEED_DIRS=${SEED_DIRS:?set SEED_DIRS}
EVAL_DIRS=${EVAL_DIRS:?set EVAL_DIRS}
RETRIEVAL_WEIGHTS=${RETRIEVAL_WEIGHTS:?set RETRIEVAL_WEIGHTS}
LAUNCH=${LAUNCH:-torchrun --nproc_per_node=8 -m lvdtool.cli}
mkdir -p "$W"

# ---------------------------------------------------------------------------------------------------------
# 1. Crawl: URL lists -> images artifact (resize to 512 max side, exact + perceptual-hash dedup, opt-out).
url_args=()
for u in $URLS; do url_args+=(--urls "$u"); done
lvd crawl-ingest "${url_args[@]}" --out "$W/raw" --shard-size 10000 --threads 64

# Seed sets and evaluation sets become images artifacts too (labels from folder names).
for s in imagenet22k imagenet1k gldv2; do
  lvd crawl-ingest --dir "$SEED_DIRS/$s" --label-from-dir --out "$W/seeds/$s" --shard-size 10000 --threads 64
done
benchmarks=()
for d in "$EVAL_DIRS"/*/; do
  b=$(basename "$d")
  benchmarks+=("$b")
  lvd crawl-ingest --dir "$d" --label-from-dir --out "$W/eval/$b" --shard-size 10000 dedup.perceptual=false
done

# ---------------------------------------------------------------------------------------------------------
# 2. Copy-detection descriptors of the pool and of every evaluation set (the same descriptor for all).
if [ -n "${COPY_EMB_DIR:-}" ]; then
  COPY="$COPY_EMB_DIR"                      # pool/ and <benchmark>/ made by an SSCD exporter
else
  COPY="$W/copy_emb"
  COPY_WEIGHTS=${COPY_WEIGHTS:?set COPY_WEIGHTS or COPY_EMB_DIR}
  $LAUNCH embed --images "$W/raw" --weights "$COPY_WEIGHTS" --out "$COPY/pool" --batch-size 256 resolution=224
  for b in "${benchmarks[@]}"; do
    $LAUNCH embed --images "$W/eval/$b" --weights "$COPY_WEIGHTS" --out "$COPY/$b" --batch-size 256 resolution=224
  done
fi

# ---------------------------------------------------------------------------------------------------------
# 3. Dedup: 64 neighbours per image, cosine > 0.6 links copies, one image kept per component (highest
#    resolution); components with an image > 0.45 of any evaluation image are removed, counted per benchmark.
#    1.2B x 512-d: an IVF-PQ index (one byte per sub-vector, ~40 GB for PQ32) instead of exact search; the
#    k-NN graph is computed in blocks of 10M queries, each saved under _work/ (restart unit).
against_args=()
for b in "${benchmarks[@]}"; do against_args+=(--against "$b=$COPY/$b"); done
lvd dedup --embeddings "$COPY/pool" "${against_args[@]}" --out "$W/dedup" \
  --k 64 --threshold 0.6 --against-threshold 0.45 --representative highest_resolution \
  --index "IVF262144,PQ32" search.nprobe=64 search.train_sample=16000000 block_rows=10000000
# Look at $W/dedup/report/calibration*.png before going on: pairs just above the threshold should be copies.

# ---------------------------------------------------------------------------------------------------------
# 4. Retrieval embeddings (ViT-H/16 in the paper; the public ViT-L/14 works the same) of the kept pool
#    images and of the seed sets.
$LAUNCH embed --images "$W/raw" --selection "$W/dedup" --weights "$RETRIEVAL_WEIGHTS" --out "$W/emb" --batch-size 256
for s in imagenet22k imagenet1k gldv2; do
  $LAUNCH embed --images "$W/seeds/$s" --weights "$RETRIEVAL_WEIGHTS" --out "$W/seed_emb/$s" --batch-size 256
done

# ---------------------------------------------------------------------------------------------------------
# 5. Curate. First the cost estimate of this configuration (nothing is written) ...
seed_paths=(seed_sets.imagenet22k.path="$W/seed_emb/imagenet22k" seed_sets.imagenet1k.path="$W/seed_emb/imagenet1k"
            seed_sets.gldv2.path="$W/seed_emb/gldv2")
curate_args=(--pool "$W/emb" --selection "$W/dedup" --seed imagenet22k --seed imagenet1k --seed gldv2
             --index "IVF65536,PQ64" search.nprobe=64 search.train_sample=8000000
             retrieval.pool_clusters=100000 retrieval.per_cluster=10000 retrieval.cap=1000000
             kmeans.fit_sample=20000000 kmeans.init=random kmeans.n_iter=20 "${seed_paths[@]}")
lvd curate "${curate_args[@]}" --out "$W/lvd142m" --dry-run
# ... then the run: sample-based retrieval for the three large sets (k = 4, 32, 4); small seed sets
# (fine-grained, segmentation, depth, retrieval benchmarks' train splits) go through cluster-based sampling:
# add them with --seed-path DIR (mode auto: <= 1M images -> cluster mode).
small_args=()
for d in ${SMALL_SEED_EMB:-}; do small_args+=(--seed-path "$d"); done   # space-separated embeddings artifacts
lvd curate "${curate_args[@]}" "${small_args[@]}" --out "$W/lvd142m"

echo "LVD-142M selection: $W/lvd142m (report: $W/lvd142m/report/report.md)"
echo "Train on it: lvd pretrain data.images=$W/raw data.selection=$W/lvd142m (plus the seed images artifacts)"
