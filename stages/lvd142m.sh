#!/usr/bin/env bash
# LVD-142M at its real size: the DINOv2 data pipeline and ViT-g/14 pretraining on a SLURM cluster, every stage
# under srun (CPU stages) or srun + torchrun (GPU stages, one process per GPU), with the paper's parameters
# (arXiv 2304.07193, section 3 and appendix A; docs/curation.md, "Running the chain at LVD-142M size").
#
#   step      what                                                   nodes x GPUs (default)   launcher
#   ingest    crawl 1.2B URLs -> images artifact (+ seed, eval sets)  INGEST_NODES=32 x CPU     srun, --processes per node
#   sscd      SSCD copy-detection descriptors of pool and eval sets   SSCD_NODES=16 x 8         srun + torchrun
#   dedup     k = 64, self 0.6, against eval sets 0.45                DEDUP_NODES=16 x 8        srun + torchrun
#   embed     ViT-L/14 (or H/16) features of the kept pool and seeds  EMBED_NODES=16 x 8        srun + torchrun
#   curate    retrieval: IN-22k k=4, IN-1k k=32, GLDv2 k=4, clusters  CURATE_NODES=16 x 8       srun + torchrun
#   pretrain  ViT-g/14, 12 images per GPU (256 GPUs in the paper)     PRETRAIN_NODES=32 x 8     srun + torchrun
#   probe     k-NN + linear on ImageNet-1k                            1 x 1                     srun
#
# Run it inside an allocation as large as the largest step (steps start at its first node, --relative=0):
#   salloc --nodes=32 --gpus-per-node=8 --cpus-per-task=96 --time=7-00:00:00 bash stages/lvd142m.sh /data/lvd142m
# or one step at a time (STEPS="dedup embed"), each in an allocation of its own size. Every step is
# restartable: rerun the same command after a failure or a requeue and finished shards / saved units are skipped.
#
#   DRY_RUN=1 bash stages/lvd142m.sh      prints every command (shell-quoted, one a line) instead of running it;
#                                         inputs not given get placeholder paths. tests/stages/test_lvd142m_script.py
#                                         parses each printed `lvd` command with the real CLI and stage configs.
# Inputs (environment):
#   URLS               crawl URL lists (space separated .parquet/.txt/.jsonl files with a `url` column)
#   SEED_DIRS          folder holding imagenet22k/ imagenet1k/ gldv2/ (ImageFolder layout)
#   EVAL_DIRS          folder holding one ImageFolder per evaluation split (train and test splits of every benchmark);
#                      BENCHMARKS names them (default: its subfolders)
#   SSCD_MODEL         sscd_disc_mixup.torchscript.pt (512-d; the thresholds below are the paper's for SSCD)
#   SSCD_PREPROCESS    sscd_skew320 (default: one 320 x 320 shape, whole batches on the GPU) | sscd (shorter side 288)
#   RETRIEVAL_WEIGHTS  ViT-H/16 (paper) or ViT-L/14 (public, e.g. dinov2_vitl14_pretrain.pth) backbone
#   SMALL_SEED_EMB     optional: embeddings artifacts of small seed sets (cluster-based retrieval), space separated
#   STEPS              steps to run, in order (default: all of ingest sscd dedup embed curate pretrain probe)
#   GPUS_PER_NODE (8), CPUS_PER_NODE (96), PORT (29500), ARCH (vit_g14)
set -euo pipefail

DRY_RUN=${DRY_RUN:-0}
W=${1:-${WORKDIR:-data/lvd142m}}
if [ "$DRY_RUN" = 1 ]; then  # placeholders, so the printed commands are complete
  URLS=${URLS:-/data/crawl/urls-00000.parquet /data/crawl/urls-00001.parquet}
  SEED_DIRS=${SEED_DIRS:-/data/seeds}
  EVAL_DIRS=${EVAL_DIRS:-/data/eval}
  BENCHMARKS=${BENCHMARKS:-imagenet1k_val imagenet1k_v2 inat2018_train inat2018_val places205_val}
  SSCD_MODEL=${SSCD_MODEL:-/models/sscd_disc_mixup.torchscript.pt}
  RETRIEVAL_WEIGHTS=${RETRIEVAL_WEIGHTS:-/models/dinov2_vitl14_pretrain.pth}
  SMALL_SEED_EMB=${SMALL_SEED_EMB:-}
