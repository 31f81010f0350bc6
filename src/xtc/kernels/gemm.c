/* The kernel paths: the scalar reference (the definition), AVX-512 VNNI and AVX2 (see lowbit.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "lowbit.h"
#ifdef XTC_X86
#include <immintrin.h>
#endif

/* ---- the reference ------------------------------------------------------------------------------- */

static int weight_at(const gemm_job *g, int64_t n, int64_t k) {
    const int64_t kq = g->Kp / 4, word = (n / PANEL) * kq + k / 4, bit = (n % PANEL) * 4 + k % 4;
    if (g->nonzero && !((g->nonzero[word] >> bit) & 1)) return 0;
    return ((g->neg[word] >> bit) & 1) ? -1 : 1;
}

/* The 4 low bits of quad = 4 bytes, bytes' bit 0 (or 7, with shift 7) -> bits 0..3: the multiply moves byte t's
 * bit to bit 24 + t with no carries (the other products land on distinct lower bits or past bit 31). */
static inline uint64_t quad_nibble(uint32_t quad, int shift) {
    return (uint64_t)((((quad >> shift) & 0x01010101u) * 0x01020408u) >> 24);
}

/* Weight codes [N, K] (int8: -1, +1, and 0 when not binary) -> the layout read above: neg and nonzero
 * [ceil(N / 16), Kp / 4] (nonzero NULL: binary), colsum [N] (binary padding columns are +1 weights).
 * -1 when a code is out of range. Each quad of 4 inputs is one nibble per plane, or'ed into its word. */
int xtc_prepare_weights(const int8_t *codes, int64_t N, int64_t K, int64_t Kp, uint64_t *neg, uint64_t *nonzero,
                        int32_t *colsum) {
    const int64_t kq = Kp / 4, words = (N + PANEL - 1) / PANEL * kq;
    memset(neg, 0, (size_t)words * sizeof(uint64_t));
    if (nonzero) memset(nonzero, 0, (size_t)words * sizeof(uint64_t));
    for (int64_t n = 0; n < N; n++) {
        const int8_t *row = codes + n * K;
        int32_t sum = nonzero ? 0 : (int32_t)(Kp - K);
        int bad = 0;
        for (int64_t k = 0; k < K; k++) { /* -1, 0, +1 are the bytes 0xFF, 0x00, 0x01 */
            sum += row[k];
            bad |= ((uint8_t)(row[k] + 1) > 2) | (!nonzero & (row[k] == 0));
        }
        if (bad) return -1;
        colsum[n] = sum;
        uint64_t *neg_row = neg + (n / PANEL) * kq, *nonzero_row = nonzero ? nonzero + (n / PANEL) * kq : NULL;
        const int shift = (int)(n % PANEL) * 4;
        for (int64_t j = 0; j < kq; j++) {
            uint32_t quad = 0; /* the last quad's missing inputs: 0 bytes, neither negative nor nonzero */
            if (j * 4 + 4 <= K) memcpy(&quad, row + j * 4, 4);
            else if (j * 4 < K) memcpy(&quad, row + j * 4, (size_t)(K - j * 4));
            neg_row[j] |= quad_nibble(quad, 7) << shift;
            if (nonzero_row) nonzero_row[j] |= quad_nibble(quad, 0) << shift;
        }
    }
    return 0;
}

static float epilogue_scalar(const gemm_job *g, int64_t m, int64_t n, int32_t acc) {
    const float s = g->scale[m] * g->alpha[g->alpha_per_row ? n : 0];
    float v = (float)acc * s;
    if (g->bias) v += g->bias[n];
    return v;
}

/* Straight from the definition: sum_k (a - 128) * w, no offset correction, no blocking. */
static void gemm_ref(const gemm_job *g, int64_t n_begin, int64_t n_end) {
    for (int64_t m = 0; m < g->M; m++)
        for (int64_t n = n_begin; n < n_end; n++) {
            int32_t sum = 0;
            for (int64_t k = 0; k < g->Kp; k++) sum += ((int32_t)g->a[m * g->Kp + k] - 128) * weight_at(g, n, k);
            if (g->scale) g->y[m * g->N + n] = epilogue_scalar(g, m, n, sum);
            else g->acc[m * g->N + n] = sum;
        }
}

