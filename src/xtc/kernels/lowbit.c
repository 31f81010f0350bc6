/*
 * Low-bit matrix products for xtc's packed runtime (CPython extension `xtc.kernels._lowbit`).
 *
 * Three paths compute the same numbers: a portable scalar reference, AVX2, and AVX-512 VNNI.
 * The path is chosen at run time after a CPU check (`__builtin_cpu_supports`) unless the
 * caller asks for one. Integer accumulators are exact on every path, and the float
 * epilogue does the same float operations in the same order, so all paths agree bit for bit.
 *
 *   quantize_rows(x f32 [M,K]) -> a u8 [Mp,Kp], scale f32 [M]
 *       per-token symmetric 8-bit: scale = max|x_m| / 128, q = clamp(rint(x / scale), -128, 127)
 *       (the fake-quant of xtc.quant.primitives.symmetric_codes, bits = 8, granularity "row"),
 *       stored as q + 128 (an unsigned byte: what the u8 x s8 multiply-adds take); padding = 128.
 *
 *   gemm(a, weights) -> acc i32 [M,N]
 *       acc[m,n] = sum_k q[m,k] * w[n,k], w in {-1, +1} (binary) or {-1, 0, +1} (ternary).
 *
 *   linear(x, weights, alpha, bias) -> y f32 [M,N]: quantize_rows, then the product with its epilogue
 *       y[m,n]   = (float)acc[m,n] * (scale[m] * alpha[n]) + bias[n],
 *       both split across threads (rows for the quantization, column blocks for the product).
 *
 * Weight layout (built once at load time by xtc.kernels.prepare, one bit per weight per plane):
 * panels of 16 output rows; in panel p, word (p, j) is a uint64 whose bit c*4+t is weight
 * (16p + c, 4j + t). Plane `neg`: the weight is -1; plane `nonzero` (ternary only): it is not 0.
 * Rows and columns past N and K are zero weights (ternary) or are never read (binary: the
 * activation padding is code 0). Expanding one word gives the 64 bytes of one 512-bit
 * multiply-add operand: 16 outputs x 4 consecutive inputs.
 *
 * The product of the offset activations is corrected exactly:
 *     sum_k (q + 128) w = sum_k q w + 128 * colsum[n],   colsum[n] = sum_k w[n,k].
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE /* RTLD_NOLOAD */
#include <Python.h>
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define XTC_X86 1
#endif

enum { PATH_AUTO = 0, PATH_REFERENCE = 1, PATH_AVX2 = 2, PATH_AVX512 = 3 };

#define MR 6        /* activation rows per micro-kernel (the caller pads M to a multiple) */
#define NB 64       /* output columns per block: 4 panels of 16 */
#define PANEL 16

typedef struct {
    const uint8_t *a;        /* [Mp, Kp] activation codes + 128 */
    int64_t M, Kp;           /* valid rows; row stride (a multiple of 4) */
    const uint64_t *neg;     /* [NP, Kp / 4] */
    const uint64_t *nonzero; /* [NP, Kp / 4] or NULL (binary) */
    const int32_t *colsum;   /* [N] */
    int64_t N;
    const float *scale;      /* [M] activation scales, or NULL: write acc */
    const float *alpha;      /* [1] or [N] weight scales */
    int alpha_per_row;
    const float *bias;       /* [N] or NULL */
    int32_t *acc;            /* [M, N] when scale is NULL */
    float *y;                /* [M, N] otherwise */
} gemm_job;

/* ---- the reference ------------------------------------------------------------------------------- */

