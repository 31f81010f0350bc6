/* The ceiling for 1-bit table lookups on one core (T-MAC style, AVX-512 `vpermw`): each lookup
 * vector reads 32 int16 partial sums of 5 activations, picked by 32 5-bit indices (the signs of
 * 5 binary weights for 32 outputs), and adds them to int16 accumulators: 32 x 5 = 160
 * multiply-adds replaced per vpermw + vpaddw (the accumulation a lookup kernel cannot skip).
 * 4 tables x 5 index vectors in registers, no memory
 * traffic and no table building: an upper bound for a lookup kernel, to set against vnni_peak.c.
 * Built and timed by benchmarks/packed/peak.py. */
#include <stdint.h>

#define LOOKUPS 20

void lut_peak(int64_t reps) {
    __asm__ volatile(
        "vpternlogd $0xff, %%zmm0, %%zmm0, %%zmm0\n\t"
        "vmovdqa64 %%zmm0, %%zmm1\n\t"
        "vmovdqa64 %%zmm0, %%zmm2\n\t"
        "vmovdqa64 %%zmm0, %%zmm3\n\t"
        "vpxord %%zmm4, %%zmm4, %%zmm4\n\t"
        "vmovdqa64 %%zmm4, %%zmm5\n\t"
        "vmovdqa64 %%zmm4, %%zmm6\n\t"
        "vmovdqa64 %%zmm4, %%zmm7\n\t"
        "vmovdqa64 %%zmm4, %%zmm8\n\t"
        "1:\n\t"
        "vpermw %%zmm0, %%zmm4, %%zmm9\n\t"
        "vpaddw %%zmm9, %%zmm12, %%zmm12\n\t"
        "vpermw %%zmm0, %%zmm5, %%zmm10\n\t"
        "vpaddw %%zmm10, %%zmm13, %%zmm13\n\t"
        "vpermw %%zmm0, %%zmm6, %%zmm11\n\t"
        "vpaddw %%zmm11, %%zmm14, %%zmm14\n\t"
        "vpermw %%zmm0, %%zmm7, %%zmm9\n\t"
        "vpaddw %%zmm9, %%zmm15, %%zmm15\n\t"
        "vpermw %%zmm0, %%zmm8, %%zmm10\n\t"
        "vpaddw %%zmm10, %%zmm16, %%zmm16\n\t"
        "vpermw %%zmm1, %%zmm4, %%zmm11\n\t"
        "vpaddw %%zmm11, %%zmm17, %%zmm17\n\t"
        "vpermw %%zmm1, %%zmm5, %%zmm9\n\t"
        "vpaddw %%zmm9, %%zmm18, %%zmm18\n\t"
        "vpermw %%zmm1, %%zmm6, %%zmm10\n\t"
        "vpaddw %%zmm10, %%zmm19, %%zmm19\n\t"
        "vpermw %%zmm1, %%zmm7, %%zmm11\n\t"
        "vpaddw %%zmm11, %%zmm20, %%zmm20\n\t"
        "vpermw %%zmm1, %%zmm8, %%zmm9\n\t"
        "vpaddw %%zmm9, %%zmm21, %%zmm21\n\t"
        "vpermw %%zmm2, %%zmm4, %%zmm10\n\t"
        "vpaddw %%zmm10, %%zmm22, %%zmm22\n\t"
        "vpermw %%zmm2, %%zmm5, %%zmm11\n\t"
        "vpaddw %%zmm11, %%zmm23, %%zmm23\n\t"
        "vpermw %%zmm2, %%zmm6, %%zmm9\n\t"
        "vpaddw %%zmm9, %%zmm24, %%zmm24\n\t"
        "vpermw %%zmm2, %%zmm7, %%zmm10\n\t"
        "vpaddw %%zmm10, %%zmm25, %%zmm25\n\t"
        "vpermw %%zmm2, %%zmm8, %%zmm11\n\t"
        "vpaddw %%zmm11, %%zmm26, %%zmm26\n\t"
        "vpermw %%zmm3, %%zmm4, %%zmm9\n\t"
        "vpaddw %%zmm9, %%zmm27, %%zmm27\n\t"
        "vpermw %%zmm3, %%zmm5, %%zmm10\n\t"
        "vpaddw %%zmm10, %%zmm28, %%zmm28\n\t"
        "vpermw %%zmm3, %%zmm6, %%zmm11\n\t"
        "vpaddw %%zmm11, %%zmm29, %%zmm29\n\t"
        "vpermw %%zmm3, %%zmm7, %%zmm9\n\t"
        "vpaddw %%zmm9, %%zmm30, %%zmm30\n\t"
        "vpermw %%zmm3, %%zmm8, %%zmm10\n\t"
        "vpaddw %%zmm10, %%zmm31, %%zmm31\n\t"
        "dec %[n]\n\t"
        "jnz 1b\n\t"
        : [n] "+r"(reps)
        :
        : "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31");
}

/* binary-weight multiply-adds replaced per call: LOOKUPS vectors x 32 outputs x 5 weights */
int64_t macs_per_call(int64_t reps) { return reps * LOOKUPS * 32 * 5; }
