#!/usr/bin/env bash
# Prepare what bench/device_run.sh carries to a GPU machine without network (make device-prep):
#   device-carry/wheels/any, cp311, cp312   what the machine's python lacks (pooch, jupytext,
#                                            nbval, ipykernel and their needs), for CPython 3.11
#                                            and 3.12 on x86-64 Linux; the run installs the
#                                            folder of its own version
#   device-carry/data                        MNIST and Fashion-MNIST (.gz, checked by their hashes)
#   device-carry/results.tar.gz              an earlier call's results (RESULTS=path), to resume
# and check that the working tree plus the carried folder stays under the 64 MiB a call takes.
# torch and CuPy are not carried: a CUDA build of torch alone is some GB, far over those 64 MiB,
# and the CUDA image's python3 holds both (the device notes: torch 2.11.0+cu130, cupy-cuda13x
# 14.2.0). The run's torch_cuda step (tests/test_torch_cuda.py) uses them and is skipped, saying
# why, on a machine where torch sees no GPU or CuPy does not import.
#
#   bash bench/device_prep.sh [RESULTS=bench/out/device/results.tar.gz]
set -eu -o pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CARRY=${GAUGELIT_CARRY:-device-carry}
RESULTS=${RESULTS:-}
for arg in "$@"; do case $arg in RESULTS=*) RESULTS=${arg#RESULTS=} ;; esac; done
mkdir -p "$CARRY/wheels" "$CARRY/data"

# Packages the CUDA image's python already holds (the device notes' list): never carried, since a
# second copy on the path would shadow the image's own.
PRESENT="attrs certifi charset_normalizer coverage filelock hypothesis idna iniconfig jinja2
markdown_it_py markupsafe matplotlib mdurl numpy packaging pip pluggy psutil pygments pytest
python_dateutil pyyaml requests setuptools six sympy tqdm threadpoolctl typing_extensions urllib3
wheel"
WANT="pooch jupytext nbval ipykernel"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for v in 3.11 3.12; do
    tag=cp${v/./}
    "$PY" -m pip download -q --only-binary=:all: --python-version "$v" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d "$tmp/$tag" $WANT
    for p in $PRESENT; do rm -f "$tmp/$tag/$p"-[0-9]*.whl; done
done
rm -rf "$CARRY/wheels"/*
mkdir -p "$CARRY/wheels/any" "$CARRY/wheels/cp311" "$CARRY/wheels/cp312"
for whl in "$tmp"/cp311/*.whl; do          # wheels both versions share go once into any/
    name=$(basename "$whl")
    if [ -f "$tmp/cp312/$name" ]; then mv "$whl" "$CARRY/wheels/any/"; rm "$tmp/cp312/$name"
    else mv "$whl" "$CARRY/wheels/cp311/"; fi
done
mv "$tmp"/cp312/*.whl "$CARRY/wheels/cp312/" 2>/dev/null || true

# The data: the hash-checked files of the local data folder (downloaded by pooch if absent).
"$PY" - "$CARRY/data" <<'EOF'
import shutil, sys
from pathlib import Path
from gaugelit.experiments.data import fetch_dataset
target = Path(sys.argv[1])
for name in ("mnist", "fashion-mnist"):
    for path in fetch_dataset(name).values():
        path = Path(path)
        (target / name).mkdir(parents=True, exist_ok=True)
        if not (target / name / path.name).exists():
            shutil.copyfile(path, target / name / path.name)
EOF

rm -f "$CARRY/results.tar.gz"
[ -n "$RESULTS" ] && cp "$RESULTS" "$CARRY/results.tar.gz"

tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1)
carry=$(du -sb "$CARRY" | cut -f1)
total=$(( tree + carry ))
echo "device-prep: $CARRY holds $(ls "$CARRY"/wheels/*/*.whl | wc -l) wheels and the data;" \
     "working tree $((tree / 1048576)) MiB + carried $((carry / 1048576)) MiB = $((total / 1048576)) MiB (limit 64)"
(( total < 64 * 1048576 )) || { echo "device-prep: over the 64 MiB a call takes" >&2; exit 1; }