fi
URLS=${URLS:?set URLS to the crawl URL lists}
SEED_DIRS=${SEED_DIRS:?set SEED_DIRS}
EVAL_DIRS=${EVAL_DIRS:?set EVAL_DIRS}
SSCD_MODEL=${SSCD_MODEL:?set SSCD_MODEL to sscd_disc_mixup.torchscript.pt}
RETRIEVAL_WEIGHTS=${RETRIEVAL_WEIGHTS:?set RETRIEVAL_WEIGHTS}
if [ -z "${BENCHMARKS:-}" ]; then
  BENCHMARKS=$(for d in "$EVAL_DIRS"/*/; do basename "$d"; done | tr '\n' ' ')
fi
SSCD_PREPROCESS=${SSCD_PREPROCESS:-sscd_skew320}
STEPS=${STEPS:-ingest sscd dedup embed curate pretrain probe}
ARCH=${ARCH:-vit_g14}
GPUS=${GPUS_PER_NODE:-8}
CPUS=${CPUS_PER_NODE:-96}
PORT=${PORT:-29500}
INGEST_NODES=${INGEST_NODES:-32}
SSCD_NODES=${SSCD_NODES:-16}
DEDUP_NODES=${DEDUP_NODES:-16}
EMBED_NODES=${EMBED_NODES:-16}
CURATE_NODES=${CURATE_NODES:-16}
PRETRAIN_NODES=${PRETRAIN_NODES:-32}
WORKERS=$(( CPUS / GPUS - 2 ))   # decode workers per GPU rank: the node's cores shared, two left per rank
if [ -n "${SLURM_JOB_NODELIST:-}" ]; then
  HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
else
  HEAD=${HEAD_NODE:-localhost}
fi
JOB=${SLURM_JOB_ID:-lvd142m}

run() {  # run a command, or print it shell-quoted on one line (DRY_RUN=1)
  if [ "$DRY_RUN" = 1 ]; then
    local line
    printf -v line '%q ' "$@"
    echo "${line% }"
  else
    "$@"
  fi
}
want() { [[ " $STEPS " == *" $1 "* ]]; }
cpu_job() {  # cpu_job NODES lvd STAGE ...: one task per node (the stage fans out local processes itself)
  local nodes=$1; shift
  run srun --nodes="$nodes" --ntasks-per-node=1 --cpus-per-task="$CPUS" --relative=0 --kill-on-bad-exit=1 "$@"
}
gpu_job() {  # gpu_job NODES STEP STAGE ...: one torchrun per node, one rank per GPU (embed puts rank r on cuda:r)
  local nodes=$1 step=$2; shift 2
  run srun --nodes="$nodes" --ntasks-per-node=1 --gpus-per-node="$GPUS" --cpus-per-task="$CPUS" --relative=0 \
    --kill-on-bad-exit=1 torchrun --nnodes="$nodes" --nproc_per_node="$GPUS" --rdzv_id="$JOB-$step" \
    --rdzv_backend=c10d --rdzv_endpoint="$HEAD:$PORT" -m lvdtool.cli "$@"
}
[ "$DRY_RUN" = 1 ] || mkdir -p "$W"

# -----------------------------------------------------------------------------------------------------------
# 1. Ingest: the crawl (decode, validate, resize to 512 max side, exact-hash dedup, opt-out honoured), 10,000
#    images a shard (120k shards at 1.2B); the seed sets and every evaluation split (labels from folders).
if want ingest; then
  url_args=()
  for u in $URLS; do url_args+=(--urls "$u"); done
  cpu_job "$INGEST_NODES" lvd crawl-ingest "${url_args[@]}" --out "$W/raw" --shard-size 10000 --processes 16 --threads 64
  for s in imagenet22k imagenet1k gldv2; do
    cpu_job 4 lvd crawl-ingest --dir "$SEED_DIRS/$s" --label-from-dir --out "$W/seeds/$s" --shard-size 10000 --processes 16
  done
  for b in $BENCHMARKS; do  # every eval image is kept (no perceptual dedup): they are what copies are matched to
    cpu_job 1 lvd crawl-ingest --dir "$EVAL_DIRS/$b" --label-from-dir --out "$W/eval/$b" --shard-size 10000 \
      --processes 16 dedup.perceptual=false
  done
fi

# -----------------------------------------------------------------------------------------------------------
# 2. SSCD descriptors (512-d, L2-normalised) of the pool and of every evaluation split: the same file and the
#    same preprocessing for all, so their cosines compare. fp32 (the precision the thresholds hold at).
sscd_args=(model.kind=torchscript "model.path=$SSCD_MODEL" model.dim=512 "preprocess=$SSCD_PREPROCESS"
           "workers=$WORKERS")
if want sscd; then
  gpu_job "$SSCD_NODES" sscd-pool embed --images "$W/raw" --out "$W/sscd/pool" --batch-size 512 "${sscd_args[@]}"
  for b in $BENCHMARKS; do
    gpu_job 1 "sscd-$b" embed --images "$W/eval/$b" --out "$W/sscd/$b" --batch-size 512 "${sscd_args[@]}"
  done
fi

# -----------------------------------------------------------------------------------------------------------
# 3. Dedup on SSCD: 64 neighbours per image, cosine > 0.6 links copies, one image kept per component (highest
#    resolution); components with an image > 0.45 of any evaluation image are removed, counted per benchmark.
#    1.2B x 512-d: IVF-PQ (32 bytes a vector, about 40 GB), k-NN graph in blocks of 10M queries saved under _work/.
if want dedup; then
  against_args=()
  for b in $BENCHMARKS; do against_args+=(--against "$b=$W/sscd/$b"); done
  gpu_job "$DEDUP_NODES" dedup dedup --embeddings "$W/sscd/pool" "${against_args[@]}" --out "$W/dedup" \
    --k 64 --threshold 0.6 --against-threshold 0.45 --representative highest_resolution \
    --index IVF262144,PQ32 search.nprobe=64 search.train_sample=16000000 block_rows=10000000
  # Look at $W/dedup/report/calibration*.png before going on: pairs just above 0.6 should be copies.
fi

# -----------------------------------------------------------------------------------------------------------
# 4. Retrieval features (ViT-H/16 in the paper; the public ViT-L/14 works the same) of the kept pool images
#    (the dedup selection, read shard by shard) and of the seed sets.
if want embed; then
  gpu_job "$EMBED_NODES" embed-pool embed --images "$W/raw" --selection "$W/dedup" --weights "$RETRIEVAL_WEIGHTS" \
    --out "$W/emb/pool" --batch-size 256 "workers=$WORKERS"
  for s in imagenet22k imagenet1k gldv2; do
    gpu_job 2 "embed-$s" embed --images "$W/seeds/$s" --weights "$RETRIEVAL_WEIGHTS" --out "$W/emb/$s" \
      --batch-size 256 "workers=$WORKERS"
  done
fi

# -----------------------------------------------------------------------------------------------------------
# 5. Curate: sample-based retrieval for the three large seed sets (k = 4, 32, 4); small seed sets go through
#    cluster-based sampling (100k pool clusters, 10k images from each cluster linked to > 3 seed images, 1M cap).
#    The cost estimate first (one process, nothing written), then the run.
curate_args=(--pool "$W/emb/pool" --selection "$W/dedup" --seed imagenet22k --seed imagenet1k --seed gldv2
             seed_sets.imagenet22k.path="$W/emb/imagenet22k" seed_sets.imagenet1k.path="$W/emb/imagenet1k"
             seed_sets.gldv2.path="$W/emb/gldv2"
             --index IVF65536,PQ64 search.nprobe=64 search.train_sample=8000000
             retrieval.pool_clusters=100000 retrieval.per_cluster=10000 retrieval.cap=1000000
             kmeans.fit_sample=20000000 kmeans.init=random kmeans.n_iter=20)
for d in ${SMALL_SEED_EMB:-}; do curate_args+=(--seed-path "$d"); done
if want curate; then
  run lvd curate "${curate_args[@]}" --out "$W/lvd142m" --dry-run
  gpu_job "$CURATE_NODES" curate curate "${curate_args[@]}" --out "$W/lvd142m"
fi

# -----------------------------------------------------------------------------------------------------------
# 6. Pretrain ViT-g/14 with the paper's recipe on the curated selection (12 images per GPU x 256 GPUs = 3,072).
if want pretrain; then
  gpu_job "$PRETRAIN_NODES" pretrain pretrain --arch "$ARCH" --images "$W/raw" --selection "$W/lvd142m" \
    --out "$W/runs/$ARCH" --workers "$WORKERS"
fi

# -----------------------------------------------------------------------------------------------------------
# 7. Probe the teacher backbone: weighted k-NN and linear probes, ImageNet-1k train -> val.
if want probe; then
  run srun --nodes=1 --ntasks=1 --gpus-per-node=1 --relative=0 lvd probe --weights "$W/runs/$ARCH/backbone.pth" \
    --train "$W/seeds/imagenet1k" --val "$W/eval/imagenet1k_val" --out "$W/probe/$ARCH"
fi

[ "$DRY_RUN" = 1 ] || echo "LVD-142M selection: $W/lvd142m (report: $W/lvd142m/report/report.md); run: $W/runs/$ARCH"