/* x's 8-bit code at scale s, + 128: rint (round half to even, as torch.round), clamped to [-128, 127] */
static inline uint8_t offset_code(float x, float s) {
    return (uint8_t)((int32_t)fminf(fmaxf(rintf(x / s), -128.0f), 127.0f) + 128);
}

static void quantize_rows_ref(const float *x, int64_t M, int64_t K, int64_t Kp, uint8_t *a, float *scale) {
    for (int64_t m = 0; m < M; m++) {
        const float *row = x + m * K;
        float max_abs = 0.0f;
        for (int64_t k = 0; k < K; k++) max_abs = fmaxf(max_abs, fabsf(row[k]));
        float s = max_abs / 128.0f;
        if (!(s > 0.0f)) s = 1.0f; /* an all-zero row: any scale is exact */
        scale[m] = s;
        for (int64_t k = 0; k < K; k++) a[m * Kp + k] = offset_code(row[k], s);
    }
}

#ifdef XTC_X86
/* ---- AVX-512 VNNI ---------------------------------------------------------------------------------- */
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

/* x / s rounded to the nearest integer, as the reference computes it, but mostly without the
 * division (a small saving: 36 -> 33 us for 128 x 768 tokens). r = fl(1 / s) and v = fl(x * r)
 * differ from the exact x / s by at most 2 ulp of |x / s| <= 128, i.e. 2^-15: when v is more
 * than TIE_MARGIN = 2^-12 away from a half-integer, rint(v) = rint(fl(x / s)). A vector with any
 * lane closer to a tie is divided (about 1 vector in 100). */
#define TIE_MARGIN (1.0f / 4096.0f)

AVX512 static inline __m512 rounded_quotient(__m512 x, __m512 s, __m512 r, int divide) {
    if (divide) return _mm512_roundscale_ps(_mm512_div_ps(x, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 v = _mm512_mul_ps(x, r);
    const __m512 rounded = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 off_tie = _mm512_abs_ps(_mm512_sub_ps(_mm512_abs_ps(_mm512_sub_ps(v, rounded)), _mm512_set1_ps(0.5f)));
    if (_mm512_cmp_ps_mask(off_tie, _mm512_set1_ps(TIE_MARGIN), _CMP_LT_OQ) == 0) return rounded;
    return rounded_quotient(x, s, r, 1);
}

AVX512 static void quantize_rows_avx512(const float *x, int64_t M, int64_t K, int64_t Kp, uint8_t *a,
                                        float *scale) {
    const __m512 offset = _mm512_set1_ps(128.0f);
    for (int64_t m = 0; m < M; m++) {
        const float *row = x + m * K;
        __m512 m0 = _mm512_setzero_ps(), m1 = m0, m2 = m0, m3 = m0; /* 4 chains: max has a 4-cycle latency */
        int64_t k = 0;
        for (; k + 64 <= K; k += 64) {
            m0 = _mm512_max_ps(m0, _mm512_abs_ps(_mm512_loadu_ps(row + k)));
            m1 = _mm512_max_ps(m1, _mm512_abs_ps(_mm512_loadu_ps(row + k + 16)));
            m2 = _mm512_max_ps(m2, _mm512_abs_ps(_mm512_loadu_ps(row + k + 32)));
            m3 = _mm512_max_ps(m3, _mm512_abs_ps(_mm512_loadu_ps(row + k + 48)));
        }
        for (; k < K; k += 16) {
            const __mmask16 live = K - k >= 16 ? 0xFFFF : (__mmask16)((1u << (K - k)) - 1);
            m0 = _mm512_max_ps(m0, _mm512_abs_ps(_mm512_maskz_loadu_ps(live, row + k)));
        }
        float s = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3))) / 128.0f;
        if (!(s > 0.0f)) s = 1.0f;
        scale[m] = s;
        const __m512 vs = _mm512_set1_ps(s), vr = _mm512_set1_ps(1.0f / s);
        const int divide = !isfinite(1.0f / s); /* a subnormal scale: its reciprocal overflows */
        for (k = 0; k < K; k += 16) {
            const __mmask16 live = K - k >= 16 ? 0xFFFF : (__mmask16)((1u << (K - k)) - 1);
            /* code + 128 in [0, 256], exactly: saturating to a byte clamps code 128 to 127 */
            const __m512 v = _mm512_add_ps(rounded_quotient(_mm512_maskz_loadu_ps(live, row + k), vs, vr, divide), offset);
            _mm_mask_storeu_epi8(a + m * Kp + k, live, _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(v)));
        }
    }
}

