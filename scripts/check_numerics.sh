#!/usr/bin/env bash
# The numerics-sensitive tests (pytest marker `numerics`, listed in docs/numerics.md) under each CPU kernel set that
# this machine can run: the default, then oneDNN capped at AVX512_CORE_BF16 (AMD EPYC/Zen 4, Cooper Lake),
# AVX512_CORE (Skylake-X/Cascade Lake: bf16 emulated) and AVX2 (laptops; no bf16, so precision "auto" means fp32).
# A tolerance that holds here only for this CPU's kernels fails under another cap. Run it before you stop; it is
# not part of CI (about 2 minutes a run, 9 minutes in all, on 2 cores).
#
# The switches: torch's convolutions run in oneDNN, which honours ONEDNN_MAX_CPU_ISA (with torch 2.13 / oneDNN
# 3.12, ONEDNN_VERBOSE=1 reports "isa:Intel AVX2" and jit:avx2 / brg_conv_fwd:avx2 convolutions under AVX2; this
# script prints the ISA and a convolution's kernel for each run). The AVX2 run also sets ATEN_CPU_CAPABILITY=avx2,
# which ATen's own vectorised kernels (softmax, batch norm, reductions) and torch.compile's generated C++ follow.
# AMX kernels (Intel Sapphire Rapids and later) cannot be emulated: only a CPU with AMX runs them, as its default.
# Each run compiles into its own TORCHINDUCTOR_CACHE_DIR: inductor's on-disk cache does not key its kernels by
# ATEN_CPU_CAPABILITY, and a kernel compiled under one capability, reused under another, computes garbage or crashes.
#
# Usage: bash scripts/check_numerics.sh [extra pytest arguments]    (PYTHON=... to use another interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "

has() {  # has FLAG...: the CPU has every one of them
    local flag
    for flag in "$@"; do
        [[ $flags == *" $flag "* ]] || return 1
    done
}

onednn_isa() {  # the instruction set oneDNN reports, and the kernel of a convolution, under the environment given
    env "$@" ONEDNN_VERBOSE=1 "$python" -c \
        'import torch; torch.nn.functional.conv2d(torch.ones(1, 4, 92, 92), torch.ones(8, 4, 3, 3))' 2>&1 |
        sed -n -e 's/.*info,cpu,isa://p' -e 's/.*exec,cpu,convolution,\([^,]*\),.*/convolution \1/p' | paste -sd ';'
}

runs=("default|")
has avx512_bf16 avx512bw avx512vl avx512dq && runs+=("AVX512_CORE_BF16|ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16")
has avx512f avx512bw avx512vl avx512dq && runs+=("AVX512_CORE|ONEDNN_MAX_CPU_ISA=AVX512_CORE")
has avx2 fma && runs+=("AVX2|ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2")

summary=() status=0
for run in "${runs[@]}"; do
    name=${run%%|*}
    read -r -a environment <<< "${run#*|}"
    isa=$(onednn_isa "${environment[@]}")
    echo "=== $name: ${environment[*]:-no cap} (oneDNN: ${isa:-not reported})"
    log=$(mktemp) cache=$(mktemp -d)
    env "${environment[@]}" TORCHINDUCTOR_CACHE_DIR="$cache" "$python" -m pytest -m numerics -q -p no:cacheprovider \
        "$@" 2>&1 | tee "$log"
    code=${PIPESTATUS[0]}
    summary+=("$(printf '%-17s rc=%d  %s' "$name" "$code" "$(grep -E '(passed|failed|error)' "$log" | tail -n 1)")")
    rm -rf "$log" "$cache"
    [[ $code -eq 0 ]] || status=1
done
for skipped in "AVX512_CORE_BF16:avx512_bf16" "AVX512_CORE:avx512bw" "AVX2:avx2"; do
    has "${skipped#*:}" || summary+=("${skipped%%:*}: skipped, this CPU has no ${skipped#*:}")
done

echo "=== summary (CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
printf '%s\n' "${summary[@]}"
exit $status
