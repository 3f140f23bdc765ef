#!/usr/bin/env bash
# Issue 13's GPU suite: one command of at most 9 minutes on the lent GPU machine (one H200, 16
# cores, no network), every table written under $OUT as it is measured.
#
#   bash benchmarks/gpu_suite.sh                 # on the GPU machine (docs/benchmarks.md: "GPU suite: how to run it")
#   bash benchmarks/gpu_suite.sh --cpu-smoke     # here: the same parts at tiny sizes on the CPU, under ~60 s
#   bash benchmarks/gpu_suite.sh --only b,d      # a rerun of some parts (0 always runs)
#
# Budget (seconds, full mode; each part runs under `timeout`, so one that hangs or fails costs
# only its own budget; the sum leaves ~30 s of the 540 for the machine's own start and the transfer):
#
# | part | what                                                                  | budget |
# |------|-----------------------------------------------------------------------|-------:|
# | 0    | carried wheels + `pip install -e .`, env (nvidia-smi, torch, commit)  |     40 |
# | a    | refbench: the official DINOv2 step, S/128, L/64, g/32 (.refbench/)     |    220 |
# | b    | lvd's step, same configs and recipe (bf16, drop path 0.4, SwiGLU)     |    110 |
# | c    | data path with the augmentation on the GPU: CPU ms/image, images/s    |     40 |
# | d    | `lvd embed` ViT-L/14 at 224 from JPEG shards vs a bare forward        |     60 |
# | e    | k-means, k-NN, dedup graph: torch on CUDA vs faiss-cpu, 1M x 384      |     50 |
# |      | summary.md after each part                                            |     ~5 |
# |      | total                                                                 |    525 |
#
# Files under $OUT (the device returns at most 8): env.txt (machine, versions, each part's exit
# status and seconds), log.txt (every part's output), summary.md (the targets with the measured
# ratios, then every table), refbench.jsonl, step.json, data_path.json, embed.json, index.json
# (benchmarks/report.py's tables). Scratch (generated images, refbench's other files) goes to $WORK.
set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
SMOKE=0
ONLY="a,b,c,d,e"
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-smoke) SMOKE=1 ;;
    --only) ONLY="$2"; shift ;;
    --only=*) ONLY="${1#--only=}" ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "gpu_suite.sh: unknown argument $1 (expected --cpu-smoke, --only a,b,c,d,e)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$SMOKE" = 0 ] && ! command -v "${NVIDIA_SMI:-nvidia-smi}" >/dev/null; then
  # the full run installs wheels into $PY's environment: not on a development machine
  echo "gpu_suite.sh: no GPU here (${NVIDIA_SMI:-nvidia-smi} not found): run it on the GPU machine, or use --cpu-smoke" >&2
  exit 2
fi
OUT=${OUT:-$REPO/reports/gpu_suite}
if [ -z "${WORK:-}" ]; then WORK=$(mktemp -d /tmp/lvd-gpu-suite.XXXXXX); OWN_WORK=1; else OWN_WORK=0; fi
mkdir -p "$OUT" "$WORK"
# DataLoader workers put Unix sockets under TMPDIR, whose paths may not exceed 107 bytes: a short
# folder of its own, whatever $WORK is.
SOCK_TMP=$(mktemp -d /tmp/lvd-gs.XXXXXX)
trap 'rm -rf "$SOCK_TMP"' EXIT
export PYTHONUNBUFFERED=1 LVD_QUIET=1
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x "$REPO/.venv/bin/python" ]; then PY=$REPO/.venv/bin/python
else PY=python3; fi
LOG=$OUT/log.txt
ENV_TXT=$OUT/env.txt
: >"$LOG"
FAILED=0