/* One block of NB columns: expand the weight bits of panels [p0, p0 + 4) into bytes,
 * buf[j][panel][64] (j = input quad). Panels past the matrix become zeros. */
AVX512 static void expand_block_avx512(const gemm_job *g, int64_t p0, int64_t np, int8_t *buf) {
    const int64_t kq = g->Kp / 4;
    const __m512i plus = _mm512_set1_epi8(1), minus = _mm512_set1_epi8(-1);
    for (int64_t p = 0; p < 4; p++) {
        if (p0 + p >= np) {
            for (int64_t j = 0; j < kq; j++) _mm512_store_si512((__m512i *)(buf + (j * 4 + p) * 64), _mm512_setzero_si512());
            continue;
        }
        const uint64_t *neg = g->neg + (p0 + p) * kq, *nz = g->nonzero ? g->nonzero + (p0 + p) * kq : NULL;
        for (int64_t j = 0; j < kq; j++) {
            __m512i w = _mm512_mask_blend_epi8((__mmask64)neg[j], plus, minus);
            if (nz) w = _mm512_maskz_mov_epi8((__mmask64)nz[j], w);
            _mm512_store_si512((__m512i *)(buf + (j * 4 + p) * 64), w);
        }
    }
}

/* MR rows x NB columns: 24 accumulators, each 16 int32 sums over the whole K. Named registers
 * (not an array) so the compiler keeps all 24 in zmm registers across the loop. */
#define ROW(r)                                                                                       \
    {                                                                                                \
        int32_t quad;                                                                                \
        memcpy(&quad, a + (r) * g->Kp + j * 4, 4);                                                   \
        const __m512i x = _mm512_set1_epi32(quad);                                                   \
        c##r##0 = _mm512_dpbusd_epi32(c##r##0, x, b0);                                               \
        c##r##1 = _mm512_dpbusd_epi32(c##r##1, x, b1);                                               \
        c##r##2 = _mm512_dpbusd_epi32(c##r##2, x, b2);                                               \
        c##r##3 = _mm512_dpbusd_epi32(c##r##3, x, b3);                                               \
    }
#define ZERO4(r) __m512i c##r##0 = _mm512_setzero_si512(), c##r##1 = c##r##0, c##r##2 = c##r##0, c##r##3 = c##r##0;
#define SAVE4(r) c[r][0] = c##r##0, c[r][1] = c##r##1, c[r][2] = c##r##2, c[r][3] = c##r##3;

AVX512 static void micro_avx512(const gemm_job *g, int64_t m0, int64_t n0, const int8_t *buf) {
    const int64_t kq = g->Kp / 4;
    const uint8_t *a = g->a + m0 * g->Kp;
    ZERO4(0) ZERO4(1) ZERO4(2) ZERO4(3) ZERO4(4) ZERO4(5)
    for (int64_t j = 0; j < kq; j++) {
        const __m512i *b = (const __m512i *)(buf + j * 256);
        const __m512i b0 = _mm512_load_si512(b), b1 = _mm512_load_si512(b + 1), b2 = _mm512_load_si512(b + 2),
                      b3 = _mm512_load_si512(b + 3);
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
    }
    __m512i c[MR][4];
    SAVE4(0) SAVE4(1) SAVE4(2) SAVE4(3) SAVE4(4) SAVE4(5)
    for (int r = 0; r < MR && m0 + r < g->M; r++) {
        const int64_t m = m0 + r;
        for (int i = 0; i < 4; i++) {
            const int64_t n = n0 + i * 16;
            if (n >= g->N) break;
            const __mmask16 live = g->N - n >= 16 ? 0xFFFF : (__mmask16)((1u << (g->N - n)) - 1);
            const __m512i fix = _mm512_slli_epi32(_mm512_maskz_loadu_epi32(live, g->colsum + n), 7);
            const __m512i acc = _mm512_sub_epi32(c[r][i], fix);
            if (!g->scale) {
                _mm512_mask_storeu_epi32(g->acc + m * g->N + n, live, acc);
                continue;
            }
            const __m512 s = g->alpha_per_row
                                 ? _mm512_mul_ps(_mm512_set1_ps(g->scale[m]), _mm512_maskz_loadu_ps(live, g->alpha + n))
                                 : _mm512_set1_ps(g->scale[m] * g->alpha[0]);
            __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), s);
            if (g->bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(live, g->bias + n));
            _mm512_mask_storeu_ps(g->y + m * g->N + n, live, v);
        }
    }
}

