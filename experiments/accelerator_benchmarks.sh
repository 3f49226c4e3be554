#!/usr/bin/env bash
# Every speed benchmark of issue 10 in one short run, for a machine lent
# for minutes (a GPU or TPU VM): each benchmark under its own time limit, so
# one slow part cannot eat the others' time, each one's output in its own
# log. Rounds are fewer than the README's CPU runs; the benchmarks still
# print medians and [min, max] over interleaved rounds.
#
#   bash experiments/accelerator_benchmarks.sh OUT_DIR [MNIST_IDX_DIR]
#
# OUT_DIR gets one <benchmark>.log per benchmark and summary.txt (the lines
# with ratios and targets). MNIST_IDX_DIR (default ../shared/data/mnist) is
# the IDX folder for the input-pipeline part; without it that part uses the
# scikit-learn digits. Needs jax with the accelerator's plugin installed
# (`pip install -e '.[cuda]'` or `'.[tpu]'`); runs on a CPU as well (6.5
# minutes on the project's 2-core CPU). PER_BENCH_S (default 150) caps each
# benchmark.
#
# On a machine lent without network (the project's H200 image has jax 0.11
# with its CUDA 13 plugin, flax, optax, orbax, absl, scikit-learn), carry
# wheels of what it lacks: ml-collections, grain, array-record,
# tensorflow-datasets, importlib-resources, tensorboardX, constriction; and
# copy the MNIST IDX folder into the carried tree (../shared does not
# travel).
set -u
out=${1:?usage: bash experiments/accelerator_benchmarks.sh OUT_DIR [MNIST_IDX_DIR]}
idx=${2:-../shared/data/mnist}
limit=${PER_BENCH_S:-150}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python}

run() {  # name, then the module's flags
  local name=$1
  shift
  echo "== $name $*" | tee "$out/$name.log"
  timeout "$limit" "$python" -m "experiments.$name" "$@" >>"$out/$name.log" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && echo "   stopped at its ${limit} s limit" | tee -a "$out/$name.log"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "   failed, exit $rc (see $out/$name.log)"
  return 0
}

"$python" -c "import jax; print('devices:', jax.devices())" | tee "$out/devices.txt"
run bench_throughput --rounds=9 --steps=30 --idx_dir="$idx"
run bench_sweep --rounds=3 --steps=500
run bench_replicates --rounds=3
run bench_iwae --rounds=3
run bench_mixed_precision --rounds=5 --steps=10
grep -hE "^== |device:|/|ratio|target|chunk|fastest|^ +[0-9]+ +[0-9]" "$out"/*.log \
  >"$out/summary.txt"
echo "logs and summary.txt in $out"