static int weight_at(const gemm_job *g, int64_t n, int64_t k) {
    const int64_t kq = g->Kp / 4, word = (n / PANEL) * kq + k / 4, bit = (n % PANEL) * 4 + k % 4;
    if (g->nonzero && !((g->nonzero[word] >> bit) & 1)) return 0;
    return ((g->neg[word] >> bit) & 1) ? -1 : 1;
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

static void quantize_rows_ref(const float *x, int64_t M, int64_t K, int64_t Kp, uint8_t *a, float *scale) {
    for (int64_t m = 0; m < M; m++) {
        const float *row = x + m * K;
        float max_abs = 0.0f;
        for (int64_t k = 0; k < K; k++) max_abs = fmaxf(max_abs, fabsf(row[k]));
        float s = max_abs / 128.0f;
        if (!(s > 0.0f)) s = 1.0f; /* an all-zero row: any scale is exact */
        scale[m] = s;
        for (int64_t k = 0; k < K; k++) {
            float v = rintf(row[k] / s); /* round half to even, as torch.round */
            v = fminf(fmaxf(v, -128.0f), 127.0f);
            a[m * Kp + k] = (uint8_t)((int32_t)v + 128);
        }
    }
}

#ifdef XTC_X86
/* ---- AVX-512 VNNI ---------------------------------------------------------------------------------- */
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

/* x / s rounded to the nearest integer, as the reference computes it, but mostly without the
 * division (a third of the Linear's time at 128 tokens with it). r = fl(1 / s) and v = fl(x * r)
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

/* 3 rows x 16 columns (one panel). u8 x s8 pairs summed in int16 cannot saturate: |w| <= 1. */
AVX2 static void micro_avx2(const gemm_job *g, int64_t m0, int64_t n0, int64_t panel, const int8_t *buf) {
    const int64_t kq = g->Kp / 4;
    const __m256i ones16 = _mm256_set1_epi16(1);
    __m256i c[3][2];
    for (int r = 0; r < 3; r++) c[r][0] = c[r][1] = _mm256_setzero_si256();
    for (int64_t j = 0; j < kq; j++) {
        const int8_t *b = buf + (j * 4 + panel) * 64;
        const __m256i b0 = _mm256_load_si256((const __m256i *)b), b1 = _mm256_load_si256((const __m256i *)(b + 32));
        for (int r = 0; r < 3; r++) {
            int32_t quad;
            memcpy(&quad, g->a + (m0 + r) * g->Kp + j * 4, 4);
            const __m256i x = _mm256_set1_epi32(quad);
            c[r][0] = _mm256_add_epi32(c[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(x, b0), ones16));
            c[r][1] = _mm256_add_epi32(c[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(x, b1), ones16));
        }
    }
    for (int r = 0; r < 3 && m0 + r < g->M; r++) {
        int32_t sums[16];
        _mm256_storeu_si256((__m256i *)sums, c[r][0]);
        _mm256_storeu_si256((__m256i *)(sums + 8), c[r][1]);
        for (int i = 0; i < 16 && n0 + i < g->N; i++) {
            const int64_t m = m0 + r, n = n0 + i;
            const int32_t acc = sums[i] - 128 * g->colsum[n];
            if (g->scale) g->y[m * g->N + n] = epilogue_scalar(g, m, n, acc);
            else g->acc[m * g->N + n] = acc;
        }
    }
}
#endif

static int cpu_has(int path) {
#ifdef XTC_X86
    __builtin_cpu_init();
    if (path == PATH_AVX2) return __builtin_cpu_supports("avx2");
    if (path == PATH_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#endif
    return path == PATH_REFERENCE;
}

static int best_path(void) {
    if (cpu_has(PATH_AVX512)) return PATH_AVX512;
    if (cpu_has(PATH_AVX2)) return PATH_AVX2;
    return PATH_REFERENCE;
}

/* Columns [n_begin, n_end), n_begin a multiple of NB: threads take disjoint column ranges. */
static int gemm_run(const gemm_job *g, int64_t n_begin, int64_t n_end, int path) {
    if (path == PATH_REFERENCE) {
        gemm_ref(g, n_begin, n_end);
        return 0;
    }
#ifdef XTC_X86
    const int64_t np = (g->N + PANEL - 1) / PANEL, rows = (g->M + MR - 1) / MR * MR;
    int8_t *buf = aligned_alloc(64, (size_t)(g->Kp / 4) * 256);
    if (!buf) return -1;
    for (int64_t n0 = n_begin; n0 < n_end; n0 += NB) {
        if (path == PATH_AVX512) {
            expand_block_avx512(g, n0 / PANEL, np, buf);
            for (int64_t m0 = 0; m0 < rows; m0 += MR) micro_avx512(g, m0, n0, buf);
        } else {
            expand_block_avx2(g, n0 / PANEL, np, buf);
            for (int64_t p = 0; p < 4 && n0 + p * PANEL < g->N; p++)
                for (int64_t m0 = 0; m0 < rows; m0 += 3) micro_avx2(g, m0, n0 + p * PANEL, p, buf);
        }
    }
    free(buf);
#endif
    return 0;
}

/* ---- threads ---------------------------------------------------------------------------------------
 * Column blocks are split across threads: each share expands only its own weight blocks and
 * writes only its own output columns.
 *
 * When the process already runs an OpenMP runtime (torch's libgomp, or Intel's libiomp5, which
 * exports the same GOMP_ entry points), the shares run on that runtime's thread team. Our own
 * threads would fight its workers, which spin for a while after every torch op, for the same
 * cores: with 2 threads on 2 cores the model then ran slower than with 1. Otherwise the shares
 * run on POSIX threads. The runtime is found, never loaded (RTLD_NOLOAD): nothing to link. */
typedef void (*gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);
typedef int (*omp_query_fn)(void);
static struct {
    gomp_parallel_fn parallel;
    omp_query_fn thread_num, num_threads;
    const char *name;
} openmp;
static pthread_mutex_t openmp_lock = PTHREAD_MUTEX_INITIALIZER;

/* Looked for until found: torch (and its runtime) may be imported after the first call. */
static void find_openmp(void) {
    pthread_mutex_lock(&openmp_lock);
    const char *names[] = {"libgomp.so.1", "libiomp5.so"};
    for (size_t i = 0; i < sizeof names / sizeof *names && !openmp.parallel; i++) {
        void *lib = dlopen(names[i], RTLD_LAZY | RTLD_NOLOAD);
        if (!lib) continue;
        gomp_parallel_fn parallel = (gomp_parallel_fn)dlsym(lib, "GOMP_parallel");
        omp_query_fn thread_num = (omp_query_fn)dlsym(lib, "omp_get_thread_num");
        omp_query_fn num_threads = (omp_query_fn)dlsym(lib, "omp_get_num_threads");
        if (parallel && thread_num && num_threads) {
            openmp.parallel = parallel, openmp.thread_num = thread_num, openmp.num_threads = num_threads;
            openmp.name = names[i];
            break; /* the handle stays open: the runtime must outlive our calls */
        }
        dlclose(lib);
    }
    pthread_mutex_unlock(&openmp_lock);
}

#define MAX_THREADS 64

/* `count` shares of one piece of work: share(ctx, t) for t in [0, count), each on its own thread. */
typedef void (*share_fn)(void *ctx, int t);
typedef struct {
    share_fn share;
    void *ctx;
    int count;
    int t;          /* pthreads: the share this thread runs */
} share_list;

/* Runs on every thread of the OpenMP team; a team smaller than asked still runs every share. */
static void run_shares_openmp(void *arg) {
    share_list *list = arg;
    const int team = openmp.num_threads(), me = openmp.thread_num();
    for (int t = me; t < list->count; t += team) list->share(list->ctx, t);
}

static void *run_share_pthread(void *arg) {
    share_list *one = arg;
    one->share(one->ctx, one->t);
    return NULL;
}

static void run_shares(share_fn share, void *ctx, int count) {
    if (count > 1 && !openmp.parallel) find_openmp();
    if (count > 1 && openmp.parallel) {
        share_list list = {share, ctx, count, 0};
        openmp.parallel(run_shares_openmp, &list, (unsigned)count, 0);
        return;
    }
    pthread_t ids[MAX_THREADS];
    share_list ones[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int t = 1; t < count; t++) {
        ones[t] = (share_list){share, ctx, count, t};
        started[t] = pthread_create(&ids[t], NULL, run_share_pthread, &ones[t]) == 0;
    }
    for (int t = 1; t < count; t++)
        if (!started[t]) share(ctx, t); /* no thread to be had: run that share here */
    share(ctx, 0);
    for (int t = 1; t < count; t++)
        if (started[t]) pthread_join(ids[t], NULL);
}

static int clamp_threads(int threads, int64_t units) {
    if (threads > units) threads = (int)units;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    return threads < 1 ? 1 : threads;
}

/* GEMM shares: column blocks [blocks * t / T, blocks * (t + 1) / T) of NB columns. */
typedef struct {
    const gemm_job *g;
    int path, threads;
    int failed[MAX_THREADS];
} gemm_shares;

static void gemm_share(void *ctx, int t) {
    gemm_shares *w = ctx;
    const int64_t blocks = (w->g->N + NB - 1) / NB;
    const int64_t lo = blocks * t / w->threads * NB, hi = blocks * (t + 1) / w->threads * NB;
    w->failed[t] = gemm_run(w->g, lo, hi < w->g->N ? hi : w->g->N, w->path);
}

static int gemm_parallel(const gemm_job *g, int path, int threads) {
    gemm_shares w = {.g = g, .path = path, .threads = clamp_threads(threads, (g->N + NB - 1) / NB)};
    run_shares(gemm_share, &w, w.threads);
    int failed = 0;
    for (int t = 0; t < w.threads; t++) failed |= w.failed[t];
    return failed;
}

/* Quantization shares: rows [M * t / T, M * (t + 1) / T), padding included (rows past M: code 0). */
typedef struct {
    const float *x;
    int64_t M, K, Mp, Kp;
    uint8_t *a;
    float *scale;
    int path, threads;
} quantize_shares;

static void quantize_share(void *ctx, int t) {
    quantize_shares *w = ctx;
    const int64_t lo = w->M * t / w->threads, hi = w->M * (t + 1) / w->threads;
    for (int64_t m = lo; m < hi && w->Kp > w->K; m++) memset(w->a + m * w->Kp + w->K, 128, (size_t)(w->Kp - w->K));
    if (t == w->threads - 1) memset(w->a + w->M * w->Kp, 128, (size_t)((w->Mp - w->M) * w->Kp));
#ifdef XTC_X86
    if (w->path == PATH_AVX512) {
        quantize_rows_avx512(w->x + lo * w->K, hi - lo, w->K, w->Kp, w->a + lo * w->Kp, w->scale + lo);
        return;
    }
#endif
    quantize_rows_ref(w->x + lo * w->K, hi - lo, w->K, w->Kp, w->a + lo * w->Kp, w->scale + lo);
}

static void quantize_parallel(const float *x, int64_t M, int64_t K, int64_t Mp, int64_t Kp, uint8_t *a, float *scale,
                              int path, int threads) {
    quantize_shares w = {x, M, K, Mp, Kp, a, scale, path, clamp_threads(threads, M)};
    run_shares(quantize_share, &w, w.threads);
}

/* ---- Python bindings: contiguous buffers in, results written into caller-allocated buffers -------- */

static int get_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, Py_ssize_t count, int writable,
                      const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) return -1;
    if (view->itemsize != itemsize || view->len != itemsize * count) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd items of %zd bytes, got %zd bytes", name, count, itemsize,
                     view->len);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int resolve_path(int path) {
    if (path == PATH_AUTO) return best_path();
    if (path < PATH_REFERENCE || path > PATH_AVX512 || !cpu_has(path)) {
        PyErr_Format(PyExc_ValueError, "kernel path %d is not available on this CPU", path);
        return -1;
    }
    return path;
}