/* ---- AVX2 ------------------------------------------------------------------------------------------ */
#define AVX2 __attribute__((target("avx2")))

/* 32 bits -> 32 bytes of 0xFF (bit set) or 0x00. */
AVX2 static inline __m256i expand_bits(uint32_t bits) {
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i select = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), spread);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, select), select);
}

AVX2 static void expand_block_avx2(const gemm_job *g, int64_t p0, int64_t np, int8_t *buf) {
    const int64_t kq = g->Kp / 4;
    const __m256i plus = _mm256_set1_epi8(1);
    for (int64_t p = 0; p < 4; p++) {
        if (p0 + p >= np) {
            for (int64_t j = 0; j < kq; j++) memset(buf + (j * 4 + p) * 64, 0, 64);
            continue;
        }
        const uint64_t *neg = g->neg + (p0 + p) * kq, *nz = g->nonzero ? g->nonzero + (p0 + p) * kq : NULL;
        for (int64_t j = 0; j < kq; j++)
            for (int h = 0; h < 2; h++) {
                __m256i w = _mm256_or_si256(expand_bits((uint32_t)(neg[j] >> (32 * h))), plus); /* -1 or +1 */
                if (nz) w = _mm256_and_si256(w, expand_bits((uint32_t)(nz[j] >> (32 * h))));
                _mm256_store_si256((__m256i *)(buf + (j * 4 + p) * 64 + h * 32), w);
            }
    }
}

/* Rows of x -> codes + 128, as the reference: rint(x / s) (a true division, so the same bits), clamped. */
AVX2 static void quantize_rows_avx2(const float *x, int64_t M, int64_t K, int64_t Kp, uint8_t *a, float *scale) {
    const __m256 sign = _mm256_set1_ps(-0.0f), lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f),
                 offset = _mm256_set1_ps(128.0f);
    for (int64_t m = 0; m < M; m++) {
        const float *row = x + m * K;
        __m256 m0 = _mm256_setzero_ps(), m1 = m0;
        int64_t k = 0;
        for (; k + 16 <= K; k += 16) {
            m0 = _mm256_max_ps(m0, _mm256_andnot_ps(sign, _mm256_loadu_ps(row + k)));
            m1 = _mm256_max_ps(m1, _mm256_andnot_ps(sign, _mm256_loadu_ps(row + k + 8)));
        }
        float lanes[8], max_abs = 0.0f;
        _mm256_storeu_ps(lanes, _mm256_max_ps(m0, m1));
        for (int l = 0; l < 8; l++) max_abs = lanes[l] > max_abs ? lanes[l] : max_abs;
        for (; k < K; k++) max_abs = fabsf(row[k]) > max_abs ? fabsf(row[k]) : max_abs;
        float s = max_abs / 128.0f;
        if (!(s > 0.0f)) s = 1.0f;
        scale[m] = s;
        const __m256 vs = _mm256_set1_ps(s);
        uint8_t *out = a + m * Kp;
        for (k = 0; k + 8 <= K; k += 8) {
            __m256 v = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(row + k), vs),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v = _mm256_add_ps(_mm256_min_ps(_mm256_max_ps(v, lo), hi), offset); /* [0, 255] */
            const __m256i i32 = _mm256_cvtps_epi32(v);
            const __m128i i16 = _mm_packus_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
            _mm_storel_epi64((__m128i *)(out + k), _mm_packus_epi16(i16, i16));
        }
        for (; k < K; k++) out[k] = offset_code(row[k], s);
    }
}

