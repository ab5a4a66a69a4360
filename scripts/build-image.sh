#!/usr/bin/env bash
# Build the rnascl-deploy image and run its smoke job. See docs/ci.md; `make image` runs the CPU build.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/build-image.sh [OPTIONS]

Build the rnascl-deploy image (Dockerfile) with `docker build` where a Docker daemon answers, else with buildah
(`buildah bud --isolation chroot`), then run the smoke job inside it.

The host's pip configuration (`pip config list`: indexes, find-links, constraints) and CA bundle go into the
build as build secrets, never into a layer; local directories it names are mounted read-only (buildah only).
Where the base image cannot be pulled, a debian:bookworm* base is made from Debian's packages
(debootstrap --variant=minbase) and imported under the base's name (buildah from scratch + commit, or docker import).

Prerequisites are checked before any work, and every missing one is named in one message with the Debian package
that provides it (exit 2): buildah (or a Docker daemon), python3, debootstrap and root (only to make the base),
git (--git), curl (GPU variant, --tensorrt auto). --install-prereqs installs them with apt-get first (as root).

Smoke job (the run directory is mounted from the host at /runs): `rnascl-deploy run` on a tiny recipe must exit
0 and leave report.md and the verify JUnit file on the host; `verify --junit` must exit 0; a bad budget must exit
2. The GPU image also shows torch's CUDA build and onnxruntime-gpu, runs scripts/gpu-smoke.py (with --gpus it
must compute on the host's GPU; without, it only says whether it did), and `export --format tensorrt-fp16` must
exit 2 without a traceback where TensorRT is not installed.

Options:
  --variant cpu|gpu       image variant (default: cpu)
  --tag NAME              image name (default: rnascl-deploy:VARIANT)
  --base IMAGE            base image (default: debian:bookworm-slim; python:3.11-slim-bookworm works too)
  --tensorrt auto|yes|no  GPU variant: install TensorRT from NVIDIA's index (auto: when that index answers)
  --tensorrt-index URL    NVIDIA's package index (default: https://pypi.nvidia.com)
  --builder auto|docker|buildah
                          (default: auto = docker if `docker info` answers, else buildah)
  --runs DIR              host directory of the smoke job's runs (default: /var/tmp/rnascl-image/runs-VARIANT;
                          emptied first)
  --git REV               build from a clean `git archive REV` (e.g. HEAD) instead of the working tree
  --no-smoke              build only
  --gpus                  GPU variant: give the smoke job the host's GPUs (docker run --gpus all; buildah run
                          --device nvidia.com/gpu=all, a CDI spec from the NVIDIA Container Toolkit) and require
                          scripts/gpu-smoke.py to compute on them
  --smoke-only            skip the build; run the smoke job on an existing image
  --ca-bundle FILE        CA bundle for pip in the build (default: pip's `cert`, else $SSL_CERT_FILE, else
                          /etc/ssl/certs/ca-certificates.crt)
  --check                 check the prerequisites of this build and exit (0: all present, 2: some missing)
  --install-prereqs       install missing prerequisites with apt-get before building (root only; also
                          RNASCL_INSTALL_PREREQS=1, e.g. `RNASCL_INSTALL_PREREQS=1 make image`)
  -h, --help              show this help

Exit codes: 0 built and smoke job passed (--check: prerequisites present); 1 a build or smoke step failed; 2 bad
option or missing prerequisite.
EOF
}

die_usage() { echo "build-image: $1 (see --help)" >&2; exit 2; }
log() { echo "build-image: $*" >&2; }

VARIANT=cpu TAG="" BASE=debian:bookworm-slim TENSORRT_MODE=auto TENSORRT_INDEX=https://pypi.nvidia.com
BUILDER=auto RUNS="" SMOKE=1 BUILD=1 CA_BUNDLE="" GIT_REV="" CHECK_ONLY=0 GPUS=0
INSTALL_PREREQS=${RNASCL_INSTALL_PREREQS:-0}
while [ $# -gt 0 ]; do
  case "$1" in
    --variant) [ $# -ge 2 ] || die_usage "--variant needs a value"; VARIANT=$2; shift 2 ;;
    --tag) [ $# -ge 2 ] || die_usage "--tag needs a value"; TAG=$2; shift 2 ;;
    --base) [ $# -ge 2 ] || die_usage "--base needs a value"; BASE=$2; shift 2 ;;
    --tensorrt) [ $# -ge 2 ] || die_usage "--tensorrt needs a value"; TENSORRT_MODE=$2; shift 2 ;;
    --tensorrt-index) [ $# -ge 2 ] || die_usage "--tensorrt-index needs a value"; TENSORRT_INDEX=$2; shift 2 ;;
    --builder) [ $# -ge 2 ] || die_usage "--builder needs a value"; BUILDER=$2; shift 2 ;;
    --runs) [ $# -ge 2 ] || die_usage "--runs needs a value"; RUNS=$2; shift 2 ;;
    --ca-bundle) [ $# -ge 2 ] || die_usage "--ca-bundle needs a value"; CA_BUNDLE=$2; shift 2 ;;
    --git) [ $# -ge 2 ] || die_usage "--git needs a value"; GIT_REV=$2; shift 2 ;;
    --no-smoke) SMOKE=0; shift ;;
    --gpus) GPUS=1; shift ;;
    --smoke-only) BUILD=0; shift ;;
    --check) CHECK_ONLY=1; shift ;;
    --install-prereqs) INSTALL_PREREQS=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die_usage "unknown option '$1'" ;;
  esac