static PyObject *py_quantize_rows(PyObject *self, PyObject *args) {
    PyObject *xo, *ao, *so;
    long long M, K, Mp, Kp;
    int path, threads;
    if (!PyArg_ParseTuple(args, "OLLOLLOii", &xo, &M, &K, &ao, &Mp, &Kp, &so, &path, &threads)) return NULL;
    if ((path = resolve_path(path)) < 0) return NULL;
    if (Mp < M || Kp < K) return PyErr_Format(PyExc_ValueError, "padded shape smaller than the data");
    Py_buffer x, a, s;
    if (get_buffer(xo, &x, 4, M * K, 0, "x") < 0) return NULL;
    if (get_buffer(ao, &a, 1, Mp * Kp, 1, "a") < 0) { PyBuffer_Release(&x); return NULL; }
    if (get_buffer(so, &s, 4, M, 1, "scale") < 0) { PyBuffer_Release(&x); PyBuffer_Release(&a); return NULL; }
    Py_BEGIN_ALLOW_THREADS
    quantize_parallel((const float *)x.buf, M, K, Mp, Kp, (uint8_t *)a.buf, (float *)s.buf, path, threads);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&x); PyBuffer_Release(&a); PyBuffer_Release(&s);
    Py_RETURN_NONE;
}

/* The buffers of one product, taken from Python objects (None: absent) and checked against the shapes. */
typedef struct {
    Py_buffer views[8];
    int held;
} held_buffers;

