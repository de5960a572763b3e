#!/usr/bin/env bash
# One prepared call on a GPU machine (issue 15): in this order, each step time-boxed, all of it
# inside DEVICE_RUN_BUDGET seconds (default 510, under 9 minutes):
#   1. the unit tests with CuPy as the backend, and a check that GAUGELIT_BACKEND=cupy puts arrays
#      on the device; then gaugelit.torch on CUDA (tests/test_torch_cuda.py, step torch_cuda; its
#      junit file goes with the logs), which needs the machine's own torch with CUDA and CuPy (not
#      carried: see bench/device_prep.sh) and is skipped, saying why, where either is missing;
#   2. the benchmark suite (rows 1-5; row 4 against torch on CUDA where torch is there);
#   3. the MNIST and Fashion-MNIST paper grid with batched models (train_many), resumable: finished
#      runs are skipped, and the results archive of an earlier call, carried back in, is unpacked
#      first;
#   4. the book's notebooks through nbval on CuPy, if time is left.
# It packs the run files, the benchmark JSON and the logs into three archives in $OUT (or
# bench/out/device) and prints one summary line last.
#
#   make device-prep                 # here, with network: wheels + data into device-carry/
#   bash bench/device_run.sh         # there: the GPU run (no network needed)
#   bash bench/device_run.sh --cpu   # anywhere: NumPy, a tiny grid, no wheels (tests run this)
#
# Environment: GAUGELIT_CARRY (default device-carry/: wheels/{any,cpXY}/*.whl, data/,
# results.tar.gz), OUT, PYTHON (default python3), DEVICE_RUN_BUDGET (seconds),
# DEVICE_RUN_STEPS (default "tests torch_cuda bench grid nbval"; e.g. "grid" for a call that only
# resumes it).
set -u -o pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=gpu
[ "${1:-}" = "--cpu" ] && MODE=cpu
CARRY=${GAUGELIT_CARRY:-$ROOT/device-carry}
OUTDIR=${OUT:-$ROOT/bench/out/device}
PY=${PYTHON:-python3}
BUDGET=${DEVICE_RUN_BUDGET:-510}
STEPS=" ${DEVICE_RUN_STEPS:-tests torch_cuda bench grid nbval} "
START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gaugelit-device-run.XXXXXX")
mkdir -p "$OUTDIR" "$WORK/logs" "$WORK/bench"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

left() { echo $(( BUDGET - ($(date +%s) - START) )); }
# box WANT RESERVE: at most WANT seconds, leaving RESERVE seconds of the budget for what follows
box() { local b=$(( $(left) - $2 )); (( b > $1 )) && b=$1; (( b < 0 )) && b=0; echo "$b"; }
# run NAME SECONDS CMD...: the command under timeout (SIGINT first, so that Python unwinds and its
# atomic writes remove their temporary files), its output in logs/NAME.log; sets RC
run() {
    local name=$1 secs=$2; shift 2
    if (( secs < 5 )); then RC=skipped-time; echo "[$name] skipped: no time left" >"$WORK/logs/$name.log"; return; fi
    echo "[$name] up to ${secs}s: $*" >&2
    timeout -s INT -k 15 "$secs" "$@" >"$WORK/logs/$name.log" 2>&1
    local rc=$?
    case $rc in 0) RC=ok ;; 124|130|137) RC=timeout ;; *) RC=rc$rc ;; esac
    tail -n 3 "$WORK/logs/$name.log" >&2
}
last_line() { grep -E "$2" "$WORK/logs/$1.log" 2>/dev/null | tail -n 1; }

# -- setup: carried wheels, data, earlier results ---------------------------------------------
if [ "$MODE" = gpu ]; then
    BACKEND=cupy
    if [ -d "$CARRY/wheels" ]; then
        tag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$WORK/site" "$CARRY"/wheels/any/*.whl "$CARRY"/wheels/"$tag"/*.whl \
            >"$WORK/logs/wheels.log" 2>&1 || echo "wheels: install failed (see logs/wheels.log)" >&2
        SITE=":$WORK/site"
    fi
    [ -d "$CARRY/data" ] && export GAUGELIT_DATA_DIR=${GAUGELIT_DATA_DIR:-$CARRY/data}
    RESULTS=${GAUGELIT_RESULTS_DIR:-$ROOT/results}
    SCALE=paper
    GRID=(--scale paper --datasets mnist fashion-mnist)
    # test_device_run runs this script on the CPU; test_torch_cuda has its own step (1b)
    TESTS=(tests --ignore=tests/bench/test_device_run.py --ignore=tests/test_torch_cuda.py)
    BENCH=(--backend cupy)
else
    BACKEND=numpy
    RESULTS=${GAUGELIT_RESULTS_DIR:-$WORK/results}
    SCALE=ci
    GRID=(--scale ci --datasets mnist --archs 3-layer --optimizers sgd --seeds 0 --epochs 1
          --n-train 256 --n-test 64)
    TESTS=(tests/training/test_batched.py)
    BENCH=(--backend numpy --size tiny --rows 1 3 --repeat 1)
fi
export PYTHONPATH="$ROOT${SITE:-}${PYTHONPATH:+:$PYTHONPATH}" GAUGELIT_BACKEND=$BACKEND GAUGELIT_RESULTS_DIR=$RESULTS
mkdir -p "$RESULTS"
[ -f "$CARRY/results.tar.gz" ] && tar -xzf "$CARRY/results.tar.gz" -C "$RESULTS"

