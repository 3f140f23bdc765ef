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

# 4. dedup: k-NN graph, components, one image kept per component. Random features need a much higher
#    threshold than the paper's 0.6 (which assumes a trained copy-detection descriptor).
lvd dedup --embeddings "$W/emb" --out "$W/dedup" --threshold 0.945 --k 16

# 5. curate: retrieve pool images close to the named demo seed set (configs/seed/demo.yaml).
lvd curate --seed demo --pool "$W/emb" --selection "$W/dedup" --out "$W/curated" \
  seed_sets.demo.path="$W/seed_emb" retrieval.pool_clusters=8 seed_sets.demo.per_cluster=10 seed_sets.demo.min_seed_images=1

# 6. pretrain: a tiny ViT (patch 8, 32 px crops) with the DINOv2 recipe on the digits, about a minute on a CPU.
#    Rerunning resumes from the newest checkpoint in the run directory.
TINY="model.patch_size=8 model.img_size=32 crops.global_crops_size=32 crops.local_crops_size=16"
lvd pretrain --arch vit_test --images "$W/digits_train" --out "$W/run" --iterations 300 --batch-size 32 --workers 2 \
  $TINY optim.base_lr=0.03 optim.warmup_epochs=0.5 teacher.warmup_temp_epochs=1 train.log_every=25 checkpoint.every=100

# 7. probe: k-NN and linear probes of the frozen backbone, trained vs the same network at random init
$PY - "$W/random_test.pth" <<'PY'
import sys, torch
from lvdtool.models import build_backbone, save_backbone
torch.manual_seed(0)
save_backbone(build_backbone("vit_test", patch_size=8, img_size=32), sys.argv[1])
PY
for name in run/backbone random_test; do
  lvd probe --weights "$W/$name.pth" --train "$W/digits_train" --val "$W/digits_val" --out "$W/probe_$(basename $name)" \
    resolution=32 resize=32 linear.epochs=20
done
echo "demo done: see $W/raw_grid.png, $W/dedup/report, $W/curated/report/, $W/probe_backbone/report.md (trained) and $W/probe_random_test/report.md"
