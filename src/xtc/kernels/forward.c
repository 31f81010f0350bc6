/* The whole encoder forward (forward.h): float ops in three builds of one C body, low-bit products
 * from gemm.c, work split across threads by threads.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "lowbit.h"

#define LANES 16 /* float sums run over 16 fixed lanes, then a fixed tree: the same order on every path */
#define INLINE static inline __attribute__((always_inline))

/* ---- scalar building blocks (inlined into each path's build, vectorized there) ------------------- */

/* x rounded to an integer, for |x| < 2^22, round half to even: plain float adds, so it vectorizes */
INLINE float round_small(float x) { return (x + 12582912.0f) - 12582912.0f; }

/* e^x: Cephes' expf polynomial after a Cody-Waite reduction (about 1 ulp); 0 below -87.3 (as exp
 * underflows: masked attention scores must weigh exactly 0), clamped above 88. */
INLINE float exp_poly(float x) {
    const int under = x < -87.33654f;
    float xc = x < -87.33654f ? -87.33654f : x;
    xc = xc > 88.0f ? 88.0f : xc;
    const float n = round_small(xc * 1.44269504088896341f);
    float r = fmaf(n, -0.693359375f, xc);
    r = fmaf(n, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p, r * r, r) + 1.0f;
    union { int32_t i; float f; } two_n = {.i = ((int32_t)n + 127) << 23};
    return under ? 0.0f : p * two_n.f;
}

/* erf as torch's vectorized CPU kernel computes it (Abramowitz & Stegun 7.1.26, with FMAs): the
 * fake-quant model's GELU, so that the 8-bit codes quantized from it match. */
INLINE float erf_as(float x) {
    const float ax = fabsf(x);
    const float t = 1.0f / fmaf(0.3275911f, ax, 1.0f);
    float r = fmaf(1.061405429f, t, -1.453152027f);
    r = fmaf(r, t, 1.421413741f);
    r = fmaf(r, t, -0.284496736f);
    r = fmaf(r, t, 0.254829592f);
    const float y = fmaf(-exp_poly(-(x * x)) * t, r, 1.0f);
    return copysignf(y, x);
}

INLINE float gelu(float v) { return v * 0.5f * (1.0f + erf_as(v * 0.70710678118654752f)); }

INLINE float activate(float v, int act) {
    if (act == ACT_GELU) return gelu(v);
    if (act == ACT_RELU) return v > 0.0f ? v : 0.0f;
    return tanhf(v);
}

/* in place over n values; one loop per activation, so that the GELU loop vectorizes */
INLINE void activate_all(float *x, int64_t n, int act) {
    if (act == ACT_GELU)
        for (int64_t i = 0; i < n; i++) x[i] = gelu(x[i]);
    else
        for (int64_t i = 0; i < n; i++) x[i] = activate(x[i], act);
}

