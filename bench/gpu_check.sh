#!/usr/bin/env bash
# The GPU checks of the speed issue in one prepared script (bench goals 1-3 and the K-sweep of goal 2).
# Run on a GPU machine from the repository root, with the project and what the machine lacks installed:
#     OUT=/tmp/gpu-out bash bench/gpu_check.sh
# Writes gpu.log (everything, with the GPU's name), report.md of the default study, and benchmark JSONs.
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 CINE_HARNESS_CACHE=/tmp/gpu-check-cache
LOG="$OUT/gpu.log"
say() { echo "== $(date +%T) $*" | tee -a "$LOG"; }
timed() {  # timed LABEL LIMIT_S COMMAND...: runs it, logs its output and its wall time
    local label=$1 limit=$2; shift 2
    say "$label: $*"
    local start=$(date +%s.%N)
    timeout "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    say "$label: exit $rc after $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$LOG" 2>&1
python3 -c "import torch, segmentation_models_pytorch as smp; print('torch', torch.__version__, 'smp', smp.__version__, torch.cuda.get_device_name(), 'cpus', __import__('os').cpu_count())" >>"$LOG" 2>&1
rm -rf "$CINE_HARNESS_CACHE" /tmp/gpu-s1 /tmp/gpu-s2 /tmp/gpu-s3 /tmp/gpu-s4

# goal 1: the harness loop against a bare loop, both models, on the GPU
timed "fine-tune loop vs bare loop" 150 python3 -m pytest bench/test_finetune_speed.py --benchmark-only -s -q \
    -p no:cacheprovider --benchmark-json "$OUT/finetune.json"
# goal 2: K concurrent fine-tunes, aggregate img/s and SM utilisation, same result alone and beside others
timed "K-sweep" 240 python3 -m pytest bench/test_gpu_concurrency.py --benchmark-only -s -q \
    -p no:cacheprovider --benchmark-json "$OUT/concurrency.json"
# goal 3: the default study, first run (phantom + pre-training) and again with caches; peak memory of each
timed "default study, first run" 240 python3 bench/peak_memory.py python3 -m harness run --strategy ed_es --n 2,5,10 --out /tmp/gpu-s1 ${EXTRA:-}
nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 500 >"$OUT/util-warm.txt" 2>/dev/null &
SAMPLER=$!
timed "default study, caches warm" 180 python3 bench/peak_memory.py python3 -m harness run --strategy ed_es --n 2,5,10 --out /tmp/gpu-s2 ${EXTRA:-}
kill $SAMPLER 2>/dev/null
python3 -c "v=[float(x) for x in open('$OUT/util-warm.txt') if x.strip()]; print('SM busy during the warm default study: mean', round(sum(v)/max(len(v),1),1), '% max', max(v, default=0), '%')" >>"$LOG" 2>&1
cp /tmp/gpu-s2/report.md "$OUT/report.md" 2>/dev/null
python3 - >>"$LOG" 2>&1 <<'PY'
import json, pathlib
for study in ("/tmp/gpu-s1", "/tmp/gpu-s2"):
    runs = sorted(pathlib.Path(study, "runs").glob("*/status.json"))
    rows = [json.loads(p.read_text()) for p in runs]
    train = [r.get("train_seconds", 0) for r in rows]
    evals = [r.get("evaluate_seconds", 0) for r in rows]
    print(study, len(rows), "runs; train s mean", round(sum(train) / max(len(train), 1), 2),
          "evaluate s mean", round(sum(evals) / max(len(evals), 1), 2))
PY
# concurrency must not change results: the n = 2 runs again, one worker alone, against the 8-worker study
timed "n = 2 alone (1 worker)" 120 python3 -m harness run --strategy ed_es --n 2 --seeds 1 --workers 1 --out /tmp/gpu-s3 ${EXTRA:-}
python3 - >>"$LOG" 2>&1 <<'PY'
import filecmp, pathlib
alone = {p.name: p for p in pathlib.Path("/tmp/gpu-s3/runs").iterdir() if p.is_dir()}
beside = {p.name: p for p in pathlib.Path("/tmp/gpu-s2/runs").iterdir() if p.is_dir()}
first = {p.name: p for p in pathlib.Path("/tmp/gpu-s1/runs").iterdir() if p.is_dir()}
common = sorted(set(alone) & set(beside))
same = [filecmp.cmp(alone[n] / "images.csv", beside[n] / "images.csv", shallow=False) for n in common]
print(f"alone vs beside the other workers: {sum(same)} of {len(common)} runs' images.csv byte-identical")
both = sorted(set(first) & set(beside))
same = [filecmp.cmp(first[n] / "images.csv", beside[n] / "images.csv", shallow=False) for n in both]
print(f"first study vs second (both 8 workers): {sum(same)} of {len(both)} runs' images.csv byte-identical")
PY
# last (a hang here costs nothing else): the same sweep under CUDA MPS (kernels of several processes share the SMs instead of taking turns)
if command -v nvidia-cuda-mps-control >/dev/null; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
    mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
    if nvidia-cuda-mps-control -d >>"$LOG" 2>&1; then
        timed "K-sweep under MPS" 240 python3 -m pytest bench/test_gpu_concurrency.py --benchmark-only -s -q \
            -p no:cacheprovider --benchmark-json "$OUT/concurrency-mps.json"
        timed "default study under MPS, caches warm" 120 python3 -m harness run --strategy ed_es --n 2,5,10 --out /tmp/gpu-s4 ${EXTRA:-}
        python3 -c "import filecmp, pathlib; a = sorted(pathlib.Path('/tmp/gpu-s4/runs').glob('*/images.csv')); print('MPS vs not:', sum(filecmp.cmp(f, pathlib.Path('/tmp/gpu-s2/runs', f.parent.name, 'images.csv'), shallow=False) for f in a), 'of', len(a), 'runs byte-identical')" >>"$LOG" 2>&1
        echo quit | nvidia-cuda-mps-control >>"$LOG" 2>&1
        sleep 2
    else
        say "MPS did not start"
    fi
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
else
    say "no nvidia-cuda-mps-control on this machine"
fi
say done
