# shellcheck shell=bash
# Source this from .ci/run (`source .ci/nvrtc.sh`): installs NVRTC and the CUDA fp16/bf16 headers from
# PyPI into target/nvrtc-venv (no GPU or CUDA toolkit needed) and exports CULTUREMERT_NVRTC and
# CULTUREMERT_CUDA_INCLUDE, so build.rs compiles every kernel to CUBIN for sm_80 and sm_90.
# Then `nvrtc_check_spills` fails on any register spill.

_nvrtc_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_nvrtc_venv="$_nvrtc_root/target/nvrtc-venv"

if ! ls "$_nvrtc_venv"/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.* >/dev/null 2>&1 ||
   ! ls -d "$_nvrtc_venv"/lib/python3*/site-packages/nvidia/cuda_runtime/include >/dev/null 2>&1; then
  echo "nvrtc.sh: installing nvidia-cuda-nvrtc-cu12 and nvidia-cuda-runtime-cu12 into $_nvrtc_venv" >&2
  python3 -m venv "$_nvrtc_venv" || return 1 2>/dev/null || exit 1
  "$_nvrtc_venv/bin/pip" install --quiet --disable-pip-version-check \
    nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12 || return 1 2>/dev/null || exit 1
fi

_nvrtc_site="$(ls -d "$_nvrtc_venv"/lib/python3*/site-packages | head -n 1)"
CULTUREMERT_NVRTC="$(ls "$_nvrtc_site"/nvidia/cuda_nvrtc/lib/libnvrtc.so.* | grep -v builtins | head -n 1)"
CULTUREMERT_CUDA_INCLUDE="$_nvrtc_site/nvidia/cuda_runtime/include"
export CULTUREMERT_NVRTC CULTUREMERT_CUDA_INCLUDE
echo "nvrtc.sh: CULTUREMERT_NVRTC=$CULTUREMERT_NVRTC" >&2

# Compiles every kernel for sm_80 and sm_90 with ptxas -v and fails on any spill (or compile error).
nvrtc_check_spills() {
  local out status
  out="$(cargo run --quiet --bin culturemert-raw -- kernels --arch sm_80 --arch sm_90)"
  status=$?
  printf '%s\n' "$out"
  if [ $status -ne 0 ]; then
    echo "nvrtc_check_spills: kernel compilation failed" >&2
    return 1
  fi
  if printf '%s\n' "$out" | grep -E 'spill_(stores|loads)=[1-9]' >&2; then
    echo "nvrtc_check_spills: register spills above" >&2
    return 1
  fi
  if ! printf '%s\n' "$out" | grep -q '^sm_90 '; then
    echo "nvrtc_check_spills: no kernel statistics printed" >&2
    return 1
  fi
  echo "nvrtc_check_spills: no spills on sm_80 / sm_90" >&2
}

# The emulator kernel tests again with the emulator (C++ runtime + kernels) built with
# AddressSanitizer, in a separate target dir so the normal build is not invalidated. The ASan
# runtime is preloaded into the test binaries only (through a cargo runner), not into cargo.
kernel_asan_tests() {
  local asan_lib
  asan_lib="$(g++ -print-file-name=libasan.so)"
  CULTUREMERT_EMU_ASAN=1 CARGO_TARGET_DIR="$_nvrtc_root/target/asan" \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="env LD_PRELOAD=$asan_lib ASAN_OPTIONS=detect_leaks=0" \
    cargo test --test emu_checks --test emu_kernels --test emu_kernels_model --test emu_kernels_layout \
      --test emu_kernels_nce --test emu_kernels_cqt --test emu_kernels_tc --test emu_kernels_reduce "$@"
}