INLINE float tree(float *acc) {
    for (int w = LANES / 2; w; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}


/* acc[l] += f(i) for i = l, l + LANES, ...: blocks of LANES, then the tail (a form that vectorizes) */
#define OVER_LANES(n, acc, expr)                                                   \
    {                                                                              \
        int64_t i0 = 0;                                                            \
        for (; i0 + LANES <= (n); i0 += LANES)                                     \
            for (int l = 0; l < LANES; l++) { const int64_t i = i0 + l; acc[l] = (expr); } \
        for (int l = 0; i0 + l < (n); l++) { const int64_t i = i0 + l; acc[l] = (expr); }  \
    }

/* x = LayerNorm(x + y) of one row (y NULL: of x alone) */
INLINE void add_layer_norm_row(float *x, const float *y, const float *w, const float *b, int64_t H, float eps) {
    if (y)
        for (int64_t i = 0; i < H; i++) x[i] = y[i] + x[i];
    float acc[LANES] = {0}, sq[LANES] = {0};
    OVER_LANES(H, acc, acc[l] + x[i])
    const float mean = tree(acc) / (float)H;
    OVER_LANES(H, sq, fmaf(x[i] - mean, x[i] - mean, sq[l]))
    const float rstd = 1.0f / sqrtf(tree(sq) / (float)H + eps);
    for (int64_t i = 0; i < H; i++) x[i] = fmaf((x[i] - mean) * rstd, w[i], b[i]);
}

static float half_to_float(uint16_t h) { /* exact */
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
    union { uint32_t u; float f; } v;
    if (exp == 0) {
        v.f = (float)man * 5.9604644775390625e-8f; /* subnormal: man * 2^-24 */
        v.u |= sign;
    } else {
        v.u = sign | (exp == 31 ? 0x7F800000u | (man << 13) : ((exp + 112) << 23) | (man << 13));
    }
    return v.f;
}

/* code j of a packed row of a low-bit kind: binary +-1 (bit set: +1); ternary2 0b00 0, 0b01 +1, 0b10 -1;
 * trits: base-3 digit j % 5 of byte j / 5, minus 1 (packed/SPEC.md) */
static inline int packed_code(int kind, const uint8_t *row, int64_t j) {
    if (kind == WORD_BINARY) return (row[j / 8] >> (j % 8)) & 1 ? 1 : -1;
    if (kind == WORD_TERNARY2) {
        const int code = (row[j / 4] >> (2 * (j % 4))) & 3;
        return code == 2 ? -1 : code;
    }
    int v = row[j / 5];
    for (int64_t t = j % 5; t; t--) v /= 3;
    return v % 3 - 1;
}

void xtc_decode_row(int kind, const uint8_t *row, int64_t E, float s, float *out) {
    switch (kind) {
    case WORD_FP32: memcpy(out, row, (size_t)E * sizeof(float)); return;
    case WORD_FP16:
        for (int64_t j = 0; j < E; j++) {
            uint16_t h;
            memcpy(&h, row + 2 * j, 2);
            out[j] = half_to_float(h);
        }
        return;
    case WORD_INT8:
        for (int64_t j = 0; j < E; j++) out[j] = (float)(int8_t)row[j] * s;
        return;
    default: /* code * s: exact */
        for (int64_t j = 0; j < E; j++) out[j] = (float)packed_code(kind, row, j) * s;
    }
}

void xtc_decode_codes(int kind, const uint8_t *rows, int64_t n, int64_t row_bytes, int64_t cols, int8_t *out) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < cols; j++) out[i * cols + j] = (int8_t)packed_code(kind, rows + i * row_bytes, j);
}

/* row `id` of the word table, decoded into out [E] */
static void word_row(const xtc_model *m, int64_t id, float *out) {
    const float s = m->word_scale ? m->word_scale[m->word_scale_per_row ? id : 0] : 1.0f;
    xtc_decode_row(m->word_kind, (const uint8_t *)m->word + id * m->word_row_bytes, m->E, s, out);
}

/* ---- the float ops, built once per path ------------------------------------------------------------ */

typedef struct {
    const xtc_model *m;
    const int64_t *ids, *positions, *types, *mask;
    int64_t B, T, M;
    int64_t queries; /* attention queries per sequence: T, or 1 (the [CLS] row) in the last layer */
    float *x, *y, *qkv, *ctx, *h, *scratch; /* scratch: attention_scratch floats per share */
    float *emb; /* the embeddings [M, E]: x itself when E = H */
    const xtc_layer *layer;
    const float *w, *b; /* the LayerNorm being applied */
    int threads, path;
    uint8_t *a;   /* a quantized Linear's input codes [Mp, Kp] */
    float *scale; /* and their scales [Mp] */
} fwd;

INLINE void embed_body(fwd *f, int64_t lo, int64_t hi) {
    const xtc_model *m = f->m;
    const int64_t E = m->E;
    for (int64_t r = lo; r < hi; r++) {
        float *x = f->emb + r * E;
        word_row(m, f->ids[r], x);
        const float *p = m->pos + f->positions[r] * E, *t = m->types + f->types[r] * E;
        for (int64_t i = 0; i < E; i++) x[i] = (x[i] + p[i]) + t[i];
        add_layer_norm_row(x, NULL, m->emb_ln_w, m->emb_ln_b, E, m->eps);
    }
}

