#!/usr/bin/env bash
# The Python packages lvd needs that the GPU machine's image lacks, as CPython 3.12 x86-64 wheels
# in .wheels/ (ignored by git; carried with `carry: [".wheels"]`). The image already has torch,
# numpy, pyarrow, pillow, typer, rich, PyYAML, packaging, safetensors, matplotlib
# (/work/.library/device/KINDS.md). Run here, from any folder; it reads the local package index.
#
#   bash benchmarks/prepare_device_wheels.sh          # then: ls .wheels (about 35 MB)
#
# Versions are the ones lvd's tests run with here (.venv); gpu_suite.sh step 0 installs them with
# `pip install --no-index --find-links .wheels ...` and then `pip install --no-deps -e .`.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=$REPO/.wheels
PIP=${PIP:-python3 -m pip}
PACKAGES=(hydra-core==1.3.8 omegaconf==2.3.1 webdataset==1.0.2 braceexpand==0.1.7 faiss-cpu==1.15.1)
SDIST_ONLY=(antlr4-python3-runtime==4.9.3)  # no wheel on the index: built here (pure Python, py3-none-any)
mkdir -p "$DEST"
# The device README's platform list: pip matches each manylinux tag exactly.
$PIP download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "${PACKAGES[@]}"
for spec in "${SDIST_ONLY[@]}"; do
  name=${spec%%==*}
  if ! ls "$DEST"/"${name//-/_}"-*.whl >/dev/null 2>&1; then
    $PIP wheel --quiet --no-deps -w "$DEST" "$spec"
  fi
done
# One version of each package: two stop the whole install on the device.
dupes=$(ls "$DEST"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
if [ -n "$dupes" ]; then
  echo "prepare_device_wheels.sh: more than one version of: $dupes in $DEST (remove the old ones)" >&2
  exit 1
fi
du -sh "$DEST"
ls "$DEST"
