#!/bin/bash
# DINOv2 pretraining on a SLURM cluster: one srun task per node, torchrun starts one process per GPU.
#
#   IMAGES=/data/lvd142m OUT=/runs/vitl14 ARCH=vit_l14 sbatch stages/slurm_pretrain.sh
#   IMAGES=... OUT=... sbatch stages/slurm_pretrain.sh data.selection=/data/curated train.batch_size_per_gpu=24
#
# Extra arguments are pretrain config overrides (key=value). The job is requeueable: resubmitting
# (or `scontrol requeue`) reruns the same command, which resumes from the newest complete
# checkpoint in $OUT, exactly. Another node count is fine too: the checkpoint reshards and the
# data position carries over (docs/pretrain.md, "Resume").
#SBATCH --job-name=lvd-pretrain
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=96
#SBATCH --time=72:00:00
#SBATCH --requeue
#SBATCH --output=%x-%j.out
set -euo pipefail

: "${IMAGES:?set IMAGES to an images artifact}"
: "${OUT:?set OUT to the run directory}"
ARCH=${ARCH:-vit_l14}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
PORT=${PORT:-29500}
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)

# Decode workers per rank: the node's CPUs shared by its GPUs, one core left for the trainer.
WORKERS=$(( SLURM_CPUS_PER_TASK / GPUS_PER_NODE - 1 ))

srun --kill-on-bad-exit=1 torchrun \
  --nnodes="$SLURM_NNODES" \
  --nproc_per_node="$GPUS_PER_NODE" \
  --rdzv_id="$SLURM_JOB_ID" \
  --rdzv_backend=c10d \
  --rdzv_endpoint="$HEAD_NODE:$PORT" \
  -m lvdtool.stages.pretrain \
  recipe="$ARCH" data.images="$IMAGES" out="$OUT" data.workers="$WORKERS" "$@"