INLINE void add_norm_body(fwd *f, int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; r++)
        add_layer_norm_row(f->x + r * f->m->H, f->y + r * f->m->H, f->w, f->b, f->m->H, f->m->eps);
}

INLINE void activate_body(fwd *f, int64_t lo, int64_t hi) {
    activate_all(f->h + lo * f->m->I, (hi - lo) * f->m->I, f->m->act);
}

/* e^x in place over n values (a loop of its own, so that it vectorizes) */
INLINE void exp_all(float *x, int64_t n, float shift) {
    for (int64_t i = 0; i < n; i++) x[i] = exp_poly(x[i] - shift);
}

/* The attention's vectors: 8 floats as one value (GCC vector extensions: one ymm register, on AVX-512
 * too, where 32 of them let NBLK be 8; a 64-byte type would go through the stack on AVX2). Products are
 * summed by fma8, a correctly rounded fused multiply-add per lane: one vfmadd on the AVX2 and AVX-512
 * builds, libm's fmaf on the reference, the same bits on every path (the reference's attention is slow on a
 * CPU without FMA, where fmaf is done in software: it is the definition, not a path to run). */
typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
INLINE v8 load8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}
INLINE void store8(float *p, v8 v) { memcpy(p, &v, sizeof v); }
INLINE v8 splat8(float x) { return (v8){0} + x; }
INLINE v8 fma8(v8 a, v8 b, v8 c) {
    v8 r;
#pragma GCC unroll 8
    for (int l = 0; l < 8; l++) r[l] = fmaf(a[l], b[l], c[l]);
    return r;
}
INLINE v8 max8(v8 a, v8 b) {
    const v8i bigger = b > a; /* lanes of -1 where b is the larger */
    return (v8)(((v8i)b & bigger) | ((v8i)a & ~bigger));
}

/* Scores of Q queries (1 or 2, rows q[0], q[1]) against NBLK blocks of 8 keys from j0:
 * s = q k.T * scale + bias; top = max(top, s). Two queries share each key load. NBLK and Q are constants
 * per call (as many sums as the registers hold), so the sums stay in registers; each key's sum runs over
 * d in order whatever NBLK and Q are, so every path and pairing gives the same bits. */
INLINE void score_blocks(const float *const *q, const float *kt, int64_t D, int64_t Tp, int64_t j0, float scale,
                         const float *bias, float *const *s, v8 *top, const int NBLK, const int Q) {
    v8 acc0[8], acc1[8]; /* two arrays, not one [2][8]: GCC then keeps each sum in a register */
    for (int c = 0; c < NBLK; c++) acc0[c] = acc1[c] = splat8(0.0f);
    for (int64_t d = 0; d < D; d++) {
        const float *row = kt + d * Tp + j0;
        const v8 q0 = splat8(q[0][d]), q1 = splat8(q[Q - 1][d]);
#pragma GCC unroll 8
        for (int c = 0; c < NBLK; c++) {
            const v8 k = load8(row + c * 8);
            acc0[c] = fma8(q0, k, acc0[c]);
            if (Q > 1) acc1[c] = fma8(q1, k, acc1[c]);
        }
    }
    for (int c = 0; c < NBLK; c++) {
        const v8 b = load8(bias + j0 + c * 8), s0 = acc0[c] * scale + b;
        store8(s[0] + j0 + c * 8, s0);
        top[0] = max8(top[0], s0);
        if (Q > 1) {
            const v8 s1 = acc1[c] * scale + b;
            store8(s[1] + j0 + c * 8, s1);
            top[1] = max8(top[1], s1);
        }
    }
}

