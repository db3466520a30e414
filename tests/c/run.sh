#!/usr/bin/env bash
# Build and run the C-level kernel tests (tests/c/test_*.c): every kernel on
# every path this CPU runs, against its naive twin.  With SANITIZE=1 (as in
# .ci/run) everything is built with -fsanitize=address,undefined.
#
#   bash tests/c/run.sh            # plain -O2 build
#   SANITIZE=1 bash tests/c/run.sh # AddressSanitizer + UBSan
#
# Sources are found as setup.py finds them: every csrc/**/*.c is compiled once
# per path (-DPT_ISA=0, 1, 2), except the run-time files compiled once.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${PT_CTEST_BUILD:-$here/build${SANITIZE:+-san}}"
mkdir -p "$out"
CC="${CC:-gcc}"
flags=(-O2 -g -std=c11 -Wall -Wno-unused-function -Wno-unknown-pragmas -fopenmp -I"$root/csrc")
if [[ "${SANITIZE:-0}" == 1 ]]; then
    flags+=(-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
fi
isa_flags=(""  "-mavx2 -mfma -mf16c"
           "-mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx2 -mfma -mf16c")
once=(runtime/cpu.c runtime/mem.c layers/decoder_layer.c layers/llama_layer.c layers/stack.c)   # layers/: composed through the table
dot=(gemm/gemm_bf16_dot.c runtime/peak_bf16.c)   # once, avx512 + -mavx512bf16
amx=(gemm/gemm_bf16_amx.c gemm/gemm_i8_amx.c runtime/peak_amx.c)  # once, avx512 + AMX flags
vnni=(gemm/gemm_i8_vnni.c runtime/peak_vnni.c)     # once, avx512 + -mavx512vnni
objs=()
while IFS= read -r rel; do
    name="${rel%.c}"
    name="${name//\//_}"                       # gemm/pack.c -> gemm_pack
    if [[ " ${once[*]} " == *" $rel "* ]]; then
        "$CC" "${flags[@]}" -DPT_HAVE_X86=1 -DPT_HAVE_BF16_DOT=1 -DPT_HAVE_VNNI=1 -DPT_HAVE_AMX=1 -c "$root/csrc/$rel" \
            -o "$out/$name.o"
        objs+=("$out/$name.o")
        continue
    fi
    if [[ " ${dot[*]} " == *" $rel "* ]]; then
        # shellcheck disable=SC2086
        "$CC" "${flags[@]}" ${isa_flags[2]} -mavx512bf16 -DPT_ISA=2 -c "$root/csrc/$rel" \
            -o "$out/$name.o"
        objs+=("$out/$name.o")
        continue
    fi
    if [[ " ${vnni[*]} " == *" $rel "* ]]; then
        # shellcheck disable=SC2086
        "$CC" "${flags[@]}" ${isa_flags[2]} -mavx512vnni -DPT_ISA=2 -c "$root/csrc/$rel" \
            -o "$out/$name.o"
        objs+=("$out/$name.o")
        continue
    fi
    if [[ " ${amx[*]} " == *" $rel "* ]]; then
        # shellcheck disable=SC2086
        "$CC" "${flags[@]}" ${isa_flags[2]} -mamx-tile -mamx-bf16 -mamx-int8 -DPT_ISA=2 -c "$root/csrc/$rel" \
            -o "$out/$name.o"
        objs+=("$out/$name.o")
        continue
    fi
    for isa in 0 1 2; do
        # shellcheck disable=SC2086
        "$CC" "${flags[@]}" ${isa_flags[$isa]} -DPT_ISA=$isa -c "$root/csrc/$rel" \
            -o "$out/${name}_$isa.o"
        objs+=("$out/${name}_$isa.o")
    done
done < <(cd "$root/csrc" && find . -name '*.c' | sed 's#^\./##' | LC_ALL=C sort)
"$CC" "${flags[@]}" -c "$here/harness.c" -o "$out/harness.o"
status=0
for t in "$here"/test_*.c; do
    name="$(basename "$t" .c)"
    "$CC" "${flags[@]}" "$t" "$out/harness.o" "${objs[@]}" -lm -o "$out/$name"
    echo "== $name"
    if ! OMP_NUM_THREADS=2 "$out/$name"; then status=1; fi
done
exit $status
