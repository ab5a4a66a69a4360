#!/usr/bin/env bash
# The prepared GPU check (issue #19): every GPU path of rnascl-deploy in a few minutes on one GPU, one summary table.
#
#   scripts/gpu-check.sh prepare        here, with a package registry: the wheels the GPU machine lacks (fvcore and
#                                       its pure-Python dependencies) and the Fashion-MNIST files, into .gpu-check/
#                                       (ignored by git, about 30 MB: carry it to the GPU machine)
#   scripts/gpu-check.sh run [OUT]      on the GPU machine (PyTorch with CUDA, no registry): installs what is missing
#                                       from .gpu-check/ offline, then runs the steps below; logs and the table go
#                                       to OUT (default .gpu-check/out)
#
# Steps (each timed, PASS/FAIL/SKIP): environment; teacher eval on the GPU; a tiny search and retrain on the GPU in
# bf16; export fp32 and fp16 ONNX and the TensorRT-bound graphs (--onnx-only); TensorRT engines where tensorrt
# imports (skipped by name otherwise); verify on the GPU; bench of the PyTorch student with CUDA events; training
# speed fp32 vs bf16. GPU_CHECK_DEVICE=cpu runs the same steps on the CPU (a dry run of the script itself).
set -uo pipefail
cd "$(dirname "$0")/.."
HERE=.gpu-check
WHEELS=(fvcore==0.1.5.post20221221 iopath==0.1.10 yacs==0.1.8 termcolor portalocker tabulate)

prepare() {
  mkdir -p "$HERE/wheels" "$HERE/data"
  python3 -m pip download --quiet --no-deps --no-binary fvcore,iopath -d "$HERE/wheels" "${WHEELS[@]}"
  local src=/usr/share/datasets/fashion-mnist
  [ -d "$src" ] || { echo "gpu-check: $src missing: apt-get install dataset-fashion-mnist" >&2; exit 2; }
  cp "$src"/*-ubyte.gz "$HERE/data/"
  du -sh "$HERE"
}

STEPS=()
step() {  # step NAME COMMAND...: run, time, record
  local name=$1; shift
  local t0=$SECONDS
  echo "=== $name: $*" | tee -a "$OUT/gpu-check.log"
  if "$@" >>"$OUT/gpu-check.log" 2>&1; then STEPS+=("$name|PASS|$((SECONDS - t0))"); else
    STEPS+=("$name|FAIL ($?)|$((SECONDS - t0))"); tail -n 25 "$OUT/gpu-check.log"; fi
}
skip() { STEPS+=("$1|SKIP: $2|0"); echo "=== $1: skipped ($2)" | tee -a "$OUT/gpu-check.log"; }

run() {
  OUT=${1:-$HERE/out}
  mkdir -p "$OUT"
  : >"$OUT/gpu-check.log"
  export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  local dev=${GPU_CHECK_DEVICE:-cuda} work="$OUT/work"
  rm -rf "$work"
  python3 -c "import fvcore" 2>/dev/null || python3 -m pip install --quiet --no-index --no-build-isolation \
    --find-links "$HERE/wheels" "${WHEELS[@]}" >>"$OUT/gpu-check.log" 2>&1
  local cli=(python3 -m rnascl_deploy -q)
  local data=(--set "data.root=$PWD/$HERE/data")
  step environment python3 -c "
import torch, onnxruntime, fvcore, rnascl_deploy
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())
print('gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())
assert '$dev' == 'cpu' or torch.cuda.is_available(), 'no GPU visible'"
  step "teacher eval ($dev)" "${cli[@]}" teacher eval builtin:teacher-resnet-fashion-mnist/model.safetensors \
    --test-limit 2000 --attacks fgsm,pgd20,apgd-ce --device "$dev" "${data[@]}" --out "$OUT/teacher-eval.json"
  step "search ($dev, bf16)" "${cli[@]}" search --out "$work" --device "$dev" --train-limit 4096 --epochs 1 \
    --set runtime.precision=bf16 "${data[@]}"
  step "retrain ($dev, bf16)" "${cli[@]}" retrain "$work" --epochs 2 --train-limit 16384 --test-limit 1000 \
    --set runtime.precision=bf16 --set retrain.train.adv=n-fgsm --device "$dev"
  step "export onnx, onnx-fp16" "${cli[@]}" export "$work" --format onnx --format onnx-fp16 --device "$dev"
  step "export TensorRT graphs (--onnx-only)" "${cli[@]}" export "$work" --format tensorrt-fp16 \
    --format tensorrt-int8 --onnx-only --device "$dev"
  if python3 -c "import tensorrt" 2>/dev/null; then
    step "export TensorRT engines" "${cli[@]}" export "$work" --format tensorrt-fp16 --format tensorrt-int8
    step "verify TensorRT fp16" "${cli[@]}" verify "$work" --engine "$work/engines/student-fp16.engine" \
      --test-limit 500 --device "$dev" --junit "$OUT/verify-trt.xml"
  else
    skip "TensorRT engines" "tensorrt does not import"
  fi
  local provider=cpu
  python3 -c "import onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers()" 2>/dev/null \
    && provider=cuda
  step "verify student.onnx ($dev, onnxruntime $provider)" "${cli[@]}" verify "$work" \
    --engine "$work/engines/student.onnx" --test-limit 500 --device "$dev" --provider "$provider" --junit "$OUT/verify.xml"
  step "verify student-fp16.onnx" "${cli[@]}" verify "$work" --engine "$work/engines/student-fp16.onnx" \
    --test-limit 500 --device "$dev" --provider "$provider"
  step "bench PyTorch student ($dev, CUDA events)" "${cli[@]}" bench --engine "$work/student.safetensors" \
    --batch 1,64,1024 --provider "$([ "$dev" = cpu ] && echo cpu || echo cuda)" --json --out "$OUT/bench"
  step "train speed fp32 vs bf16 ($dev)" python3 benchmarks/bench_train_speed.py --only objectives --device "$dev" \
    --precisions fp32,bf16 --batch 512 --rounds 10 --out "$OUT/train-speed.json"
  cp "$work/metrics.json" "$OUT/metrics.json" 2>/dev/null
  {
    echo
    echo "| step | result | seconds |"
    echo "|---|---|---|"
    for s in "${STEPS[@]}"; do IFS='|' read -r name result secs <<<"$s"; echo "| $name | $result | $secs |"; done
  } | tee "$OUT/summary.md"
  ! grep -q "FAIL" "$OUT/summary.md"
}

case "${1:-}" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  *) sed -n '2,13p' "$0"; [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ] || exit 2 ;;
esac
