#!/usr/bin/env bash
# The demo chain on offline data: serve demo images over loopback HTTP, crawl-ingest them, inspect.
# Usage: bash stages/demo.sh [WORKDIR]   (default data/demo). Rerunning resumes; delete WORKDIR to start over.
set -euo pipefail
W=${1:-data/demo}
PY=${PYTHON:-python}
mkdir -p "$W"
[ -f "$W/files.txt" ] || $PY stages/demo_data.py "$W"

# A loopback web server for the crawler (127.0.0.1 only).
PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$PY -m http.server "$PORT" --bind 127.0.0.1 --directory "$W/web" >/dev/null 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 50); do $PY -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/')" 2>/dev/null && break; sleep 0.1; done
sed "s#^#http://127.0.0.1:$PORT/#" "$W/files.txt" > "$W/urls.txt"

# 1. crawl-ingest: the URL list -> images artifact (loopback needs --allow-private-network).
#    The URLs embed a random port, so a rerun writes to a fresh output (the input list changed).
rm -rf "$W/raw"
lvd crawl-ingest --urls "$W/urls.txt" --out "$W/raw" --allow-private-network --shard-size 32 fetch.retries=1
lvd inspect "$W/raw" --grid "$W/raw_grid.png"

# 2. a labelled folder (ImageFolder layout) -> images artifact with labels
lvd crawl-ingest --dir "$W/labeled/train" --label-from-dir --out "$W/digits_train" --shard-size 500 process.min_side=32
lvd crawl-ingest --dir "$W/labeled/val" --label-from-dir --out "$W/digits_val" --shard-size 500 process.min_side=32
lvd inspect "$W/digits_train"

# 3. embed. The demo has no pretrained weights (no network): it embeds with a randomly initialised
#    small ViT saved to a file; real runs pass --weights dinov2_vitl14_pretrain.pth (or a backbone lvd trained).
[ -f "$W/random_s14.pth" ] || $PY - "$W/random_s14.pth" <<'PY'
import sys, torch
from lvdtool.models import build_backbone, save_backbone
torch.manual_seed(0)
save_backbone(build_backbone("vit_s14", depth=4, layerscale_init=1.0), sys.argv[1])
PY
lvd crawl-ingest --dir "$W/seed" --out "$W/seed_images"
lvd embed --images "$W/raw" --weights "$W/random_s14.pth" --out "$W/emb" resolution=112 batch_size=16
lvd embed --images "$W/seed_images" --weights "$W/random_s14.pth" --out "$W/seed_emb" resolution=112 batch_size=16

# 4. dedup: k-NN graph, components, one image kept per component. It needs a copy-detection descriptor:
#    the paper's cosine 0.6 is for SSCD, a trained one. A randomly initialised ViT is not one: its features
#    put distinct synthetic scenes as close as copies, so at any threshold that removes most of the planted
#    copies it also removes distinct images (shown below, into dedup_random_vit). The demo's stand-in
#    descriptor is an 8x8 thumbnail (stages/demo_descriptor.py, a TorchScript file as SSCD is shipped):
#    the copies crawl-ingest's hashes left sit above cosine 0.97, distinct images below 0.89, so 0.93
#    removes the copies and nothing else. stages/demo_summary.py counts both against the planted copies.
[ -f "$W/thumb8.torchscript.pt" ] || $PY stages/demo_descriptor.py "$W/thumb8.torchscript.pt"
lvd embed --images "$W/raw" --out "$W/copy_emb" model.kind=torchscript model.path="$W/thumb8.torchscript.pt" \
  preprocess=sscd batch_size=16
lvd dedup --embeddings "$W/copy_emb" --out "$W/dedup" --threshold 0.93 --k 16
lvd dedup --embeddings "$W/emb" --out "$W/dedup_random_vit" --threshold 0.945 --k 16 calibration.pairs=0

