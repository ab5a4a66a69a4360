#!/usr/bin/env bash
# The prepared GPU check (issues #19, #39): every GPU path of rnascl-deploy in a few minutes on one GPU, one summary.
#
#   scripts/gpu-check.sh prepare        here, with a package registry: the wheels the GPU machine lacks (fvcore and
#                                       its pure-Python dependencies) and the Fashion-MNIST files, into .gpu-check/
#                                       (ignored by git, about 30 MB: carry it to the GPU machine)
#   scripts/gpu-check.sh run [OUT]      on the GPU machine (PyTorch with CUDA, no registry): installs what is missing
#                                       from .gpu-check/ offline, runs the steps below, and writes at most 8 files to
#                                       OUT (default .gpu-check/out): summary.md (rewritten after every step),
#                                       gpu-check.log (every step's whole output), environment.txt, teacher-eval.json,
#                                       metrics.json, probe.json, bench.json, train-speed.json
#
# Steps (each with its own timeout, all within GPU_CHECK_BUDGET seconds, default 330 on a GPU): environment
# (versions, nvidia-smi, torch.backends); teacher eval; a tiny search (bf16); retrain (bf16; epoch seconds, memory
# format); retrain in fp16 (GPU only); a sync-debug probe of a few real training steps; export fp32/fp16 ONNX and the
# TensorRT-bound graphs (--onnx-only); TensorRT engines and their verification where tensorrt imports (skipped by name
# otherwise); verify of both ONNX engines; bench of the fp32 engine against the PyTorch student; training speed.
# Each step's result: PASS; GATE (verify exit 1: the gate's verdict on a tiny student, not a fault); REFUSED (exit
# 2); FAIL (exit 1 elsewhere); CRASH (any other exit); TIMEOUT (its own limit); CUT (the budget ran out during it);
# SKIP (with why). Exit: 0 every step passed or gave a verdict; 1 a step failed, was refused, crashed or timed out;
# 3 none did, but the budget cut or skipped some; 2 bad usage. The scratch run lives outside OUT (GPU_CHECK_WORK,
# default ${TMPDIR:-/tmp}/rnascl-gpu-check, emptied first). GPU_CHECK_DEVICE=cpu runs the same steps, smaller, on
# the CPU (a dry run of the script itself; budget 2400 s); GPU_CHECK_PYTHON picks the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
HERE=.gpu-check
WHEELS=(fvcore==0.1.5.post20221221 iopath==0.1.10 yacs==0.1.8 termcolor portalocker tabulate)
MAX_FILES=8  # what the GPU machine's tool brings back