static void release_all(held_buffers *h) {
    while (h->held) PyBuffer_Release(&h->views[--h->held]);
}

/* Fills g's weight, scale and output fields; g->M, g->Kp, g->N set. Returns 0, or -1 with an exception. */
static int take_gemm_buffers(gemm_job *g, held_buffers *h, PyObject *no, PyObject *zo, PyObject *co, PyObject *alo,
                             PyObject *bo, PyObject *oo, int scaled) {
    const long long np = (g->N + PANEL - 1) / PANEL, kq = g->Kp / 4;
#define TAKE(obj, size, count, writable, name, field, type)                                   \
    if ((obj) != Py_None) {                                                                   \
        if (get_buffer(obj, &h->views[h->held], size, count, writable, name) < 0) return -1;  \
        g->field = (type)h->views[h->held++].buf;                                             \
    }
    TAKE(no, 8, np * kq, 0, "neg", neg, const uint64_t *)
    TAKE(zo, 8, np * kq, 0, "nonzero", nonzero, const uint64_t *)
    TAKE(co, 4, g->N, 0, "colsum", colsum, const int32_t *)
    if (scaled) {
        Py_buffer probe;
        if (PyObject_GetBuffer(alo, &probe, PyBUF_C_CONTIGUOUS) < 0) return -1;
        g->alpha_per_row = probe.len == 4 * g->N && g->N > 1;
        PyBuffer_Release(&probe);
        TAKE(alo, 4, g->alpha_per_row ? g->N : 1, 0, "alpha", alpha, const float *)
        TAKE(bo, 4, g->N, 0, "bias", bias, const float *)
        TAKE(oo, 4, g->M * g->N, 1, "y", y, float *)
    } else {
        TAKE(oo, 4, g->M * g->N, 1, "acc", acc, int32_t *)
    }
#undef TAKE
    if (!g->neg || !g->colsum || (scaled ? !g->y : !g->acc)) {
        PyErr_SetString(PyExc_ValueError, "neg, colsum and the output are required");
        return -1;
    }
    return 0;
}

