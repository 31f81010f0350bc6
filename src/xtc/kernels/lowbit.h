/*
 * Low-bit matrix products for xtc's packed runtime (CPython extension `xtc.kernels._lowbit`):
 * lowbit.h (this contract and the shared declarations), gemm.c (the three kernel paths),
 * threads.c (splitting the work across threads), module.c (the Python bindings).
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
 * Weight layout (built once at load time by xtc_prepare_weights, one bit per weight per plane):
 * panels of 16 output rows; in panel p, word (p, j) is a uint64 whose bit c*4+t is weight
 * (16p + c, 4j + t). Plane `neg`: the weight is -1; plane `nonzero` (ternary only): it is not 0.
 * Rows and columns past N and K are zero weights (ternary) or are never read (binary: the
 * activation padding is code 0). Expanding one word gives the 64 bytes of one 512-bit
 * multiply-add operand: 16 outputs x 4 consecutive inputs.
 *
 * The product of the offset activations is corrected exactly:
 *     sum_k (q + 128) w = sum_k q w + 128 * colsum[n],   colsum[n] = sum_k w[n,k].
 */
#ifndef XTC_LOWBIT_H
#define XTC_LOWBIT_H

#include <stdint.h>
#if defined(__x86_64__) || defined(__i386__)
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

/* gemm.c: the kernel paths */
int xtc_cpu_has(int path);
int xtc_best_path(void);
/* Columns [n_begin, n_end) of the product, n_begin a multiple of NB; -1 when out of memory. */
int xtc_gemm_run(const gemm_job *g, int64_t n_begin, int64_t n_end, int path);
/* Weight codes [N, K] -> the layout above (nonzero NULL: binary codes); -1 on a code out of range. */
int xtc_prepare_weights(const int8_t *codes, int64_t N, int64_t K, int64_t Kp, uint64_t *neg, uint64_t *nonzero,
                        int32_t *colsum);
/* Rows of x (M, K) -> codes + 128 in a (row stride Kp; columns K..Kp not written) and scales. */
void xtc_quantize_rows(const float *x, int64_t M, int64_t K, int64_t Kp, uint8_t *a, float *scale, int path);

/* threads.c: the same, split across threads (the process's OpenMP team, else our pool of POSIX threads) */
typedef void (*xtc_share_fn)(void *ctx, int t);
/* share(ctx, t) for t in [0, count), on count threads; returns when all have run */
void xtc_run_shares(xtc_share_fn share, void *ctx, int count);
int xtc_gemm_parallel(const gemm_job *g, int path, int threads);
/* Rows [lo, hi) of xtc_quantize_parallel's work, padding columns included; `last`: also rows M..Mp. For
 * a caller that quantizes rows in the same share that produced them (forward.c). */
void xtc_quantize_range(const float *x, int64_t M, int64_t K, int64_t Mp, int64_t Kp, uint8_t *a, float *scale,
                        int path, int64_t lo, int64_t hi, int last);
/* Also writes the padding: columns K..Kp of every row and rows M..Mp (code 0, stored as 128). */
void xtc_quantize_parallel(const float *x, int64_t M, int64_t K, int64_t Mp, int64_t Kp, uint8_t *a, float *scale,
                           int path, int threads);
/* The OpenMP runtime the threads run on ("libgomp.so.1", ...), or NULL: POSIX threads. */
const char *xtc_openmp_runtime(void);

#endif
