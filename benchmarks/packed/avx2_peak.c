/* The ceiling of the AVX2 path's 8-bit multiply-adds on one core: `reps` rounds of 7 independent
 * vpmaddubsw + vpaddw pairs (the micro-kernel's inner step, gemm.c: u8 x s8 pairs summed into int16
 * lanes), no memory traffic; each vpmaddubsw is 32 u8 x s8 multiply-adds. 7 pairs: 14 of the 16 ymm
 * registers, beside the two operands. Assembly for the reason vnni_peak.c gives.
 * Built (gcc -mavx2) and timed by benchmarks/engine/ops.py (with peak.py's ceiling()). */
#include <stdint.h>

#define CHAINS 7

void avx2_peak(int64_t reps) {
    __asm__ volatile(
        "vpcmpeqb %%ymm0, %%ymm0, %%ymm0\n\t" /* all ones: the operands' values do not matter */
        "vmovdqa %%ymm0, %%ymm1\n\t"
        "vpxor %%ymm9, %%ymm9, %%ymm9\n\t"
        "vpxor %%ymm10, %%ymm10, %%ymm10\n\t"
        "vpxor %%ymm11, %%ymm11, %%ymm11\n\t"
        "vpxor %%ymm12, %%ymm12, %%ymm12\n\t"
        "vpxor %%ymm13, %%ymm13, %%ymm13\n\t"
        "vpxor %%ymm14, %%ymm14, %%ymm14\n\t"
        "vpxor %%ymm15, %%ymm15, %%ymm15\n\t"
        "1:\n\t"
        "vpmaddubsw %%ymm1, %%ymm0, %%ymm2\n\t"
        "vpmaddubsw %%ymm1, %%ymm0, %%ymm3\n\t"
        "vpmaddubsw %%ymm1, %%ymm0, %%ymm4\n\t"
        "vpmaddubsw %%ymm1, %%ymm0, %%ymm5\n\t"
        "vpmaddubsw %%ymm1, %%ymm0, %%ymm6\n\t"
        "vpmaddubsw %%ymm1, %%ymm0, %%ymm7\n\t"
        "vpmaddubsw %%ymm1, %%ymm0, %%ymm8\n\t"
        "vpaddw %%ymm2, %%ymm9, %%ymm9\n\t"
        "vpaddw %%ymm3, %%ymm10, %%ymm10\n\t"
        "vpaddw %%ymm4, %%ymm11, %%ymm11\n\t"
        "vpaddw %%ymm5, %%ymm12, %%ymm12\n\t"
        "vpaddw %%ymm6, %%ymm13, %%ymm13\n\t"
        "vpaddw %%ymm7, %%ymm14, %%ymm14\n\t"
        "vpaddw %%ymm8, %%ymm15, %%ymm15\n\t"
        "dec %[n]\n\t"
        "jnz 1b\n\t"
        "vzeroupper\n\t"
        : [n] "+r"(reps)
        :
        : "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
          "xmm12", "xmm13", "xmm14", "xmm15");
}

int64_t macs_per_call(int64_t reps) { return reps * CHAINS * 32; }