done
case "$VARIANT" in cpu|gpu) ;; *) die_usage "--variant must be cpu or gpu, not '$VARIANT'" ;; esac
[ "$GPUS" = 0 ] || [ "$VARIANT" = gpu ] || die_usage "--gpus is for --variant gpu"
case "$TENSORRT_MODE" in auto|yes|no) ;; *) die_usage "--tensorrt must be auto, yes or no, not '$TENSORRT_MODE'" ;; esac
case "$BUILDER" in auto|docker|buildah) ;; *) die_usage "--builder must be auto, docker or buildah, not '$BUILDER'" ;; esac
case "$INSTALL_PREREQS" in 0|1) ;; *) die_usage "RNASCL_INSTALL_PREREQS must be 0 or 1, not '$INSTALL_PREREQS'" ;; esac
TAG=${TAG:-rnascl-deploy:$VARIANT}
RUNS=${RUNS:-/var/tmp/rnascl-image/runs-$VARIANT}
cd "$(dirname "$0")/.."

image_exists() {
  if [ "$BUILDER" = docker ]; then docker image inspect "$1" >/dev/null 2>&1
  else buildah inspect --type image "$1" >/dev/null 2>&1; fi
}

have() { command -v "$1" >/dev/null 2>&1; }

# Prerequisites, every one checked before any work. PROBLEMS collects "TOOL|DEBIAN PACKAGE|what it is needed for".
PROBLEMS=()
need() { have "$1" || PROBLEMS+=("$1|$2|$3"); }

# Whether Docker Hub answers (through the proxy settings, as a pull would): a 401 is an answer.
registry_answers() {
  local url=https://registry-1.docker.io/v2/
  if have curl; then curl -sS -m 10 -o /dev/null "$url" 2>/dev/null
  elif have python3; then
    python3 -c 'import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=10)
except urllib.error.HTTPError:
    pass' "$url" 2>/dev/null
  else return 1; fi
}

check_prereqs() {
  PROBLEMS=()
  if [ "$BUILDER" = auto ]; then
    if have docker && docker info >/dev/null 2>&1; then BUILDER=docker; else BUILDER=buildah; fi
  fi
  if [ "$BUILDER" = buildah ]; then
    need buildah buildah "builds the image (buildah bud --isolation chroot), runs the smoke job (or start Docker)"
  elif ! have docker; then
    PROBLEMS+=("docker|docker.io|builds the image and runs the smoke job (--builder docker)")
  elif ! docker info >/dev/null 2>&1; then
    PROBLEMS+=("docker daemon|-|does not answer \`docker info\`: start it, or use --builder buildah")
  fi
  [ "$BUILD" = 1 ] || return 0
  need python3 python3 "writes the build's pip configuration"
  [ -z "$GIT_REV" ] || need git git "exports the build context (--git $GIT_REV)"
  if [ "$VARIANT" = gpu ] && [ "$TENSORRT_MODE" = auto ]; then
    need curl curl "asks NVIDIA's index whether to install TensorRT (--tensorrt auto)"
  fi
  # The base: made with debootstrap (as root) only where it is in no local storage and Docker Hub does not answer.
  case "$BASE" in debian:bookworm*|docker.io/library/debian:bookworm*) ;; *) return 0 ;; esac
  if have "$BUILDER" && image_exists "$BASE"; then return 0; fi
  if have debootstrap && [ "$(id -u)" -eq 0 ]; then return 0; fi
  registry_answers && return 0
  local why="makes the base $BASE (in no local storage; registry-1.docker.io does not answer)"
  need debootstrap debootstrap "$why"
  [ "$(id -u)" -eq 0 ] || PROBLEMS+=("root|-|debootstrap runs only as root: it $why")
}