prepare() {
  mkdir -p "$HERE/wheels" "$HERE/data"
  python3 -m pip download --quiet --no-deps --no-binary fvcore,iopath -d "$HERE/wheels" "${WHEELS[@]}"
  local src=/usr/share/datasets/fashion-mnist
  [ -d "$src" ] || { echo "gpu-check: $src missing: apt-get install dataset-fashion-mnist" >&2; exit 2; }
  cp "$src"/*-ubyte.gz "$HERE/data/"
  du -sh "$HERE"
}

STEPS=()        # name|result|seconds|peak GPU MiB|notes, one per step
LAST_RC=0       # the last step's exit code
START=$SECONDS

summary() {  # summary.md from what has run so far (after every step, and once at the end), replaced atomically
  local state=$1 s name result secs peak notes
  {
    echo "# GPU check: $state"
    echo
    echo "device $DEV; $(date -u +%Y-%m-%dT%H:%M:%SZ); $((SECONDS - START)) s so far of a $BUDGET s budget;" \
      "commit $COMMIT"
    [ -s "$OUT/environment.txt" ] && sed -n 's/^SUMMARY /- /p' "$OUT/environment.txt"
    echo
    echo "| step | result | seconds | peak GPU MiB | notes |"
    echo "|---|---|---|---|---|"
    for s in "${STEPS[@]}"; do
      IFS='|' read -r name result secs peak notes <<<"$s"
      echo "| $name | $result | $secs | $peak | $notes |"
    done
  } >"$OUT/summary.md.tmp" && mv "$OUT/summary.md.tmp" "$OUT/summary.md"
}

note() {  # note TEXT: append to the last step's notes
  [ -n "$1" ] || return 0
  local last=$((${#STEPS[@]} - 1)) name result secs peak notes
  IFS='|' read -r name result secs peak notes <<<"${STEPS[$last]}"
  STEPS[last]="$name|$result|$secs|$peak|${notes:+$notes; }${1//|//}"
  summary "running"
}

sampler_start() {  # the GPU's used memory every 250 ms while a step runs (nvidia-smi: the whole process, context too)
  SAMPLER=
  [ "$DEV" != cpu ] && command -v nvidia-smi >/dev/null 2>&1 || return 0
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 </dev/null >"$WORK/memory.txt" 2>&1 &
  SAMPLER=$!
}

sampler_stop() {  # prints the step's peak in MiB, or - without a sampler
  if [ -z "${SAMPLER:-}" ]; then echo "-"; return; fi
  kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null
  grep -E '^ *[0-9]+ *$' "$WORK/memory.txt" | sort -n | tail -1 | tr -d ' ' | grep . || echo "-"
}

step() {  # step KIND NAME TIMEOUT COMMAND...: KIND gate (verify: its exit 1 is a verdict) or plain
  local kind=$1 name=$2 limit=$3; shift 3
  local left=$((BUDGET - (SECONDS - START))) t0=$SECONDS rc=0 result peak cut=0
  if [ "$left" -lt 15 ]; then skip "$name" "the budget ($BUDGET s) is spent"; LAST_RC=125; return; fi
  limit=$((limit * SLOW)); [ "$limit" -le "$left" ] || { limit=$left; cut=1; }
  echo "=== $name (timeout $limit s): $*" | tee -a "$LOG"
  sampler_start
  timeout --kill-after=20 "$limit" "$@" >>"$LOG" 2>&1 || rc=$?
  peak=$(sampler_stop)
  case "$rc" in
    0) result=PASS ;;
    124|137) if [ "$cut" = 1 ]; then result="CUT (the budget ran out after $limit s)";
             else result="TIMEOUT (after $limit s)"; fi ;;
    1) if [ "$kind" = gate ]; then result="GATE (exit 1: the engine failed the gate, a verdict, not a fault)";
       else result="FAIL (exit 1)"; fi ;;
    2) result="REFUSED (exit 2)" ;;
    *) result="CRASH (exit $rc)" ;;
  esac
  if [ "$rc" != 0 ] && ! { [ "$kind" = gate ] && [ "$rc" = 1 ]; }; then tail -n 25 "$LOG"; fi
  echo "=== $name: $result in $((SECONDS - t0)) s" | tee -a "$LOG"
  STEPS+=("$name|$result|$((SECONDS - t0))|$peak|")
  LAST_RC=$rc
  summary "running"
}

skip() { STEPS+=("$1|SKIP: $2|0|-|"); echo "=== $1: skipped ($2)" | tee -a "$LOG"; summary "running"; }

memory_format() {  # the student's memory format retraining chose, from the last step's part of the log
  tac "$LOG" | sed -n '1d;/^=== /q;p' | grep -o 'memory format of the student: [a-z_]*' | head -1 |
    sed 's/.*: /memory format /'
}

notes() {  # notes KIND FILE: one line for the summary from a step's file (epochs: a retrain's history.jsonl)
  "$PY" - "$@" 2>/dev/null <<'PY'
import json, sys
kind, path = sys.argv[1], sys.argv[2]
if kind == "epochs":
    rows = [json.loads(line) for line in open(path) if line.strip()]
    print("epoch seconds " + ", ".join(str(r.get("seconds")) for r in rows))
elif kind == "probe":
    p = json.load(open(path))
    sites = ", ".join(f"{s} x{c}" for s, c in list(p["sync_sites"].items())[:3])
    text = (f"host syncs per step {p['syncs_per_step']}" + (f" at {sites}" if sites else "")) if p["counted"] \
        else "syncs not counted on the CPU"
    if p["first_sync_stack"]:
        text += f"; first (error mode) at {p['first_sync_stack'][-1]}"
    if p["memory_format"]:
        text += f"; memory format {p['memory_format']}"
    if p["peak_gpu_mib"]:
        text += f"; peak {p['peak_gpu_mib']} MiB allocated"
    print(text + (f"; {p['error']}" if p["error"] else ""))
elif kind == "verify":
    v = json.load(open(path))
    failed = [f"{c['name']} {c['value']} {c['rule']} {c['limit']}" for c in v["checks"] if not c["passed"]]
    print(f"agreement {v['agreement_pct']}%" + (f"; failed: {', '.join(failed)}" if failed else "; every check passed"))
elif kind == "speed":
    rows = json.load(open(path))["objectives"]["rows"]
    pgd = [r for r in rows if r["objective"] == "PGD-10" and r["teacher"] == "cached clean input"]
    print("PGD-10 + cached teacher, img/s (fastest batch): " + ", ".join(
        f"{r['precision']} {r['images_per_s_fastest']:.0f}" for r in pgd))
elif kind == "bench":
    b = json.load(open(path))
    pairs = ", ".join(f"batch {r['batch']} {r['p50_ms']} / {q['p50_ms']}" for r, q in zip(b["rows"],
                                                                                      b["reference_rows"]))
    print(f"p50 ms {b['engine']['provider']} / {b['reference_engine']['provider']}: {pairs}")
PY
}

run() {
  OUT=${1:-$HERE/out}
  DEV=${GPU_CHECK_DEVICE:-cuda}
  PY=${GPU_CHECK_PYTHON:-python3}
  WORK=${GPU_CHECK_WORK:-${TMPDIR:-/tmp}/rnascl-gpu-check}
  if [ "$DEV" = cpu ]; then SLOW=8; BUDGET=${GPU_CHECK_BUDGET:-2400}; else SLOW=1; BUDGET=${GPU_CHECK_BUDGET:-330}; fi
  COMMIT=$(git rev-parse --short HEAD 2>/dev/null) || COMMIT=unknown
  [ "$COMMIT" = unknown ] || git diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT with local changes"
  mkdir -p "$OUT" || exit 2
  OUT=$(realpath "$OUT") && WORK=$(realpath -m "$WORK") || exit 2
  case "$WORK/" in "$OUT/"*) echo "gpu-check: the work directory $WORK lies inside OUT ($OUT), of which only a" \
    "few files come back; set GPU_CHECK_WORK elsewhere" >&2; exit 2 ;; esac
  case "$OUT/" in "$WORK/"*) echo "gpu-check: OUT ($OUT) lies inside the work directory $WORK, which is emptied" \
    "first; set GPU_CHECK_WORK elsewhere" >&2; exit 2 ;; esac
  if [ -e "$WORK" ] && [ ! -e "$WORK/.rnascl-gpu-check" ] && [ -n "$(ls -A "$WORK" 2>/dev/null)" ]; then
    echo "gpu-check: $WORK holds files this check did not write, and the check empties its work directory" \
      "first: set GPU_CHECK_WORK to a new directory" >&2; exit 2
  fi
  rm -rf "$WORK" && mkdir -p "$WORK" && touch "$WORK/.rnascl-gpu-check" || exit 2
  for f in summary.md gpu-check.log environment.txt teacher-eval.json metrics.json probe.json bench.json \
           train-speed.json; do rm -f "${OUT:?}/$f"; done
  LOG=$OUT/gpu-check.log
  : >"$LOG"
  export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  summary "starting"
  "$PY" -c "import fvcore" 2>/dev/null || "$PY" -m pip install --no-index --no-build-isolation \
    --find-links "$HERE/wheels" "${WHEELS[@]}" >>"$LOG" 2>&1 || echo "gpu-check: fvcore did not install (see $LOG)"
  local cli=("$PY" -m rnascl_deploy) data=() run=$WORK/run gpu=1
  [ "$DEV" != cpu ] || gpu=0
  ! ls "$HERE"/data/*-ubyte.gz >/dev/null 2>&1 || data=(--set "data.root=$PWD/$HERE/data")
  # sizes: on a GPU the seconds-long versions of each step; on the CPU the same steps, smaller
  local n_teacher=1000 n_search=4096 n_retrain=8192 n_eval=500 n_verify=300 speed=(--batch 512 --rounds 5)
  local precisions=fp32,bf16,fp16 probe_precision=fp16
  if [ "$gpu" = 0 ]; then
    n_teacher=200 n_search=1024 n_retrain=2048 n_eval=200 n_verify=100 speed=(--batch 128 --rounds 2)
    precisions=fp32,bf16 probe_precision=fp32
  fi

  step plain environment 60 "$PY" - "$OUT/environment.txt" "$DEV" <<'PY'
import json, platform, shutil, subprocess, sys
import torch, onnxruntime
out, dev = sys.argv[1], sys.argv[2]
lines = []
def say(text, summary=False):
    print(text)
    lines.append(("SUMMARY " if summary else "") + text)
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
say(f"python {platform.python_version()}; torch {torch.__version__} (CUDA {torch.version.cuda}), GPU {gpu}; "
    f"onnxruntime {onnxruntime.__version__} {onnxruntime.get_available_providers()}", summary=True)
try:
    import tensorrt
    trt = tensorrt.__version__
except Exception as exc:  # absent, or its libraries do not load
    trt = f"not usable ({type(exc).__name__})"
from rnascl_deploy.engines.onnxrt import ort_tensorrt_major
major = ort_tensorrt_major()
say(f"tensorrt {trt}; onnxruntime's TensorRT provider: " + (f"links TensorRT {major}" if major is not None
    else "no library here, or not one TensorRT version in it"), summary=True)
def get(path):
    obj = torch.backends
    for name in path.split("."):
        obj = getattr(obj, name, None)
    return obj
flags = {k: get(k) for k in ("cudnn.enabled", "cudnn.benchmark", "cudnn.deterministic", "cudnn.conv.fp32_precision",
                             "cuda.matmul.fp32_precision", "fp32_precision")}
flags["deterministic_algorithms"] = torch.are_deterministic_algorithms_enabled()
say("torch.backends at start: " + json.dumps(flags), summary=True)
if shutil.which("nvidia-smi"):
    for cmd in (["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit,"
                 "persistence_mode,compute_mode", "--format=csv"], ["nvidia-smi"]):
        res = subprocess.run(cmd, capture_output=True, text=True)
        say("$ " + " ".join(cmd) + "\n" + res.stdout + res.stderr)
else:
    say("nvidia-smi: not found")
open(out, "w").write("\n".join(lines) + "\n")
assert dev == "cpu" or torch.cuda.is_available(), "no GPU visible to torch"
PY
  [ "$LAST_RC" = 0 ] || { summary "FAILED: no usable environment (see gpu-check.log)"; return 1; }

  step plain "teacher eval ($DEV)" 90 "${cli[@]}" teacher eval builtin:teacher-resnet-fashion-mnist/model.safetensors \
    --test-limit "$n_teacher" --attacks fgsm,pgd20,apgd-ce --device "$DEV" "${data[@]}" --out "$OUT/teacher-eval.json"
  step plain "search ($DEV, bf16)" 90 "${cli[@]}" search --out "$run" --device "$DEV" --train-limit "$n_search" \
    --epochs 1 --set runtime.precision=bf16 "${data[@]}"
  local searched=$LAST_RC
  if [ "$searched" = 0 ]; then  # scratch copies of the searched run for the fp16 retrain and the probe
    cp -a "$run" "$WORK/fp16" && cp -a "$run" "$WORK/probe"
    step plain "retrain ($DEV, bf16, N-FGSM)" 150 "${cli[@]}" retrain "$run" --epochs 2 --train-limit "$n_retrain" \
      --test-limit "$n_eval" --set runtime.precision=bf16 --set retrain.train.adv=n-fgsm --device "$DEV"
    note "$(memory_format)"; note "$(notes epochs "$run/retrain/history.jsonl")"
    cp "$run/metrics.json" "$OUT/metrics.json" 2>/dev/null
  else
    skip "retrain ($DEV, bf16)" "the search did not finish"
  fi
  if [ "$searched" != 0 ]; then skip "retrain (fp16)" "the search did not finish"
  elif [ "$gpu" = 0 ]; then skip "retrain (fp16)" "fp16 training needs a GPU (runtime.precision fp16)"
  else
    step plain "retrain ($DEV, fp16, PGD-10)" 90 "${cli[@]}" retrain "$WORK/fp16" --epochs 1 \
      --train-limit "$((n_retrain / 2))" --test-limit 200 --set runtime.precision=fp16 --device "$DEV"
    note "$(memory_format)"; note "$(notes epochs "$WORK/fp16/retrain/history.jsonl")"
  fi
  if [ "$searched" = 0 ]; then
    step plain "sync-debug probe ($DEV, $probe_precision)" 90 "$PY" scripts/gpu-check-probe.py "$WORK/probe" \
      --device "$DEV" --precision "$probe_precision" --out "$OUT/probe.json"
    note "$(notes probe "$OUT/probe.json")"
  else
    skip "sync-debug probe" "the search did not finish"
  fi

  # the gate without its absolute floor (a two-epoch student is far below it): GATE then means the engine lost
  # accuracy or robustness against its own PyTorch reference
  local nofloor=(--set verify.min_worst_case_pct=null)
  if [ -s "$run/student.safetensors" ]; then
    step plain "export onnx, onnx-fp16 (parity on $DEV)" 90 "${cli[@]}" export "$run" --format onnx \
      --format onnx-fp16 --device "$DEV"
    step plain "export TensorRT graphs (--onnx-only)" 90 "${cli[@]}" export "$run" --format tensorrt-fp16 \
      --format tensorrt-int8 --onnx-only --device "$DEV"
    if [ "$gpu" = 1 ] && "$PY" -c "import tensorrt" 2>/dev/null; then
      step plain "export TensorRT engines" 150 "${cli[@]}" export "$run" --format tensorrt-fp16 --format tensorrt-int8 \
        --device "$DEV"
      step gate "verify TensorRT fp16" 120 "${cli[@]}" verify "$run" --engine "$run/engines/student-fp16.engine" \
        --test-limit "$n_verify" --device "$DEV" "${nofloor[@]}"
      note "$(notes verify "$run/verify/student-fp16.engine.json")"
    else
      skip "TensorRT engines" "tensorrt does not import here (or no GPU)"
    fi
    # no --provider: onnxruntime's follows --device (CUDA where onnxruntime has it; the log says which)
    step gate "verify student.onnx ($DEV)" 120 "${cli[@]}" verify "$run" --engine "$run/engines/student.onnx" \
      --test-limit "$n_verify" --device "$DEV" "${nofloor[@]}"
    note "$(notes verify "$run/verify/student.onnx.json")"
    step gate "verify student-fp16.onnx ($DEV)" 120 "${cli[@]}" verify "$run" \
      --engine "$run/engines/student-fp16.onnx" --test-limit "$n_verify" --device "$DEV" "${nofloor[@]}"
    note "$(notes verify "$run/verify/student-fp16.onnx.json")"
    step plain "bench student.onnx vs PyTorch ($DEV, interleaved)" 60 "${cli[@]}" bench "$run" \
      --engine "$run/engines/student.onnx" --batch 1,64,1024 --device "$DEV" --out "$WORK/bench"
    ! cp "$WORK/bench/student.onnx.json" "$OUT/bench.json" 2>/dev/null || note "$(notes bench "$OUT/bench.json")"
  else
    skip "export, verify, bench" "no student (retrain did not finish)"
  fi
  [ "${#data[@]}" = 0 ] || speed+=(--data-root "$PWD/$HERE/data")
  step plain "train speed ($DEV, $precisions)" 120 "$PY" benchmarks/bench_train_speed.py --only objectives \
    --device "$DEV" --precisions "$precisions" "${speed[@]}" --out "$OUT/train-speed.json"
  note "$(notes speed "$OUT/train-speed.json")"

  local files bad=() short=() s
  files=$(find "$OUT" -type f | wc -l)
  if [ "$files" -gt "$MAX_FILES" ]; then
    STEPS+=("files in OUT|FAIL ($files files; at most $MAX_FILES come back)|0|-|$(find "$OUT" -type f | tr '\n' ' ')")
  fi
  for s in "${STEPS[@]}"; do
    case "$(cut -d'|' -f2 <<<"$s")" in
      FAIL*|REFUSED*|CRASH*|TIMEOUT*) bad+=("$(cut -d'|' -f1 <<<"$s")") ;;
      CUT*|"SKIP: the budget"*) short+=("$(cut -d'|' -f1 <<<"$s")") ;;
    esac
  done
  if [ "${#bad[@]}" != 0 ]; then summary "FAILED in $((SECONDS - START)) s: $(IFS=,; echo "${bad[*]}")"
  elif [ "${#short[@]}" != 0 ]; then
    summary "INCOMPLETE in $((SECONDS - START)) s: the budget cut $(IFS=,; echo "${short[*]}")"
  else summary "PASSED in $((SECONDS - START)) s"; fi
  cat "$OUT/summary.md"
  if [ "${#bad[@]}" != 0 ]; then return 1; elif [ "${#short[@]}" != 0 ]; then return 3; fi
}

case "${1:-}" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  *) sed -n '2,24p' "$0"; [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ] || exit 2 ;;
esac