/* out[d0 .. d0 + 8 NBLK) = sum_j s[j] v[j, d] over T keys (even and odd keys in two sums, then added) */
INLINE void weigh_blocks(const float *s, const float *vc, int64_t T, int64_t D, int64_t d0, float *out, const int NBLK) {
    v8 even[8], odd[8];
    for (int c = 0; c < NBLK; c++) even[c] = odd[c] = splat8(0.0f);
    int64_t j = 0;
    for (; j + 1 < T; j += 2) {
        const v8 se = splat8(s[j]), so = splat8(s[j + 1]);
#pragma GCC unroll 8
        for (int c = 0; c < NBLK; c++) {
            even[c] = fma8(se, load8(vc + j * D + d0 + c * 8), even[c]);
            odd[c] = fma8(so, load8(vc + (j + 1) * D + d0 + c * 8), odd[c]);
        }
    }
    for (int c = 0; c < NBLK; c++) {
        if (j < T) even[c] = fma8(splat8(s[j]), load8(vc + j * D + d0 + c * 8), even[c]);
        store8(out + d0 + c * 8, even[c] + odd[c]);
    }
}

/* softmax(q k.T / sqrt(D) + mask) v for sequence b, head a and its first `queries` queries: into ctx.
 * Keys are padded to Tp, a multiple of LANES (weight exactly 0); scratch: kt [D, Tp] (the keys
 * transposed), s and s2 [Tp] (two queries' scores), bias [Tp], vc [T, D]. NBLK: blocks of 8 floats summed
 * side by side. */
INLINE void attend_body(fwd *f, int64_t b, int64_t a, float *kt, const int NBLK) {
    const int64_t H = f->m->H, D = H / f->m->A, T = f->T, Tp = (T + LANES - 1) / LANES * LANES, stride = 3 * H;
    float *s = kt + D * Tp, *s2 = s + Tp, *bias = s2 + Tp, *vc = bias + Tp;
    const float *q = f->qkv + b * T * stride + a * D, *k = q + H, *v = q + 2 * H;
    const float scale = 1.0f / sqrtf((float)D);
    for (int64_t j = 0; j < Tp; j++) /* HF's additive mask: the lowest float where the mask is 0 */
        bias[j] = j >= T ? -INFINITY : f->mask[b * T + j] ? 0.0f : -3.4028234663852886e38f;
    for (int64_t d = 0; d < D; d++)
        for (int64_t j = 0; j < Tp; j++) kt[d * Tp + j] = j < T ? k[j * stride + d] : 0.0f;
    /* the head's values, contiguous: rows 3H floats apart would fall in a few L1 sets and evict each other */
    for (int64_t j = 0; j < T; j++) memcpy(vc + j * D, v + j * stride, (size_t)D * sizeof(float));
    const int64_t Dv = D / LANES * LANES; /* features summed in vectors; the rest one by one */
    for (int64_t i0 = 0; i0 < f->queries; i0 += 2) {
        const int Q = f->queries - i0 > 1 ? 2 : 1; /* queries scored together: they share the key loads */
        const float *qs[2] = {q + i0 * stride, q + (i0 + Q - 1) * stride};
        float *ss[2] = {s, s2};
        v8 top[2] = {splat8(-INFINITY), splat8(-INFINITY)};
        int64_t j0 = 0;
        if (Q == 2) {
            for (; j0 + NBLK * 8 <= Tp; j0 += NBLK * 8) score_blocks(qs, kt, D, Tp, j0, scale, bias, ss, top, NBLK, 2);
            for (; j0 < Tp; j0 += 8) score_blocks(qs, kt, D, Tp, j0, scale, bias, ss, top, 1, 2);
        } else {
            for (; j0 + NBLK * 8 <= Tp; j0 += NBLK * 8) score_blocks(qs, kt, D, Tp, j0, scale, bias, ss, top, NBLK, 1);
            for (; j0 < Tp; j0 += 8) score_blocks(qs, kt, D, Tp, j0, scale, bias, ss, top, 1, 1);
        }
        for (int qi = 0; qi < Q; qi++) {
            float *si = ss[qi], lanes[LANES];
            v8 sum_lo = splat8(0.0f), sum_hi = sum_lo;
            store8(lanes, top[qi]);
            float mx = lanes[0];
            for (int l = 1; l < 8; l++) mx = lanes[l] > mx ? lanes[l] : mx;
            exp_all(si, Tp, mx);
            for (j0 = 0; j0 < Tp; j0 += LANES) sum_lo += load8(si + j0), sum_hi += load8(si + j0 + 8);
            store8(lanes, sum_lo), store8(lanes + 8, sum_hi); /* key j's lane is j % 16, as in lane_dot */
            const float inv = 1.0f / tree(lanes);
            for (int64_t j = 0; j < T; j++) si[j] *= inv;
            float *out = f->ctx + (b * T + i0 + qi) * H + a * D;
            int64_t d0 = 0;
            for (; d0 + NBLK * 8 <= Dv; d0 += NBLK * 8) weigh_blocks(si, vc, T, D, d0, out, NBLK);
            for (; d0 < Dv; d0 += 8) weigh_blocks(si, vc, T, D, d0, out, 1);
            for (; d0 < D; d0++) {
                float acc = 0.0f;
                for (int64_t j = 0; j < T; j++) acc = fmaf(si[j], vc[j * D + d0], acc);
                out[d0] = acc;
            }
        }
    }
}