if [ "$SMOKE" = 1 ]; then
  DEV=cpu
  # generous: the timeouts only guard a hang here; the tiny sizes end in seconds on a loaded machine too
  B_START=60 B_REF=0 B_STEP=120 B_DATA=120 B_EMBED=120 B_INDEX=120
  STEP_ARGS=(--arch vit_test vit_test vit_test --batch 4 2 8 --recipe vit_test --precision fp32
             --set model.ffn=swiglu model.drop_path_rate=0.4 --steps 1 --warmup 1)
  DATA_ARGS=(--recipe small_data --images 32 --distinct 8 --batch 16 --workers 2 --device-only-s 0.2)
  EMBED_ARGS=(--archs vit_test --n 48 --distinct 8 --shard-size 16 --processes 1 --batch 16 --workers 2 --bare-n 32)
  INDEX_ARGS=(--sizes 10000 --dims 32 --clusters 16 --iters 3 --queries 500 --graph-factor 1 --precisions fp32)
else
  DEV=cuda
  B_START=40 B_REF=220 B_STEP=110 B_DATA=40 B_EMBED=60 B_INDEX=50
  # The reference's S/14 and L/14 run its vitl14 config (SwiGLU, 131072-prototype untied heads,
  # Sinkhorn-Knopp, drop path 0.4), its g/14 the vitg14 config, which differs only in the arch:
  # lvd's vit_l14 recipe with the reference's SwiGLU FFN is the same recipe for all three.
  STEP_ARGS=(--arch vit_l14 vit_g14 vit_s14 --batch 64 32 128 --recipe vit_l14 --precision bf16
             --set model.ffn=swiglu --steps 10 --warmup 3 ${STEP_EXTRA:-})
  DATA_ARGS=(--recipe dinov2 --images 4096 --distinct 64 --batch 64 --workers 12)
  EMBED_ARGS=(--archs vit_l14 --n 16384 --distinct 256 --shard-size 256 --processes 16 --batch 256 --workers 12
              --bare-n 8192)
  INDEX_ARGS=(--sizes 1000000 --dims 384 --clusters 1000 --iters 10 --queries 10000 --precisions fp32 bf16)
fi

wants() { [[ ",$ONLY," == *",$1,"* ]]; }

summary() { "$PY" benchmarks/gpu_suite_summary.py --out "$OUT" >>"$LOG" 2>&1 || echo "summary failed (log.txt)"; }

# part NAME BUDGET_S CMD...: runs CMD under `timeout`, output to log.txt, status to env.txt and stdout
part() {
  local name=$1 budget=$2
  shift 2
  local started=$SECONDS rc
  echo "===== part $name ($(date -u +%H:%M:%S), budget ${budget}s): $*" >>"$LOG"
  timeout --kill-after=5 "$budget" "$@" >>"$LOG" 2>&1
  rc=$?
  local took=$((SECONDS - started))
  local status=ok
  if [ $rc = 124 ] || [ $rc = 137 ]; then status="timed out"; elif [ $rc != 0 ]; then status="failed"; fi
  [ $rc = 0 ] || FAILED=1
  echo "part $name: $status (rc $rc) in ${took}s of ${budget}s" | tee -a "$ENV_TXT"
  echo "===== part $name: $status (rc $rc) in ${took}s" >>"$LOG"
  summary
}

# ---- 0: carried wheels, the package, the environment
{
  echo "gpu suite $( [ "$SMOKE" = 1 ] && echo '--cpu-smoke' || echo 'full') $(date -u +%Y-%m-%dT%H:%M:%SZ), parts 0,$ONLY"
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
  echo "host $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 2^20}' /proc/meminfo) memory"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv,noheader
  else
    echo "no nvidia-smi"
  fi
} >"$ENV_TXT" 2>&1
install_wheels() {
  if [ "$SMOKE" = 1 ]; then echo "cpu smoke: wheels not installed (they are cp312 for the device; $PY is used as is)"; return 0; fi
  if [ -d .wheels ]; then
    "$PY" -m pip install -q --no-index --find-links .wheels --no-cache-dir hydra-core omegaconf antlr4-python3-runtime \
      webdataset faiss-cpu braceexpand || return 1
  else
    echo "no .wheels/ (benchmarks/prepare_device_wheels.sh makes it): using the packages already installed"
  fi
  "$PY" -m pip install -q --no-deps --no-build-isolation --no-cache-dir -e . || return 1
}
install_wheels >>"$LOG" 2>&1 || { echo "part 0: install failed (log.txt)" | tee -a "$ENV_TXT"; FAILED=1; }
"$PY" - >>"$ENV_TXT" 2>&1 <<'EOF'
import sys, torch
cuda = torch.cuda.is_available()
print(f"python {sys.version.split()[0]} ({sys.executable}), torch {torch.__version__}, cuda {torch.version.cuda}, "
      f"device {torch.cuda.get_device_name() if cuda else 'cpu'}")
