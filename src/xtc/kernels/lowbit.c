/*
 * Low-bit matrix products for xtc's packed runtime (CPython extension `xtc.kernels._lowbit`).
 *
 * Every kernel has a portable scalar reference beside its AVX2 path; the path is
 * chosen at run time (`__builtin_cpu_supports("avx2")`) unless the caller forces
 * the reference. Integer accumulators are exact: both paths return the same int32.
 *
 *   quantize_rows(x f32 [M,K]) -> q i8 [M,K], scale f32 [M]
 *       per-token symmetric 8-bit: scale = max|x_m| / 128, q = clamp(rint(x / scale), -128, 127)
 *       (the fake-quant of xtc.quant.primitives.symmetric_codes, bits = 8, granularity "row")
 *   gemm_sign(q i8 [M,K], plane u8 [N, ceil(K/8)]) -> acc i32 [M,N]
 *       acc[m,n] = sum_k q[m,k] * (bit_k(plane[n]) ? 1 : 0)
 *       A binary weight row is sign = 2 * bit - 1:  q.sign = 2 * gemm_sign(bits) - sum_k q.
 *       A ternary row is plus_plane - minus_plane: q.t = gemm_sign(plus) - gemm_sign(minus).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <immintrin.h>

/* ---- per-token activation quantization --------------------------------------------------------- */

static void quantize_rows_ref(const float *x, int64_t M, int64_t K, int8_t *q, float *scale) {
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
            q[m * K + k] = (int8_t)v;
        }
    }
}

/* ---- masked sums: the integer core -------------------------------------------------------------- */

static void gemm_sign_ref(const int8_t *q, const uint8_t *plane, int64_t M, int64_t N, int64_t K, int32_t *acc) {
    const int64_t KB = (K + 7) / 8;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            int32_t sum = 0;
            for (int64_t k = 0; k < K; k++)
                if ((plane[n * KB + k / 8] >> (k % 8)) & 1) sum += q[m * K + k];
            acc[m * N + n] = sum;
        }
}

#if defined(__x86_64__) || defined(__i386__)
#define XTC_HAVE_AVX2 1

/* 32 bits -> 32 bytes of 0xFF (bit set) or 0x00. */
__attribute__((target("avx2"))) static inline __m256i expand_bits(uint32_t bits) {
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i select = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), spread);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, select), select);
}

/* Sum of the int8 lanes of `masked` into 8 int32 lanes of `acc`. */
__attribute__((target("avx2"))) static inline __m256i add_i8(__m256i acc, __m256i masked) {
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, masked), ones16));
}

__attribute__((target("avx2"))) static inline int32_t hsum(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* Four tokens per weight row: each 32-bit mask is expanded once and used four times. */
__attribute__((target("avx2")))
static void gemm_sign_avx2(const int8_t *q, const uint8_t *plane, int64_t M, int64_t N, int64_t K, int32_t *acc) {
    const int64_t KB = (K + 7) / 8, K32 = K / 32 * 32;
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
        const int64_t mt = M - m0 < 4 ? M - m0 : 4;
        for (int64_t n = 0; n < N; n++) {
            const uint8_t *w = plane + n * KB;
            __m256i a[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                            _mm256_setzero_si256()};
            for (int64_t k = 0; k < K32; k += 32) {
                uint32_t bits;
                memcpy(&bits, w + k / 8, 4);
                const __m256i mask = expand_bits(bits);
                for (int64_t i = 0; i < mt; i++) {
                    const __m256i x = _mm256_loadu_si256((const __m256i *)(q + (m0 + i) * K + k));
                    a[i] = add_i8(a[i], _mm256_and_si256(x, mask));
                }
            }
            for (int64_t i = 0; i < mt; i++) {
                int32_t sum = hsum(a[i]);
                const int8_t *row = q + (m0 + i) * K;
                for (int64_t k = K32; k < K; k++) /* the tail that is not a multiple of 32 */
                    if ((w[k / 8] >> (k % 8)) & 1) sum += row[k];
                acc[(m0 + i) * N + n] = sum;
            }
        }
    }
}
#endif

static int use_avx2(int force_reference) {
#ifdef XTC_HAVE_AVX2
    return !force_reference && __builtin_cpu_supports("avx2");
#else
    (void)force_reference;
    return 0;
#endif
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

static PyObject *py_quantize_rows(PyObject *self, PyObject *args) {
    PyObject *xo, *qo, *so;
    long long M, K;
    if (!PyArg_ParseTuple(args, "OLLOO", &xo, &M, &K, &qo, &so)) return NULL;
    Py_buffer x, q, s;
    if (get_buffer(xo, &x, 4, M * K, 0, "x") < 0) return NULL;
    if (get_buffer(qo, &q, 1, M * K, 1, "q") < 0) { PyBuffer_Release(&x); return NULL; }
    if (get_buffer(so, &s, 4, M, 1, "scale") < 0) { PyBuffer_Release(&x); PyBuffer_Release(&q); return NULL; }
    Py_BEGIN_ALLOW_THREADS
    quantize_rows_ref((const float *)x.buf, M, K, (int8_t *)q.buf, (float *)s.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&x); PyBuffer_Release(&q); PyBuffer_Release(&s);
    Py_RETURN_NONE;
}

static PyObject *py_gemm_sign(PyObject *self, PyObject *args) {
    PyObject *qo, *po, *ao;
    long long M, N, K;
    int force_reference;
    if (!PyArg_ParseTuple(args, "OOLLLOp", &qo, &po, &M, &N, &K, &ao, &force_reference)) return NULL;
    Py_buffer q, p, a;
    if (get_buffer(qo, &q, 1, M * K, 0, "q") < 0) return NULL;
    if (get_buffer(po, &p, 1, N * ((K + 7) / 8), 0, "plane") < 0) { PyBuffer_Release(&q); return NULL; }
    if (get_buffer(ao, &a, 4, M * N, 1, "acc") < 0) { PyBuffer_Release(&q); PyBuffer_Release(&p); return NULL; }
    const int avx2 = use_avx2(force_reference);
    Py_BEGIN_ALLOW_THREADS
#ifdef XTC_HAVE_AVX2
    if (avx2) gemm_sign_avx2((const int8_t *)q.buf, (const uint8_t *)p.buf, M, N, K, (int32_t *)a.buf);
    else
#endif
        gemm_sign_ref((const int8_t *)q.buf, (const uint8_t *)p.buf, M, N, K, (int32_t *)a.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&q); PyBuffer_Release(&p); PyBuffer_Release(&a);
    (void)avx2;
    Py_RETURN_NONE;
}

static PyObject *py_has_avx2(PyObject *self, PyObject *noargs) { return PyBool_FromLong(use_avx2(0)); }

static PyMethodDef methods[] = {
    {"quantize_rows", py_quantize_rows, METH_VARARGS, "quantize_rows(x, M, K, q_out, scale_out)"},
    {"gemm_sign", py_gemm_sign, METH_VARARGS, "gemm_sign(q, plane, M, N, K, acc_out, force_reference)"},
    {"has_avx2", py_has_avx2, METH_NOARGS, "whether the AVX2 paths run on this CPU"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_lowbit", "xtc low-bit kernels", -1, methods};

PyMODINIT_FUNC PyInit__lowbit(void) { return PyModule_Create(&module); }