/* R <= MR rows x 16 columns (one panel): 12 int16 sums, 2 weight vectors, the input and a product fill the
 * 16 ymm registers. The u8 x s8 pairs of vpmaddubsw are at most 2 x 255 in size
 * (|w| <= 1), so int16 sums of up to SPAN16 of them cannot overflow: they are widened to int32 once
 * per SPAN16 input quads (vpmaddwd by 1), not at every step. R is a constant at each call (micro_rows_avx2):
 * the rows past it are compiled out, so a short tail (16 tokens = 6 + 6 + 4, or the last layer's
 * single [CLS] row) costs its own rows only. */
#define SPAN16 64 /* 64 x 510 = 32640 <= 32767 */
#define ACC2(r) __m256i s##r##0 = _mm256_setzero_si256(), s##r##1 = s##r##0;
/* One row's step, in assembly so that the two products are summed as soon as made: from intrinsics GCC
 * made all of a step's products first, which needs more registers than the 16 and kept sums on the stack. */
#define STEP2(r)                                                                                    \
    if (R > (r)) {                                                                                  \
        __m256i x, t;                                                                               \
        __asm__("vpbroadcastd %[q], %[x]\n\t"                                                       \
                "vpmaddubsw %[b0], %[x], %[t]\n\t"                                                   \
                "vpaddw %[t], %[s0], %[s0]\n\t"                                                      \
                "vpmaddubsw %[b1], %[x], %[t]\n\t"                                                   \
                "vpaddw %[t], %[s1], %[s1]"                                                          \
                : [s0] "+x"(s##r##0), [s1] "+x"(s##r##1), [x] "=&x"(x), [t] "=&x"(t)                \
                : [q] "m"(*(const int32_t *)(a + (r) * g->Kp + j * 4)), [b0] "x"(b0), [b1] "x"(b1)); \
    }
#define WIDEN2(r)                                                                                   \
    if (R > (r)) {                                                                                  \
        c[r][0] = _mm256_add_epi32(c[r][0], _mm256_madd_epi16(s##r##0, ones16));                    \
        c[r][1] = _mm256_add_epi32(c[r][1], _mm256_madd_epi16(s##r##1, ones16));                    \
    }

AVX2 static inline __attribute__((always_inline)) void micro_avx2(const gemm_job *g, int64_t m0, int64_t n0,
                                                                  int64_t panel, const int8_t *buf, const int R) {
    const int64_t kq = g->Kp / 4;
    const uint8_t *a = g->a + m0 * g->Kp;
    const __m256i ones16 = _mm256_set1_epi16(1);
    __m256i c[MR][2];
    for (int r = 0; r < R; r++) c[r][0] = c[r][1] = _mm256_setzero_si256();
    for (int64_t j0 = 0; j0 < kq; j0 += SPAN16) {
        const int64_t j1 = j0 + SPAN16 < kq ? j0 + SPAN16 : kq;
        ACC2(0) ACC2(1) ACC2(2) ACC2(3) ACC2(4) ACC2(5)
        for (int64_t j = j0; j < j1; j++) {
            const int8_t *b = buf + (j * 4 + panel) * 64;
            const __m256i b0 = _mm256_load_si256((const __m256i *)b), b1 = _mm256_load_si256((const __m256i *)(b + 32));
            STEP2(0) STEP2(1) STEP2(2) STEP2(3) STEP2(4) STEP2(5)
        }
        WIDEN2(0) WIDEN2(1) WIDEN2(2) WIDEN2(3) WIDEN2(4) WIDEN2(5)
    }
    const int full = g->N - n0 >= 16;
    for (int r = 0; r < R; r++) {
        const int64_t m = m0 + r;
        if (!full) { /* the last, partial panel */
            int32_t sums[16];
            _mm256_storeu_si256((__m256i *)sums, c[r][0]);
            _mm256_storeu_si256((__m256i *)(sums + 8), c[r][1]);
            for (int i = 0; n0 + i < g->N; i++) {
                const int64_t n = n0 + i;
                const int32_t acc = sums[i] - 128 * g->colsum[n];
                if (g->scale) g->y[m * g->N + n] = epilogue_scalar(g, m, n, acc);
                else g->acc[m * g->N + n] = acc;
            }
            continue;
        }
        for (int h = 0; h < 2; h++) { /* as epilogue_scalar: (float)acc * (scale[m] * alpha[n]) + bias[n] */
            const int64_t n = n0 + 8 * h;
            const __m256i acc = _mm256_sub_epi32(c[r][h], _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(g->colsum + n)), 7));
            if (!g->scale) {
                _mm256_storeu_si256((__m256i *)(g->acc + m * g->N + n), acc);
                continue;
            }
            const __m256 s = g->alpha_per_row ? _mm256_mul_ps(_mm256_set1_ps(g->scale[m]), _mm256_loadu_ps(g->alpha + n))
                                              : _mm256_set1_ps(g->scale[m] * g->alpha[0]);
            __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), s);
            if (g->bias) v = _mm256_add_ps(v, _mm256_loadu_ps(g->bias + n));
            _mm256_storeu_ps(g->y + m * g->N + n, v);
        }
    }
}

/* Rows [m0, m0 + MR) of one panel, or the fewer left at the end of M: a kernel compiled for each count. */
AVX2 static void micro_rows_avx2(const gemm_job *g, int64_t m0, int64_t n0, int64_t panel, const int8_t *buf) {
    switch (g->M - m0 < MR ? g->M - m0 : MR) {
    case 1: micro_avx2(g, m0, n0, panel, buf, 1); return;
    case 2: micro_avx2(g, m0, n0, panel, buf, 2); return;
    case 3: micro_avx2(g, m0, n0, panel, buf, 3); return;
    case 4: micro_avx2(g, m0, n0, panel, buf, 4); return;
    case 5: micro_avx2(g, m0, n0, panel, buf, 5); return;
    default: micro_avx2(g, m0, n0, panel, buf, MR);
    }
}
#endif

int xtc_cpu_has(int path) {
#ifdef XTC_X86
    __builtin_cpu_init();
    if (path == PATH_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); /* forward.c */
    if (path == PATH_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#endif
    return path == PATH_REFERENCE;
}

int xtc_best_path(void) {
    if (xtc_cpu_has(PATH_AVX512)) return PATH_AVX512;
    if (xtc_cpu_has(PATH_AVX2)) return PATH_AVX2;
    return PATH_REFERENCE;
}

/* Columns [n_begin, n_end), n_begin a multiple of NB: threads take disjoint column ranges. */
int xtc_gemm_run(const gemm_job *g, int64_t n_begin, int64_t n_end, int path) {
    if (path == PATH_REFERENCE) {
        gemm_ref(g, n_begin, n_end);
        return 0;
    }
#ifdef XTC_X86
    const int64_t np = (g->N + PANEL - 1) / PANEL;
    int8_t *buf = aligned_alloc(64, (size_t)(g->Kp / 4) * 256);
    if (!buf) return -1;
    for (int64_t n0 = n_begin; n0 < n_end; n0 += NB) {
        if (path == PATH_AVX512) {
            expand_block_avx512(g, n0 / PANEL, np, buf);
            for (int64_t m0 = 0; m0 < g->M; m0 += MR) micro_avx512(g, m0, n0, buf); /* M padded: lowbit.h */
        } else {
            expand_block_avx2(g, n0 / PANEL, np, buf);
            for (int64_t p = 0; p < 4 && n0 + p * PANEL < g->N; p++)
                for (int64_t m0 = 0; m0 < g->M; m0 += MR) micro_rows_avx2(g, m0, n0 + p * PANEL, p, buf);
        }
    }
    free(buf);
#endif
    return 0;
}

void xtc_quantize_rows(const float *x, int64_t M, int64_t K, int64_t Kp, uint8_t *a, float *scale, int path) {
#ifdef XTC_X86
    if (path == PATH_AVX512) {
        quantize_rows_avx512(x, M, K, Kp, a, scale);
        return;
    }
    if (path == PATH_AVX2) {
        quantize_rows_avx2(x, M, K, Kp, a, scale);
        return;
    }
#endif
    quantize_rows_ref(x, M, K, Kp, a, scale);
}
