#!/usr/bin/env bash
# The GPU checks of the speed issue in one call, sized for a short GPU slot.
#
#   bench/gpu_check.sh DATA_ROOT OUT_DIR [STAGE ...]
#
# DATA_ROOT holds cifar-10-batches-py/; OUT_DIR gets one log per stage, the
# benchmark's JSON and the run folders. Stages, in the order given (default:
# check bench concurrent full20):
#   check      ResNet-20, budget=quick (1564 iterations), eager then trainer.cuda_graph=true: the
#              same recipe both ways, so the two test errors and wall times can be compared
#   bench      python -m resnet_cifar.speed, depths 20 56 110, fp32/bf16 with and without CUDA graphs,
#              against the standard PIL/DataLoader pipeline
#   concurrent aggregate images/s of 1, 2 and 4 ResNet-20 training processes sharing the GPU
#   compile    the benchmark's torch.compile variants, depth 20 (compilation takes minutes)
#   full20     ResNet-20, the paper's full 64k iterations, timed (python -m resnet_cifar.train)
#   fullplain20  plain-20, the same
#   twojobs    two quick ResNet-20 runs started at once (two shells): each claims a GPU first
#              (resnet_cifar.placement), so on a one-GPU machine the second waits for the first;
#              prints the claims logged and the GPU UUIDs each summary.json records
# Each stage runs under its own time limit and a failed stage does not stop the others.
# Environment: PYTHON (default python3), GRAPH (trainer.cuda_graph for the full runs, default true),
# WORKERS (DataLoader workers of the standard pipeline, default 8), DEVICE (default cuda) and
# EXTRA (more overrides for every training run; for trying the script out on a CPU with tiny budgets).
set -uo pipefail

usage="usage: bench/gpu_check.sh DATA_ROOT OUT_DIR [STAGE ...]"
data=${1:?$usage}
out=${2:?$usage}
shift 2
[ $# -gt 0 ] || set -- check bench concurrent full20
py=${PYTHON:-python3}
graph=${GRAPH:-true}
workers=${WORKERS:-8}
device=${DEVICE:-cuda}
extra=${EXTRA:-}
mkdir -p "$out/runs"
export PYTHONUNBUFFERED=1 data out py graph workers device extra

train() {  # train RUN_NAME OVERRIDES...: one run of resnet_cifar.train into $out/runs/RUN_NAME
  local name=$1
  shift
  # shellcheck disable=SC2086  # $extra: several overrides
  "$py" -m resnet_cifar.train "data.root=$data" "trainer.device=$device" "hydra.run.dir=$out/runs/$name" "$@" $extra
  "$py" -c 'import json, sys
s = json.load(open(sys.argv[1]))
print(sys.argv[1], s["status"], "| test error %", s.get("test_error"), "| wall s", s.get("wall_time_s"),
      "| img/s", s.get("images_per_s"), "|", s.get("device_name"))' "$out/runs/$name/summary.json"
}

check() {
  train quick_eager depth=20 budget=quick trainer.cuda_graph=false
  train quick_graph depth=20 budget=quick trainer.cuda_graph=true
}

bench() {
  "$py" -m resnet_cifar.speed --data "$data" --depths 20 56 110 --variants fp32 bf16 fp32+graph bf16+graph \
    --workers "$workers" --steps 50 --windows 5 --warmup 10 --json "$out/bench.json"
}

concurrent() {
  local variant=fp32
  [ "$graph" = true ] && variant=fp32+graph
  "$py" -m resnet_cifar.speed --data "$data" --depths 20 --variants "$variant" --no-standard --steps 20 \
    --windows 1 --concurrent 1 2 4 --concurrent-steps 3000 --json "$out/concurrent.json"
}

compile() {
  "$py" -m resnet_cifar.speed --data "$data" --depths 20 --variants fp32+graph fp32+compile+graph \
    --no-standard --steps 50 --windows 3 --warmup 10 --json "$out/compile.json"
}

full20() { train full_resnet20 depth=20 arch=resnet "trainer.cuda_graph=$graph"; }
fullplain20() { train full_plain20 depth=20 arch=plain "trainer.cuda_graph=$graph"; }
twojobs() {
  train twojobs_a depth=20 budget=quick "trainer.cuda_graph=$graph" &
  train twojobs_b depth=20 budget=quick seed=1 "trainer.cuda_graph=$graph"
  wait
  grep -h "waiting for\|completed:" "$out"/runs/twojobs_*/train.log
  "$py" -c 'import json, sys
for p in sys.argv[1:]:
    s = json.load(open(p))
    print(p, s["status"], s.get("gpus"), s.get("started_at"), s.get("wall_time_s"))' "$out"/runs/twojobs_*/summary.json
}
export -f train check bench concurrent compile full20 fullplain20 twojobs

declare -A limit=([check]=120 [bench]=240 [concurrent]=150 [compile]=150 [full20]=420 [fullplain20]=420 [twojobs]=180)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
for name in "$@"; do
  if [ -z "${limit[$name]:-}" ]; then
    echo "unknown stage $name (allowed: ${!limit[*]})" >&2
    exit 2
  fi
  echo "== $name (limit ${limit[$name]} s) $(date -u +%T)"
  start=$SECONDS
  timeout --kill-after=15 "${limit[$name]}" bash -c "$name" 2>&1 | tee "$out/$name.log"
  echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
done