for name in ("numpy", "faiss", "omegaconf", "hydra", "webdataset", "PIL", "numba", "lvdtool"):  # numba: the image has it
    try:
        module = __import__(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except Exception as error:  # recorded, not fatal: the part that needs it fails on its own
        print(f"{name}: {type(error).__name__}: {error}")
EOF
echo "part 0: done in ${SECONDS}s of ${B_START}s" | tee -a "$ENV_TXT"

# ---- a: the reference step (refbench), only on the GPU machine with .refbench/ carried
if wants a; then
  if [ "$SMOKE" = 0 ] && [ -d .refbench ]; then
    mkdir -p "$WORK/refbench"
    part a "$B_REF" env OUT="$WORK/refbench" ONLY=vit_small:128,vit_large:64,vit_giant2:32 DEADLINE_S=200 \
      VARIANT_TIMEOUT_S=100 bash .refbench/run_device.sh
    cp "$WORK/refbench/results.jsonl" "$OUT/refbench.jsonl" 2>/dev/null || true
    for f in env test_shim driver logs; do
      [ -f "$WORK/refbench/$f.txt" ] && { echo "----- refbench $f.txt"; cat "$WORK/refbench/$f.txt"; } >>"$LOG"
    done
    summary
  else
    why=$( [ "$SMOKE" = 1 ] && echo "--cpu-smoke (the reference needs CUDA and torchvision)" || echo "no .refbench/ carried" )
    for v in vit_large:64 vit_giant2:32 vit_small:128; do
      printf '{"arch": "%s", "batch": %s, "status": "skipped", "error": "%s"}\n' "${v%:*}" "${v#*:}" "$why"
    done >"$OUT/refbench.jsonl"
    echo "part a: skipped: $why" | tee -a "$ENV_TXT"
  fi
fi

# ---- b..e: lvd's benchmarks, each writing its JSON table into $OUT after every row
wants b && part b "$B_STEP" "$PY" benchmarks/pretrain_step.py "${STEP_ARGS[@]}" --device "$DEV" \
  --deadline-s $((B_STEP - 15)) --json "$OUT/step.json"
wants c && part c "$B_DATA" "$PY" benchmarks/data_path_device.py "${DATA_ARGS[@]}" --device "$DEV" \
  --deadline-s $((B_DATA - 12)) --json "$OUT/data_path.json"
wants d && part d "$B_EMBED" env TMPDIR="$SOCK_TMP" "$PY" benchmarks/embed.py "${EMBED_ARGS[@]}" --device "$DEV" \
  --deadline-s $((B_EMBED - 15)) --json "$OUT/embed.json"
wants e && part e "$B_INDEX" "$PY" benchmarks/index.py "${INDEX_ARGS[@]}" --device "$DEV" \
  --deadline-s $((B_INDEX - 12)) --json "$OUT/index.json"

summary
echo "total ${SECONDS}s" | tee -a "$ENV_TXT"
summary
sed -n '/^## Targets/,/^Peak memory/p' "$OUT/summary.md" 2>/dev/null
[ "$OWN_WORK" = 1 ] && rm -rf "$WORK"
exit $FAILED