/* gemm(a, M, Kp, neg, nonzero|None, colsum, N, acc, path, threads): the exact int32 products of
 * activation codes already quantized (a: codes + 128, padded) with the weight codes. */
static PyObject *py_gemm(PyObject *self, PyObject *args) {
    PyObject *ao, *no, *zo, *co, *oo;
    long long M, Kp, N;
    int path, threads;
    if (!PyArg_ParseTuple(args, "OLLOOOLOii", &ao, &M, &Kp, &no, &zo, &co, &N, &oo, &path, &threads)) return NULL;
    if ((path = resolve_path(path)) < 0) return NULL;
    if (Kp % 4 || M < 0 || N < 0) return PyErr_Format(PyExc_ValueError, "bad gemm shape");
    const long long rows = (M + MR - 1) / MR * MR;
    gemm_job g = {.M = M, .Kp = Kp, .N = N};
    held_buffers h = {.held = 0};
    int ok = take_gemm_buffers(&g, &h, no, zo, co, Py_None, Py_None, oo, 0) == 0;
    if (ok && get_buffer(ao, &h.views[h.held], 1, rows * Kp, 0, "a") < 0) ok = 0;
    else if (ok) g.a = h.views[h.held++].buf;
    int failed = 0;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        failed = gemm_parallel(&g, path, threads);
        Py_END_ALLOW_THREADS
    }
    release_all(&h);
    if (!ok) return NULL;
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* linear(x, M, K, neg, nonzero|None, colsum, N, alpha, bias|None, y, path, threads): the fused Linear,
 * y = quantize(x) @ w.T * (scale * alpha) + bias, quantization and product both split across threads. */