INLINE float lane_dot(const float *x, const float *w, int64_t n) {
    float acc[LANES] = {0};
    OVER_LANES(n, acc, fmaf(x[i], w[i], acc[l]))
    return tree(acc);
}

/* y [M, N] = x [M, K] @ w.T + bias, float weights */
INLINE void float_linear_body(const xtc_linear *l, const float *x, float *y, int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; r++)
        for (int64_t n = 0; n < l->N; n++)
            y[r * l->N + n] = lane_dot(x + r * l->K, l->w + n * l->K, l->K) + (l->bias ? l->bias[n] : 0.0f);
}

typedef struct {
    void (*embed)(fwd *, int64_t, int64_t);
    void (*add_norm)(fwd *, int64_t, int64_t);
    void (*activate)(fwd *, int64_t, int64_t);
    void (*attend)(fwd *, int64_t, int64_t, float *);
    void (*float_linear)(const xtc_linear *, const float *, float *, int64_t, int64_t);
} float_ops;

#define FLOAT_OPS(NAME, ATTR, NBLK)                                                                                       \
    ATTR static void NAME##_embed(fwd *f, int64_t lo, int64_t hi) { embed_body(f, lo, hi); }                       \
    ATTR static void NAME##_add_norm(fwd *f, int64_t lo, int64_t hi) { add_norm_body(f, lo, hi); }                 \
    ATTR static void NAME##_activate(fwd *f, int64_t lo, int64_t hi) { activate_body(f, lo, hi); }                 \
    ATTR static void NAME##_attend(fwd *f, int64_t b, int64_t a, float *kt) { attend_body(f, b, a, kt, NBLK); } \
    ATTR static void NAME##_float_linear(const xtc_linear *l, const float *x, float *y, int64_t lo, int64_t hi) {   \
        float_linear_body(l, x, y, lo, hi);                                                                         \
    }                                                                                                               \
    static const float_ops NAME##_ops = {NAME##_embed, NAME##_add_norm, NAME##_activate, NAME##_attend,             \
                                         NAME##_float_linear};

FLOAT_OPS(ref, , 4)
#ifdef XTC_X86
FLOAT_OPS(avx2, __attribute__((target("avx2,fma"))), 4)   /* 16 ymm registers: 8 sums (2 queries x 4 blocks) */
FLOAT_OPS(avx512, __attribute__((target("avx512f,avx512bw,avx512vl,fma"))), 8)
#endif

static const float_ops *ops_for(int path) {
#ifdef XTC_X86
    if (path == PATH_AVX512) return &avx512_ops;
    if (path == PATH_AVX2) return &avx2_ops;
#endif
    return &ref_ops;
}

/* ---- the forward: each step split across threads ------------------------------------------------------ */

