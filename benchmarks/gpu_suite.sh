#!/usr/bin/env bash
# The GPU checks and benchmarks behind docs/benchmarks.md, in one pass on a CUDA machine:
#   bash benchmarks/gpu_suite.sh [log folder]        (default outputs/gpu; PYTHON picks the interpreter)
#   STEPS="test_cuda bench_scoring_peak" bash benchmarks/gpu_suite.sh   (only the named steps)
# Needs the demo data and its text cache (make demo-data, or carry data/demo and data/cache).
# Each step has its own time limit, so one failing step leaves the others' figures. The steps' limits add
# up to more than ten minutes: on a machine lent for short calls, run them in groups with STEPS.
set -u
LOGS=${1:-outputs/gpu}
PY=${PYTHON:-python3}
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg
status=0

STEPS=${STEPS:-test_cuda bench_scoring bench_training bench_scoring_large demo_train demo_evaluate}

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
    echo "=== $name ($(date -u +%H:%M:%S))"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$LOGS/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" = 0 ] || status=1
}

nvidia-smi -L
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
step test_cuda 150 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py
step bench_scoring 330 $PY benchmarks/bench_scoring.py --size paper --device cuda --samples 1024 --classes 60 \
    --noises 3 --batch 512 --variants fp32,amp,amp+compile,bf16,bf16+compile,amp+cascade2,bf16+cascade2
step bench_training 240 $PY benchmarks/bench_training.py --size paper --device cuda --batch 256 --steps 10 \
    --warmup 3 --variants fp32,fast,fast+ddp,fast+ddp0,fast+compile
step bench_scoring_large 150 $PY benchmarks/bench_scoring.py --size paper --device cuda --samples 8192 --classes 60 \
    --noises 3 --skip-loop --variants amp,bf16
# the peak-fraction attempt: static-shape compile, default against max-autotune, two call sizes
step bench_scoring_peak 420 $PY benchmarks/bench_scoring.py --size paper --device cuda --samples 1024 --classes 60 \
    --noises 3 --skip-loop --rows 16384 --variants bf16,bf16+compile,bf16+autotune
step demo_train 150 $PY -m tdsm_core train configs/demo.yaml --quiet --set output_dir=/tmp/tdsm_gpu_runs
step demo_evaluate 60 $PY -m tdsm_core evaluate configs/demo.yaml --set output_dir=/tmp/tdsm_gpu_runs
exit $status