# The Debian packages of the problems that a package fixes, one each.
missing_packages() {
  local entry tool pkg why
  for entry in "${PROBLEMS[@]}"; do IFS='|' read -r tool pkg why <<<"$entry"; [ "$pkg" = - ] || echo "$pkg"; done \
    | awk '!seen[$0]++' | tr '\n' ' ' | sed 's/ $//'
}

report_problems() {
  local entry tool pkg why pkgs
  log "missing prerequisites of this build (nothing was done):"
  for entry in "${PROBLEMS[@]}"; do
    IFS='|' read -r tool pkg why <<<"$entry"
    printf '    %-14s %s\n' "$tool" "$why" >&2
  done
  pkgs=$(missing_packages)
  if [ -n "$pkgs" ]; then
    log "install them: apt-get install $pkgs (as root; or rerun with --install-prereqs, or RNASCL_INSTALL_PREREQS=1)"
  fi
}

install_prereqs() {
  local pkgs
  pkgs=$(missing_packages)
  [ -n "$pkgs" ] || { report_problems; exit 2; }
  if [ "$(id -u)" -ne 0 ]; then
    report_problems; log "--install-prereqs: not root; install them with: sudo apt-get install $pkgs"; exit 2
  fi
  if ! have apt-get; then
    report_problems; log "--install-prereqs: no apt-get here; install $pkgs with this system's package manager"; exit 2
  fi
  log "installing prerequisites: apt-get install $pkgs"
  # shellcheck disable=SC2086
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs; } >&2 \
    || { log "apt-get install $pkgs failed"; exit 2; }
}

check_prereqs
if [ "${#PROBLEMS[@]}" -gt 0 ] && [ "$INSTALL_PREREQS" = 1 ]; then install_prereqs; check_prereqs; fi
if [ "${#PROBLEMS[@]}" -gt 0 ]; then report_problems; exit 2; fi
log "builder: $BUILDER; prerequisites present"
[ "$CHECK_ONLY" = 0 ] || exit 0

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/rnascl-image.XXXXXX")
CTR=""
cleanup() {
  if [ -n "$CTR" ]; then buildah rm "$CTR" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# The base: present, pulled, or made from Debian's packages under the base's name.
ensure_base() {
  if image_exists "$BASE"; then log "base $BASE: present"; return; fi
  log "base $BASE: pulling"
  if [ "$BUILDER" = docker ]; then timeout 120 docker pull "$BASE" >/dev/null 2>&1 && return
  else timeout 120 buildah pull "$BASE" >/dev/null 2>&1 && return; fi
  case "$BASE" in
    debian:bookworm*|docker.io/library/debian:bookworm*) ;;
    *) log "base $BASE cannot be pulled, and only a debian:bookworm base can be made here (use --base debian:bookworm-slim)"
       exit 1 ;;
  esac
  # Reached where the prerequisite check saw Docker Hub answer, and the pull failed all the same.
  if ! have debootstrap || [ "$(id -u)" -ne 0 ]; then
    log "base $BASE cannot be pulled; making it needs debootstrap (apt-get install debootstrap), run as root"; exit 2
  fi
  local root="$WORK/rootfs" name="docker.io/library/${BASE#docker.io/library/}"
  log "base $BASE cannot be pulled: making it with debootstrap --variant=minbase bookworm (Debian's packages)"
  local t0=$SECONDS
  debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; log "debootstrap failed"; exit 1; }
  cat >"$root/etc/apt/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c -f "$WORK/rootfs.tar" . && rm -rf "$root"
  if [ "$BUILDER" = docker ]; then docker import --change 'CMD ["bash"]' "$WORK/rootfs.tar" "$name" >/dev/null
  else
    # buildah alone imports it: `buildah add` extracts a tarball keeping its owners and modes (adding the directory
    # itself would give every file to root:root, /etc/shadow's group shadow included).
    CTR=$(buildah from scratch)
    buildah add --quiet "$CTR" "$WORK/rootfs.tar" / >/dev/null
    buildah config --cmd '["bash"]' "$CTR"
    buildah commit --quiet --rm "$CTR" "$name" >/dev/null
    CTR=""
  fi
  rm -f "$WORK/rootfs.tar"
  log "base $name: made from Debian bookworm in $((SECONDS - t0)) s"
}

