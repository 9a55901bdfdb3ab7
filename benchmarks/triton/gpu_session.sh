#!/usr/bin/env bash
# The GPU checks as one call on a lent CUDA machine (no install: the source tree is used
# as is, with kernels/ linked in as scaled_decay/kernels, as the wheel ships it):
#   OUT=DIR bash benchmarks/triton/gpu_session.sh [suite|tests|probe|sweep|best|host|bench]...
#   (best: bench_triton.py with the config sweep_triton.py found fastest)
#   (default: tests host bench, about 9 minutes on an H200)
# Writes all.log, the CUDA test log and the benchmarks' .json/.md (device and date inside)
# under $OUT; copy them to benchmarks/triton/results/cuda/ to record them. Wheels in .whl
# (carried with the call: torch-optimi for the side-by-side rows, the study's packages for "suite")
# are installed first where present.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
[ -e scaled_decay/kernels ] || ln -s ../kernels scaled_decay/kernels
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
log() { tee -a "$OUT/all.log"; }
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
    export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
steps=${*:-tests host bench}
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem \
    --format=csv; python3 -c "import torch, triton; print('torch', torch.__version__,
    'triton', triton.__version__, torch.cuda.get_device_name())"; } 2>&1 | log
for s in $steps; do
  echo "=== $s $(date -u +%T) ===" | log
  case $s in
    suite) # the whole suite under the image's torch (CI runs 2.13/2.14.1 on CPU only)
           timeout 170 python3 -m pytest -q -rf -p no:cacheprovider -n 8 --junitxml="$OUT/junit.xml" \
             tests/ 2>&1 | log ;;
    tests) timeout 150 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_triton_cuda.py \
             tests/kernels/test_triton_compile.py tests/kernels/test_capture.py \
             tests/kernels/test_step_plan.py 2>&1 | log ;;
    probe) timeout 90 python3 benchmarks/triton/probe_fused.py --out "$OUT" 2>&1 | log ;;
    sweep) timeout 240 python3 benchmarks/triton/sweep_triton.py --out "$OUT" 2>&1 | log ;;
    host) timeout 150 python3 benchmarks/triton/bench_host.py --steps 20 --out "$OUT" 2>&1 | log ;;
    best) read -r b w < "$OUT/best_config.txt" || { b=4096; w=8; }; timeout 240 python3 benchmarks/triton/bench_triton.py \
            --iters 20 --block "$b" --warps "$w" --out "$OUT" 2>&1 | log ;;
    bench) timeout 240 python3 benchmarks/triton/bench_triton.py --iters 20 --out "$OUT" 2>&1 | log ;;
  esac
  echo "=== $s exit ${PIPESTATUS[0]} $(date -u +%T) ===" | log
done