# -- 1. unit tests on the backend, and the backend check --------------------------------------
T_TESTS=skipped; T_BACKEND=skipped
if [[ $STEPS == *" tests "* ]]; then
    run tests "$(box 170 300)" "$PY" -m pytest -q -x -p no:cacheprovider "${TESTS[@]}"
    T_TESTS="$RC($(last_line tests 'passed|failed|error' | sed 's/=//g; s/^ *//; s/ in .*//'))"
    run backend 60 "$PY" -c "
import gaugelit as gl, gaugelit.experiments
xp = gl.default_backend()
net = gl.he_init([4, 3, 2])
kind = type(net.weights[0]).__module__.split('.')[0]
assert xp.__name__ == kind == '$BACKEND', (xp.__name__, kind)
print('arrays on', kind, '-', gl.experiments.device_name(xp))"
    T_BACKEND="$RC($(last_line backend 'arrays on' | sed 's/arrays on //'))"
fi

# -- 1b. gaugelit.torch on CUDA: the same factors as on the CPU, in place, nothing through the host --
# In CPU mode (and wherever torch sees no GPU or CuPy does not import) every test skips, and the
# summary gives pytest's reason.
T_TORCH=skipped
if [[ $STEPS == *" torch_cuda "* ]]; then
    run torch_cuda "$(box 120 240)" "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_torch_cuda.py \
        --junitxml="$WORK/logs/torch_cuda.xml" -o junit_family=xunit1
    counts=$(last_line torch_cuda 'passed|failed|error|skipped' | sed 's/=//g; s/^ *//; s/ in .*//')
    why=$(grep -E '^SKIPPED' "$WORK/logs/torch_cuda.log" 2>/dev/null | grep -m1 'needs torch' \
          | sed -E 's/^SKIPPED \[[0-9]+\] [^ ]+ //')
    # all skipped: rc 0, or 5 (nothing collected) where the module itself skips (torch does not import)
    if [[ $RC == ok || $RC == rc5 ]] && ! grep -qE 'passed|failed|error' <<<"$counts" && [ -n "$why" ]; then
        T_TORCH="skipped($why)"
    else
        T_TORCH="$RC($counts)"
    fi
fi

# -- 2. the benchmark suite --------------------------------------------------------------------
T_BENCH=skipped
if [[ $STEPS == *" bench "* ]]; then
    run bench "$(box 150 200)" "$PY" bench/suite.py "${BENCH[@]}" --jobs 1 \
        --json "$WORK/bench/bench-$MODE.json" --markdown "$WORK/bench/bench-$MODE.md"
    T_BENCH=$RC
fi

# -- 3. the paper grid, batched, resumable -------------------------------------------------------
count() { "$PY" -m gaugelit reproduce "${GRID[@]}" --out "$RESULTS" --dry-run 2>/dev/null | tail -n 1 \
          | sed -E 's/.*: ([0-9]+) finished, ([0-9]+) to run/\1 \2/'; }
T_GRID=skipped
if [[ $STEPS == *" grid "* ]]; then
    if "$PY" -c "from gaugelit.experiments.data import fetch_dataset as f; f('mnist', download=False)" >/dev/null 2>&1; then
        read -r before todo < <(count)
        run grid "$(box 100000 $([ "$MODE" = gpu ] && echo 40 || echo 10))" \
            "$PY" -m gaugelit reproduce "${GRID[@]}" --out "$RESULTS" --batch-models
        rc=$RC
        read -r after todo < <(count)
        T_GRID="$rc($after/$((after + todo)) finished, +$((after - before)) in this call)"
    else
        T_GRID="skipped(no MNIST in ${GAUGELIT_DATA_DIR:-the data folder})"
    fi
fi

# -- 4. the notebooks through nbval, if time is left ---------------------------------------------
T_NB=skipped
if [[ $STEPS == *" nbval "* ]] && [ "$MODE" = gpu ]; then
    if (( $(left) > 90 )) && "$PY" -c "import jupytext, nbval" 2>/dev/null; then
        mkdir -p "$WORK/nb"
        for md in $(grep -l '^jupytext:' book/*.md); do
            "$PY" -m jupytext --quiet --to notebook --output "$WORK/nb/$(basename "${md%.md}").ipynb" "$md"
        done
        run nbval "$(box 100000 25)" env CI=1 "$PY" -m pytest -q -p no:cacheprovider --nbval-lax \
            --nbval-current-env "$WORK/nb"
        T_NB="$RC($(last_line nbval 'passed|failed|error' | sed 's/=//g; s/^ *//; s/ in .*//'))"
    else
        T_NB="skipped(time or jupytext/nbval missing)"
    fi
fi

# -- pack: at most three archives and the summary ------------------------------------------------
SECONDS_USED=$(( $(date +%s) - START ))
SUMMARY="device_run $MODE ${SECONDS_USED}s: tests=$T_TESTS backend=$T_BACKEND torch_cuda=$T_TORCH bench=$T_BENCH"
SUMMARY="$SUMMARY grid=$T_GRID nbval=$T_NB"
echo "$SUMMARY" >"$WORK/logs/summary.txt"
[ -d "$RESULTS/$SCALE" ] && tar -czf "$OUTDIR/results.tar.gz" -C "$RESULTS" "$SCALE"
tar -czf "$OUTDIR/bench.tar.gz" -C "$WORK" bench
tar -czf "$OUTDIR/logs.tar.gz" -C "$WORK" logs
cp "$WORK/logs/summary.txt" "$OUTDIR/summary.txt"
rm -rf "$WORK"
echo "$SUMMARY"