typedef struct {
    fwd *f;
    const float_ops *ops;
    int step;
    const xtc_linear *linear;
    const float *in;
    float *out;
    int64_t rows;
    const xtc_linear *next; /* a quantized Linear that reads the step's output: each share quantizes its rows */
} step_job;

enum { STEP_EMBED, STEP_ADD_NORM, STEP_ACTIVATE, STEP_ATTEND, STEP_FLOAT_LINEAR };

static int64_t attention_scratch(const xtc_model *m, int64_t T) { /* floats per share: kt, s, s2, bias, vc */
    const int64_t Tp = (T + LANES - 1) / LANES * LANES;
    return (2 * (m->H / m->A) + 3) * Tp;
}

static void step_share(void *ctx, int t) {
    step_job *s = ctx;
    fwd *f = s->f;
    const int n = f->threads;
    if (s->step == STEP_ATTEND) { /* shares take (sequence, head) pairs */
        const int64_t pairs = f->B * f->m->A;
        float *kt = f->scratch + (int64_t)t * attention_scratch(f->m, f->T);
        for (int64_t p = pairs * t / n; p < pairs * (t + 1) / n; p++) s->ops->attend(f, p / f->m->A, p % f->m->A, kt);
        return;
    }
    const int64_t lo = s->rows * t / n, hi = s->rows * (t + 1) / n;
    const float *out = f->x; /* the step's output rows [rows, next->K] */
    if (s->step == STEP_EMBED) s->ops->embed(f, lo, hi), out = f->emb;
    else if (s->step == STEP_ADD_NORM) s->ops->add_norm(f, lo, hi);
    else if (s->step == STEP_ACTIVATE) s->ops->activate(f, lo, hi), out = f->h;
    else s->ops->float_linear(s->linear, s->in, s->out, lo, hi);
    if (s->next) /* while the rows are in this core's cache, and without a step of its own */
        xtc_quantize_range(out, s->rows, s->next->K, (s->rows + MR - 1) / MR * MR, s->next->Kp, f->a, f->scale,
                           f->path, lo, hi, t == n - 1);
}

/* next: the Linear that reads the step's output; when it is quantized, the step quantizes its input too */
static int run_step(fwd *f, const float_ops *ops, int step, int64_t rows, const xtc_linear *next) {
    step_job s = {.f = f, .ops = ops, .step = step, .rows = rows, .next = next && next->neg ? next : NULL};
    xtc_run_shares(step_share, &s, f->threads);
    return s.next != NULL;
}

/* rows [B * T, H] -> their [CLS] rows [B, H], in place: row b * T -> row b (b <= b * T, in order) */
static void keep_cls_rows(float *rows, int64_t B, int64_t T, int64_t H) {
    for (int64_t b = 1; b < B; b++) memmove(rows + b * H, rows + b * T * H, (size_t)H * sizeof(float)); /* T = 1: same */
}

/* out [rows, N] = in [rows, K] @ W.T + b; quantized: the step that made `in` has quantized it into f->a */
static int linear(fwd *f, const float_ops *ops, const xtc_linear *l, const float *in, float *out, int64_t rows,
                  int quantized) {
    if (!l->neg) {
        step_job s = {.f = f, .ops = ops, .step = STEP_FLOAT_LINEAR, .linear = l, .in = in, .out = out, .rows = rows};
        xtc_run_shares(step_share, &s, f->threads);
        return 0;
    }
    if (!quantized)
        xtc_quantize_parallel(in, rows, l->K, (rows + MR - 1) / MR * MR, l->Kp, f->a, f->scale, f->path, f->threads);
    const gemm_job g = {.a = f->a, .M = rows, .Kp = l->Kp, .neg = l->neg, .nonzero = l->nonzero,
                        .colsum = l->colsum, .N = l->N, .scale = f->scale, .alpha = l->alpha,
                        .alpha_per_row = l->alpha_per_row, .bias = l->bias, .y = out};
    return xtc_gemm_parallel(&g, f->path, f->threads);
}