static PyObject *py_linear(PyObject *self, PyObject *args) {
    PyObject *xo, *no, *zo, *co, *alo, *bo, *oo;
    long long M, K, N, Kp;
    int path, threads;
    if (!PyArg_ParseTuple(args, "OLLLOOOLOOOii", &xo, &M, &K, &Kp, &no, &zo, &co, &N, &alo, &bo, &oo, &path, &threads))
        return NULL;
    if ((path = resolve_path(path)) < 0) return NULL;
    if (Kp % 4 || Kp < K || M < 0 || N < 0) return PyErr_Format(PyExc_ValueError, "bad linear shape");
    const long long rows = (M + MR - 1) / MR * MR;
    gemm_job g = {.M = M, .Kp = Kp, .N = N};
    held_buffers h = {.held = 0};
    int ok = take_gemm_buffers(&g, &h, no, zo, co, alo, bo, oo, 1) == 0;
    if (ok && get_buffer(xo, &h.views[h.held], 4, M * K, 0, "x") < 0) ok = 0;
    else if (ok) h.held++;
    int failed = 0;
    if (ok) {
        const float *x = h.views[h.held - 1].buf;
        Py_BEGIN_ALLOW_THREADS
        uint8_t *a = malloc((size_t)(rows * Kp) + 1);
        float *scale = malloc((size_t)(M + 1) * sizeof(float));
        if (a && scale) {
            quantize_parallel(x, M, K, rows, Kp, a, scale, path, threads);
            g.a = a, g.scale = scale;
            failed = gemm_parallel(&g, path, threads);
        } else {
            failed = 1;
        }
        free(a);
        free(scale);
        Py_END_ALLOW_THREADS
    }
    release_all(&h);
    if (!ok) return NULL;
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_available_paths(PyObject *self, PyObject *noargs) {
    PyObject *out = PyList_New(0);
    const char *names[] = {"", "reference", "avx2", "avx512-vnni"};
    for (int p = PATH_REFERENCE; p <= PATH_AVX512; p++)
        if (cpu_has(p)) {
            PyObject *name = PyUnicode_FromString(names[p]);
            PyList_Append(out, name);
            Py_DECREF(name);
        }
    return out;
}

/* Which threads run the shares: the process's OpenMP runtime, or POSIX threads. */
static PyObject *py_threading(PyObject *self, PyObject *noargs) {
    if (!openmp.parallel) find_openmp();
    if (openmp.parallel) return PyUnicode_FromFormat("openmp (%s)", openmp.name);
    return PyUnicode_FromString("pthreads");
}

static PyMethodDef methods[] = {
    {"quantize_rows", py_quantize_rows, METH_VARARGS, "quantize_rows(x, M, K, a_out, Mp, Kp, scale_out, path, threads)"},
    {"linear", py_linear, METH_VARARGS,
     "linear(x, M, K, Kp, neg, nonzero, colsum, N, alpha, bias, y, path, threads): quantize and multiply"},
    {"gemm", py_gemm, METH_VARARGS, "gemm(a, M, Kp, neg, nonzero, colsum, N, acc, path, threads): int32 products"},
    {"available_paths", py_available_paths, METH_NOARGS, "the kernel paths this CPU runs, slowest first"},
    {"threading", py_threading, METH_NOARGS, "what runs the kernels' threads: 'openmp (LIB)' or 'pthreads'"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_lowbit", "xtc low-bit kernels", -1, methods};

PyMODINIT_FUNC PyInit__lowbit(void) { return PyModule_Create(&module); }