# 5. curate: retrieve pool images close to the named demo seed set (configs/seed/demo.yaml).
lvd curate --seed demo --pool "$W/emb" --selection "$W/dedup" --out "$W/curated" \
  seed_sets.demo.path="$W/seed_emb" retrieval.pool_clusters=8 seed_sets.demo.per_cluster=10 seed_sets.demo.min_seed_images=1

# 6. pretrain: the small-data recipe (configs/recipe/small_data.yaml: a 0.2M-parameter ViT, patch 8 at
#    32 px, short-run schedules) on the 1000 training digits, about 2.5 minutes on 2 CPU cores. Digits
#    are not mirror-symmetric, so no flips. Rerunning resumes from the newest checkpoint.
lvd pretrain --arch small_data --images "$W/digits_train" --out "$W/run" --iterations 800 crops.flip_prob=0 \
  train.log_every=50 checkpoint.every=200

# 7. probe: k-NN and linear probes of the frozen backbone, trained vs the same network at random init,
#    and raw pixels for scale
[ -f "$W/random_mini8.pth" ] || $PY - "$W/random_mini8.pth" <<'PY'
import sys, torch
from lvdtool.models import build_backbone, save_backbone
torch.manual_seed(0)
save_backbone(build_backbone("vit_mini8"), sys.argv[1])
PY
for name in run/backbone random_mini8; do
  lvd probe --weights "$W/$name.pth" --train "$W/digits_train" --val "$W/digits_val" --out "$W/probe_$(basename $name)" \
    resolution=32 resize=32 linear.epochs=20
done
# 8. hires-adapt: the trained run continued at 64 px global crops (the demo digits are stored at 64 px), from
#    its teacher (backbone and heads); its 4x4 position grid is resized once to 8x8. A 200-iteration phase needs
#    a faster teacher EMA than the preset's 0.999 (made for 10,000 iterations), else the exported teacher
#    barely moves.
lvd hires-adapt --from "$W/run" --images "$W/digits_train" --out "$W/run_hr" --size 64 --iterations 200 \
  crops.flip_prob=0 data.workers=2 train.batch_size_per_gpu=64 optim.base_lr=0.002 teacher.momentum=0.99 \
  train.log_every=50 checkpoint.every=100

# 9. distill: the adapted run as a frozen teacher and two students trained at once on its targets (one teacher
#    forward per batch): vit_mini8 (the teacher's size) and vit_micro8 (4x narrower, 55k parameters). Each
#    student's exported backbone.pth is its EMA. Then probe the teacher, the students and the students at random init.
lvd distill --teacher "$W/run_hr" --arch vit_mini8 --arch vit_micro8 --images "$W/digits_train" --out "$W/distill" \
  --recipe small_data --iterations 400 crops.flip_prob=0 train.log_every=50 checkpoint.every=200
[ -f "$W/random_micro8.pth" ] || $PY - "$W/random_micro8.pth" <<'PY'
import sys, torch
from lvdtool.models import build_backbone, save_backbone
torch.manual_seed(0)
save_backbone(build_backbone("vit_micro8"), sys.argv[1])
PY
for name in run_hr/backbone distill/vit_mini8/backbone distill/vit_micro8/backbone random_micro8; do
  lvd probe --weights "$W/$name.pth" --train "$W/digits_train" --val "$W/digits_val" --out "$W/probe_${name//\//_}" \
    resolution=32 resize=32 linear.epochs=20
done
for name in run run_hr; do  # the resolution the phase adapted to
  lvd probe --weights "$W/$name/backbone.pth" --train "$W/digits_train" --val "$W/digits_val" --out "$W/probe64_$name" \
    resolution=64 resize=64 linear.epochs=20
done
# The closing numbers, also written to $W/numbers.json (`make demo` compares them with README's block).
$PY stages/demo_summary.py "$W"
echo "demo done: see $W/raw_grid.png, $W/dedup/report (and $W/dedup_random_vit/report), $W/curated/report/, $W/probe_backbone/report.md (trained) and $W/probe_random_mini8/report.md, $W/probe_backbone/patch_pca.png, $W/probe_distill_vit_micro8_backbone/report.md (distilled)"