int xtc_forward(const xtc_model *m, const int64_t *ids, const int64_t *positions, const int64_t *types,
                const int64_t *mask, int64_t B, int64_t T, float *logits, int path, int threads) {
    const int64_t M = B * T, H = m->H, Mp = (M + MR - 1) / MR * MR;
    const int64_t K1 = m->I > H ? m->I : H, Kmax = ((K1 > m->E ? K1 : m->E) + 3) / 4 * 4;
    const int64_t emb_floats = m->E != H ? M * m->E : 0;
    if (threads < 1) threads = 1;
    fwd f = {.m = m, .ids = ids, .positions = positions, .types = types, .mask = mask, .B = B, .T = T, .M = M,
             .threads = threads, .path = path};
    const size_t floats = (size_t)(M * H * 3 + M * 3 * H + M * m->I + threads * attention_scratch(m, T) + Mp + B * H + emb_floats + 16);
    float *work = malloc(floats * sizeof(float));
    uint8_t *a = malloc((size_t)(Mp * Kmax) + 64);
    if (!work || !a) {
        free(work);
        free(a);
        return -1;
    }
    f.x = work, f.y = f.x + M * H, f.ctx = f.y + M * H, f.qkv = f.ctx + M * H, f.h = f.qkv + M * 3 * H;
    f.scratch = f.h + M * m->I;
    f.a = a, f.scale = f.scratch + threads * attention_scratch(m, T);
    float *pooled = f.scale + Mp;
    f.emb = m->E != H ? pooled + B * H : f.x;
    const float_ops *ops = ops_for(path);
    int failed = 0, quantized;

    /* Each step that makes a quantized Linear's input (embeddings, LayerNorm, GELU) quantizes it too; the
     * attention's output is quantized on its own (a row's context spans the heads, which shares split). */
    const xtc_linear *first = m->E != H ? &m->emb_proj : m->L ? &m->layers[0].qkv : NULL; /* L = 0: [CLS] rows next */
    quantized = run_step(&f, ops, STEP_EMBED, M, first);
    if (m->E != H) {
        failed |= linear(&f, ops, &m->emb_proj, f.emb, f.x, M, quantized);
        quantized = 0;
    }
    for (int64_t i = 0; i < m->L && !failed; i++) {
        const xtc_layer *l = &m->layers[i];
        /* The classifier reads only the [CLS] rows: the last layer needs every row's keys and values, but
         * only the [CLS] rows from its attention on (each row's ops are its own, so the bits are the same). */
        const int last = i == m->L - 1;
        const int64_t rows = last ? B : M;
        failed |= linear(&f, ops, &l->qkv, f.x, f.qkv, M, quantized);
        f.queries = last ? 1 : T;
        run_step(&f, ops, STEP_ATTEND, 0, NULL);
        if (last) keep_cls_rows(f.ctx, B, T, H), keep_cls_rows(f.x, B, T, H);
        failed |= linear(&f, ops, &l->attn_out, f.ctx, f.y, rows, 0);
        f.w = l->ln1_w, f.b = l->ln1_b;
        quantized = run_step(&f, ops, STEP_ADD_NORM, rows, &l->ffn_in);
        failed |= linear(&f, ops, &l->ffn_in, f.x, f.h, rows, quantized);
        quantized = run_step(&f, ops, STEP_ACTIVATE, rows, &l->ffn_out);
        failed |= linear(&f, ops, &l->ffn_out, f.h, f.y, rows, quantized);
        f.w = l->ln2_w, f.b = l->ln2_b;
        quantized = run_step(&f, ops, STEP_ADD_NORM, rows, last ? &m->pooler : &m->layers[i + 1].qkv);
    }
    if (!m->L) keep_cls_rows(f.x, B, T, H), quantized = 0;
    failed |= linear(&f, ops, &m->pooler, f.x, pooled, B, quantized); /* x: the B [CLS] rows now */
    activate_all(pooled, B * H, m->pool_act); /* B x H values: not worth a share */
    failed |= linear(&f, ops, &m->classifier, pooled, logits, B, 0);
    free(work);
    free(a);
    return failed ? -1 : 0;
}