# pip configuration for the build: the host's settings, cert pointing at the CA secret. Local paths (find-links,
# file:// indexes, constraint files) are mounted read-only with buildah; Docker cannot mount host paths into a
# build, so they are dropped there. The GPU build drops find-links (a CPU wheelhouse would give torch 2.13.0+cpu).
write_pip_conf() {
  python3 - "$WORK/pip.conf" "$WORK/mounts" "$BUILDER" "$VARIANT" <<'EOF'
import os, re, subprocess, sys
conf_path, mounts_path, builder, variant = sys.argv[1:]
try:
    lines = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
except OSError:
    lines = ""
settings = {}
for line in lines.splitlines():
    m = re.match(r"^([^.]*)\.([\w-]+)='(.*)'$", line)
    if not m:
        continue
    key, value = m.group(2).replace("_", "-"), m.group(3)
    if key in ("cert", "client-cert", "cache-dir", "target", "prefix", "user", "require-virtualenv"):
        continue
    if key in ("find-links", "extra-index-url", "trusted-host", "constraint"):
        merged = settings.setdefault(key, [])
        merged += [v for v in value.split() if v not in merged]
    else:
        settings[key] = [value]
if variant == "gpu":
    settings.pop("find-links", None)
mounts, out = [], ["[global]", "cert = /run/secrets/cacert"]
for key, values in settings.items():
    kept = []
    for v in values:
        path = v[len("file://"):] if v.startswith("file://") else v if v.startswith("/") else None
        if path is None:
            kept.append(v)
        elif builder == "buildah" and os.path.exists(path):
            # A local index's pages (DIR/simple) link to its files beside them (DIR/files): mount DIR.
            mounts.append(os.path.dirname(path.rstrip("/")) if path.rstrip("/").endswith("/simple") else path)
            kept.append(v)
        else:
            print(f"build-image: pip {key} {v}: a host path, not available in a {builder} build; dropped",
                  file=sys.stderr)
    if kept:
        out.append(f"{key} = " + " ".join(kept))
open(conf_path, "w").write("\n".join(out) + "\n")
open(mounts_path, "w").write("".join(f"{p}\n" for p in dict.fromkeys(mounts)))
EOF
}

build() {
  ensure_base
  if [ -z "$CA_BUNDLE" ]; then
    CA_BUNDLE=$(python3 -m pip config get global.cert 2>/dev/null || true)
    [ -n "$CA_BUNDLE" ] || CA_BUNDLE=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
  fi
  [ -f "$CA_BUNDLE" ] || { log "CA bundle $CA_BUNDLE does not exist (--ca-bundle FILE)"; exit 1; }
  write_pip_conf
  log "pip configuration for the build (a secret):"; sed 's/^/    /' "$WORK/pip.conf" >&2

  local cuda=none trt=none
  if [ "$VARIANT" = gpu ]; then
    cuda=13.0
    if [ "$TENSORRT_MODE" = auto ]; then
      if curl -fsS -m 20 -o /dev/null "$TENSORRT_INDEX/tensorrt-cu13/"; then TENSORRT_MODE=yes; else TENSORRT_MODE=no; fi
    fi
    if [ "$TENSORRT_MODE" = yes ]; then
      trt=$(sed -n 's/^tensorrt-cu13==//p' constraints.txt)
    else
      log "TensorRT: OFF (TENSORRT=none): $TENSORRT_INDEX is not reachable or --tensorrt no; the image has no TensorRT"
    fi
  fi
  local args=(--build-arg "BASE=$BASE" --build-arg "VARIANT=$VARIANT" --build-arg "CUDA=$cuda"
              --build-arg "TENSORRT=$trt" --build-arg "TENSORRT_INDEX=$TENSORRT_INDEX"
              --secret "id=pipconf,src=$WORK/pip.conf" --secret "id=cacert,src=$CA_BUNDLE" -t "$TAG")
  local context=.
  if [ -n "$GIT_REV" ]; then  # uncommitted edits stay out of the image
    context="$WORK/context" && mkdir -p "$context"
    git archive "$GIT_REV" | tar -x -C "$context"
    find "$context" -exec touch -h -d @0 {} +   # one fixed mtime: buildah's layer cache sees file times
    log "context: git archive $GIT_REV ($(git rev-parse --short "$GIT_REV"))"
  fi
  local t0=$SECONDS
  if [ "$BUILDER" = docker ]; then
    DOCKER_BUILDKIT=1 docker build "${args[@]}" "$context"
  else
    local vols=() p
    while IFS= read -r p; do vols+=(-v "$p:$p:ro"); done <"$WORK/mounts"
    buildah bud --isolation chroot --layers --format docker "${vols[@]}" "${args[@]}" "$context"
  fi
  log "built $TAG in $((SECONDS - t0)) s"
}

