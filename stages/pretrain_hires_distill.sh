#!/usr/bin/env bash
# The DINOv2 model chain: pretrain a big model, adapt it to high resolution, distil it into small students,
# probe every result (docs/hires_distill.md). Every step is restartable: rerun the same command after a failure
# or a requeue and each run resumes from its newest checkpoint.
#
#   bash stages/pretrain_hires_distill.sh WORKDIR
#   DRY_RUN=1 bash stages/pretrain_hires_distill.sh WORKDIR    prints the commands instead of running them
#
# Environment (defaults: the paper's models):
#   IMAGES        images artifact to train on (required unless DRY_RUN)
#   IMAGES_HR     images artifact ingested at >= HIRES_SIZE px for the high-resolution phase (default: IMAGES)
#   SELECTION     optional selection artifact (e.g. the curate output)
#   PROBE_TRAIN, PROBE_VAL   labelled images artifacts for the probes (probes skipped when unset)
#   ARCH (vit_g14)            pretraining recipe preset; PRETRAIN_ARGS: more pretrain options / key=value
#   HIRES_RECIPE (dinov2)     dinov2 | dinov3; HIRES_SIZE (518); HIRES_ARGS
#   STUDENTS ("vit_s14 vit_b14 vit_l14"); DISTILL_RECIPE (dinov2); DISTILL_ARGS; PROBE_ARGS
#   NPROC (1)                 processes per run: > 1 launches torchrun --standalone --nproc_per_node=NPROC
set -euo pipefail

DRY_RUN=${DRY_RUN:-0}
W=${1:-${WORKDIR:-runs/chain}}
IMAGES=${IMAGES:-}
if [ -z "$IMAGES" ]; then
  if [ "$DRY_RUN" = 1 ]; then IMAGES=/data/raw; else echo "error: set IMAGES to an images artifact" >&2; exit 2; fi
fi
IMAGES_HR=${IMAGES_HR:-$IMAGES}
ARCH=${ARCH:-vit_g14}
HIRES_RECIPE=${HIRES_RECIPE:-dinov2}
HIRES_SIZE=${HIRES_SIZE:-518}
STUDENTS=${STUDENTS:-vit_s14 vit_b14 vit_l14}
DISTILL_RECIPE=${DISTILL_RECIPE:-dinov2}
NPROC=${NPROC:-1}
SEL=()
[ -n "${SELECTION:-}" ] && SEL=(--selection "$SELECTION")

run() {  # run (or print) one command, shell-quoted
  if [ "$DRY_RUN" = 1 ]; then printf '%q ' "$@" | sed 's/ $//'; echo; else "$@"; fi
}
stage() {  # lvd STAGE ... under one process or torchrun
  local name=$1; shift
  if [ "$NPROC" -gt 1 ]; then
    run torchrun --standalone --nproc_per_node="$NPROC" -m lvdtool.cli "$name" "$@"
  else
    run lvd "$name" "$@"
  fi
}

# shellcheck disable=SC2086  # *_ARGS are word lists on purpose
stage pretrain --arch "$ARCH" --images "$IMAGES" "${SEL[@]}" --out "$W/pretrain" ${PRETRAIN_ARGS:-}
# shellcheck disable=SC2086
stage hires-adapt --from "$W/pretrain" --images "$IMAGES_HR" "${SEL[@]}" --out "$W/hires" --recipe "$HIRES_RECIPE" \
  --size "$HIRES_SIZE" ${HIRES_ARGS:-}
ARCHS=()
for a in $STUDENTS; do ARCHS+=(--arch "$a"); done
# shellcheck disable=SC2086
stage distill --teacher "$W/hires" "${ARCHS[@]}" --images "$IMAGES" "${SEL[@]}" --out "$W/distill" \
  --recipe "$DISTILL_RECIPE" ${DISTILL_ARGS:-}

if [ -n "${PROBE_TRAIN:-}" ] && [ -n "${PROBE_VAL:-}" ]; then
  for weights in "$W/pretrain/backbone.pth" "$W/hires/backbone.pth" $(for a in $STUDENTS; do echo "$W/distill/$a/backbone.pth"; done); do
    name=$(basename "$(dirname "$weights")")
    # shellcheck disable=SC2086
    run lvd probe --weights "$weights" --train "$PROBE_TRAIN" --val "$PROBE_VAL" --out "$W/probe_$name" ${PROBE_ARGS:-}
  done
fi
