/* The ceiling for 8-bit multiply-adds on one core: `reps` rounds of 24 independent vpdpbusd
 * chains (more than latency x ports), no memory traffic; each vpdpbusd is 64 u8 x s8
 * multiply-adds. Assembly, not intrinsics: from intrinsics the compiler merged identical
 * chains, or spilled accumulators, and "measured" anything from 180 to 525 GMAC/s.
 * Built (gcc -mavx512f -mavx512vnni) and timed by benchmarks/packed/peak.py. */
#include <stdint.h>

#define CHAINS 24

void vnni_peak(int64_t reps) {
    __asm__ volatile(
        "vpternlogd $0xff, %%zmm0, %%zmm0, %%zmm0\n\t" /* all ones: the operands' values do not matter */
        "vmovdqa64 %%zmm0, %%zmm1\n\t"
        "1:\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm8\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm9\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm10\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm11\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm12\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm13\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm14\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm15\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm16\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm17\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm18\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm19\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm20\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm21\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm22\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm23\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm24\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm25\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm26\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm27\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm28\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm29\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm30\n\t"
        "vpdpbusd %%zmm1, %%zmm0, %%zmm31\n\t"
        "dec %[n]\n\t"
        "jnz 1b\n\t"
        : [n] "+r"(reps)
        :
        : "cc", "xmm0", "xmm1", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31");
}

int64_t macs_per_call(int64_t reps) { return reps * CHAINS * 64; }