# Run one command in the image with $RUNS mounted at /runs; prints its exit code as the function's status.
in_image() {
  local gpus=()
  if [ "$BUILDER" = docker ]; then
    [ "$GPUS" = 0 ] || gpus=(--gpus all)
    docker run --rm "${gpus[@]}" -v "$RUNS:/runs" --entrypoint "$1" "$TAG" "${@:2}"
  else
    [ "$GPUS" = 0 ] || gpus=(--device nvidia.com/gpu=all)
    buildah run --isolation chroot "${gpus[@]}" -v "$RUNS:/runs" "$CTR" -- "$@"
  fi
}

expect() {  # expect CODE DESCRIPTION COMMAND...
  local want=$1 what=$2 t0=$SECONDS rc=0; shift 2
  in_image "$@" >"$WORK/out.txt" 2>&1 || rc=$?
  log "smoke: $what: exit $rc (expected $want) in $((SECONDS - t0)) s"
  if [ "$rc" != "$want" ] || grep -q '^Traceback' "$WORK/out.txt"; then
    tail -30 "$WORK/out.txt" >&2; log "smoke: FAILED: $what"; exit 1
  fi
}

smoke() {
  image_exists "$TAG" || { log "no image $TAG (build it first)"; exit 1; }
  rm -rf "$RUNS" && mkdir -p "$RUNS"
  [ "$(id -u)" -ne 0 ] || chown 1000:1000 "$RUNS"   # the image's user (uid 1000) writes the runs
  [ "$BUILDER" = docker ] || CTR=$(buildah from --pull=never "$TAG")
  local t0=$SECONDS
  if [ "$VARIANT" = gpu ]; then
    expect 0 "torch CUDA build, onnxruntime-gpu" python -c \
      "import torch, onnxruntime as o; assert torch.version.cuda, torch.__version__; \
assert 'CUDAExecutionProvider' in o.get_available_providers(); \
print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'cuda available:', torch.cuda.is_available(), \
'| onnxruntime', o.__version__, o.get_available_providers())"
    cat "$WORK/out.txt" >&2
    local allow_cpu=(--allow-cpu)
    [ "$GPUS" = 0 ] || allow_cpu=()
    expect 0 "GPU smoke (scripts/gpu-smoke.py${allow_cpu:+, no GPU required})" python scripts/gpu-smoke.py \
      "${allow_cpu[@]}"
    tail -1 "$WORK/out.txt" | sed 's/^/    /' >&2
  fi
  expect 0 "tiny pipeline (run)" rnascl-deploy run --budget 600K --out /runs/smoke \
    --set search.limit=512 --set search.epochs=1 --set retrain.train.epochs=1 --set retrain.limit=512 \
    --set retrain.eval_limit=200 --set verify.limit=100 --set 'attack.attacks=[fgsm,pgd20]' \
    --set 'verify.attacks=[pgd20]' --set attack.square_queries=20 --set verify.min_worst_case_pct=null \
    --set 'export.bench_batches=[1]'
  for f in report.md engines/student.onnx verify/student.onnx.xml; do
    [ -s "$RUNS/smoke/$f" ] || { log "smoke: FAILED: $RUNS/smoke/$f missing on the host"; exit 1; }
  done
  expect 0 "verify --junit (the CI gate)" rnascl-deploy verify /runs/smoke \
    --engine /runs/smoke/engines/student.onnx --out /runs/smoke/verify-ci --junit /runs/smoke/verify.xml
  [ -s "$RUNS/smoke/verify.xml" ] || { log "smoke: FAILED: $RUNS/smoke/verify.xml missing on the host"; exit 1; }
  expect 2 "bad budget (1K)" rnascl-deploy run --budget 1K --out /runs/bad-budget
  head -3 "$WORK/out.txt" | sed 's/^/    /' >&2
  if [ "$VARIANT" = gpu ] && ! in_image python -c "import tensorrt" >/dev/null 2>&1; then
    expect 2 "export --format tensorrt-fp16 without TensorRT" rnascl-deploy export /runs/smoke --format tensorrt-fp16
    tail -3 "$WORK/out.txt" | sed 's/^/    /' >&2
  fi
  log "smoke job passed in $((SECONDS - t0)) s; run directory on the host: $RUNS/smoke"
  (cd "$RUNS/smoke" && find . -maxdepth 2 | sort | sed 's/^/    /') >&2
}

[ "$BUILD" = 0 ] || build
if [ "$BUILDER" = docker ]; then size=$(docker image inspect -f '{{.Size}}' "$TAG")
else size=$(buildah images --format '{{.Size}}' "$TAG" | head -1); fi
log "image $TAG: $size"
[ "$SMOKE" = 0 ] || smoke
