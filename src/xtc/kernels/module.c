/* The Python bindings of xtc.kernels._lowbit: contiguous buffers in, results written into
 * caller-allocated buffers (see lowbit.h for what the kernels compute). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>

#include "forward.h"
#include "lowbit.h"

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
    if (path == PATH_AUTO) return xtc_best_path();
    if (path < PATH_REFERENCE || path > PATH_AVX512 || !xtc_cpu_has(path)) {
        PyErr_Format(PyExc_ValueError, "kernel path %d is not available on this CPU", path);
        return -1;
    }
    return path;
}

/* The buffers a call holds, taken from Python objects and checked against the shapes. */
typedef struct {
    Py_buffer views[8];
    int held;
} held_buffers;

/* obj's buffer (None: NULL), held in h; on a bad buffer, NULL with an exception and *ok = 0. Does
 * nothing once *ok is 0, so a call takes its buffers one after the other and checks ok once. */
static void *take(held_buffers *h, PyObject *obj, Py_ssize_t itemsize, Py_ssize_t count, int writable,
                  const char *name, int *ok) {
    if (!*ok || obj == Py_None) return NULL;
    if (get_buffer(obj, &h->views[h->held], itemsize, count, writable, name) < 0) {
        *ok = 0;
        return NULL;
    }
    return h->views[h->held++].buf;
}

/* Releases the buffers and returns the call's result: None, or NULL with an exception. */
static PyObject *finish(held_buffers *h, int ok, int failed) {
    while (h->held) PyBuffer_Release(&h->views[--h->held]);
    if (!ok) return NULL;
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_quantize_rows(PyObject *self, PyObject *args) {
    PyObject *xo, *ao, *so;
    long long M, K, Mp, Kp;
    int path, threads;
    if (!PyArg_ParseTuple(args, "OLLOLLOii", &xo, &M, &K, &ao, &Mp, &Kp, &so, &path, &threads)) return NULL;
    if ((path = resolve_path(path)) < 0) return NULL;
    if (Mp < M || Kp < K) return PyErr_Format(PyExc_ValueError, "padded shape smaller than the data");
    held_buffers h = {.held = 0};
    int ok = 1;
    const float *x = take(&h, xo, 4, M * K, 0, "x", &ok);
    uint8_t *a = take(&h, ao, 1, Mp * Kp, 1, "a", &ok);
    float *scale = take(&h, so, 4, M, 1, "scale", &ok);
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        xtc_quantize_parallel(x, M, K, Mp, Kp, a, scale, path, threads);
        Py_END_ALLOW_THREADS
    }
    return finish(&h, ok, 0);
}

/* Fills g's weight, scale and output fields (g->M, g->Kp, g->N set); clears *ok on a bad buffer. */
static void take_gemm_buffers(gemm_job *g, held_buffers *h, PyObject *no, PyObject *zo, PyObject *co, PyObject *alo,
                              PyObject *bo, PyObject *oo, int scaled, int *ok) {
    const long long np = (g->N + PANEL - 1) / PANEL, kq = g->Kp / 4;
    g->neg = take(h, no, 8, np * kq, 0, "neg", ok);
    g->nonzero = take(h, zo, 8, np * kq, 0, "nonzero", ok);
    g->colsum = take(h, co, 4, g->N, 0, "colsum", ok);
    if (scaled && *ok) {
        Py_buffer probe;
        if (PyObject_GetBuffer(alo, &probe, PyBUF_C_CONTIGUOUS) < 0) {
            *ok = 0;
            return;
        }
        g->alpha_per_row = probe.len == 4 * g->N && g->N > 1;
        PyBuffer_Release(&probe);
        g->alpha = take(h, alo, 4, g->alpha_per_row ? g->N : 1, 0, "alpha", ok);
        g->bias = take(h, bo, 4, g->N, 0, "bias", ok);
        g->y = take(h, oo, 4, g->M * g->N, 1, "y", ok);
    } else if (!scaled) {
        g->acc = take(h, oo, 4, g->M * g->N, 1, "acc", ok);
    }
    if (*ok && (!g->neg || !g->colsum || (scaled ? !g->y : !g->acc))) {
        PyErr_SetString(PyExc_ValueError, "neg, colsum and the output are required");
        *ok = 0;
    }
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
    gemm_job g = {.M = M, .Kp = Kp, .N = N};
    held_buffers h = {.held = 0};
    int ok = 1, failed = 0;
    take_gemm_buffers(&g, &h, no, zo, co, Py_None, Py_None, oo, 0, &ok);
    g.a = take(&h, ao, 1, (M + MR - 1) / MR * MR * Kp, 0, "a", &ok);
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        failed = xtc_gemm_parallel(&g, path, threads);
        Py_END_ALLOW_THREADS
    }
    return finish(&h, ok, failed);
}

/* linear(x, M, K, Kp, neg, nonzero|None, colsum, N, alpha, bias|None, y, path, threads): the fused
 * Linear, y = quantize(x) @ w.T * (scale * alpha) + bias, quantization and product both split across
 * threads. */
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
    int ok = 1, failed = 0;
    take_gemm_buffers(&g, &h, no, zo, co, alo, bo, oo, 1, &ok);
    const float *x = take(&h, xo, 4, M * K, 0, "x", &ok);
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        uint8_t *a = malloc((size_t)(rows * Kp) + 1);
        float *scale = malloc((size_t)(M + 1) * sizeof(float));
        if (a && scale) {
            xtc_quantize_parallel(x, M, K, rows, Kp, a, scale, path, threads);
            g.a = a, g.scale = scale;
            failed = xtc_gemm_parallel(&g, path, threads);
        } else {
            failed = 1;
        }
        free(a);
        free(scale);
        Py_END_ALLOW_THREADS
    }
    return finish(&h, ok, failed);
}

/* prepare(codes, N, K, Kp, neg, nonzero|None, colsum) -> True, or False when a code is out of range:
 * int8 weight codes [N, K] into the kernels' layout (lowbit.h; nonzero None: binary codes). */
static PyObject *py_prepare(PyObject *self, PyObject *args) {
    PyObject *wo, *no, *zo, *co;
    long long N, K, Kp;
    if (!PyArg_ParseTuple(args, "OLLLOOO", &wo, &N, &K, &Kp, &no, &zo, &co)) return NULL;
    if (Kp % 4 || Kp < K || N < 0 || K < 0) return PyErr_Format(PyExc_ValueError, "bad weight shape");
    const long long words = (N + PANEL - 1) / PANEL * (Kp / 4);
    held_buffers h = {.held = 0};
    int ok = 1, status = 0;
    const int8_t *codes = take(&h, wo, 1, N * K, 0, "codes", &ok);
    uint64_t *neg = take(&h, no, 8, words, 1, "neg", &ok), *nonzero = take(&h, zo, 8, words, 1, "nonzero", &ok);
    int32_t *colsum = take(&h, co, 4, N, 1, "colsum", &ok);
    if (ok && (!neg || !colsum)) {
        PyErr_SetString(PyExc_ValueError, "neg and colsum are required");
        ok = 0;
    }
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        status = xtc_prepare_weights(codes, N, K, Kp, neg, nonzero, colsum);
        Py_END_ALLOW_THREADS
    }
    PyObject *done = finish(&h, ok, 0);
    if (!done) return NULL;
    Py_DECREF(done);
    return PyBool_FromLong(status == 0);
}

/* ---- decoding stored tensors (the engine's load, without numpy) ------------------------------------------ */

/* the bytes a stored row of `cols` values of a kind (WORD_*) holds, or -1 for a kind out of range */
static long long row_bytes_of(int kind, long long cols) {
    const long long needs[] = {4 * cols, 2 * cols, (cols + 7) / 8, (cols + 3) / 4, (cols + 4) / 5, cols};
    return kind < WORD_FP32 || kind > WORD_INT8 ? -1 : needs[kind];
}

/* decode(kind, rows_buffer, n, cols, scale|None, out): n stored rows -> float32 out [n, cols]; scale: [1] or
 * [n] float32 for the scaled kinds */
static PyObject *py_decode(PyObject *self, PyObject *args) {
    PyObject *ro, *so, *oo;
    long long n, cols;
    int kind;
    if (!PyArg_ParseTuple(args, "iOLLOO", &kind, &ro, &n, &cols, &so, &oo)) return NULL;
    const long long rb = row_bytes_of(kind, cols);
    if (rb < 0 || n < 0 || cols < 0) return PyErr_Format(PyExc_ValueError, "bad kind or shape");
    const Py_ssize_t scales = so == Py_None ? 0 : PyObject_Length(so);
    if (scales < 0) return NULL;
    if (so != Py_None && scales != 1 && scales != n) return PyErr_Format(PyExc_ValueError, "scale: 1 or n values");
    held_buffers h = {.held = 0};
    int ok = 1;
    const uint8_t *rows = take(&h, ro, 1, n * rb, 0, "rows", &ok);
    const float *scale = take(&h, so, 4, scales, 0, "scale", &ok);
    float *out = take(&h, oo, 4, n * cols, 1, "out", &ok);
    if (ok)
        for (long long i = 0; i < n; i++)
            xtc_decode_row(kind, rows + i * rb, cols, scale ? scale[scales == 1 ? 0 : i] : 1.0f, out + i * cols);
    return finish(&h, ok, 0);
}

/* decode_codes(kind, rows_buffer, n, cols, out): n packed rows of a low-bit kind -> int8 codes out [n, cols] */
static PyObject *py_decode_codes(PyObject *self, PyObject *args) {
    PyObject *ro, *oo;
    long long n, cols;
    int kind;
    if (!PyArg_ParseTuple(args, "iOLLO", &kind, &ro, &n, &cols, &oo)) return NULL;
    if (kind < WORD_BINARY || kind > WORD_TRITS || n < 0 || cols < 0)
        return PyErr_Format(PyExc_ValueError, "bad kind or shape");
    const long long rb = row_bytes_of(kind, cols);
    held_buffers h = {.held = 0};
    int ok = 1;
    const uint8_t *rows = take(&h, ro, 1, n * rb, 0, "rows", &ok);
    int8_t *out = take(&h, oo, 1, n * cols, 1, "out", &ok);
    if (ok) xtc_decode_codes(kind, rows, n, rb, cols, out);
    return finish(&h, ok, 0);
}

/* ---- the whole forward (forward.h) ---------------------------------------------------------------------
 * model(spec) -> a capsule holding an xtc_model whose pointers are views of the spec's arrays (held,
 * so the arrays live as long as the capsule); forward(model, ids, positions, types, mask, B, T, logits,
 * path, threads). The spec's layout is built by xtc.engine (_model_spec). */
typedef struct {
    xtc_model m;
    xtc_layer *layers;
    Py_buffer *views;
    int held, cap;
} model_holder;

static void free_holder(model_holder *h) {
    while (h->held) PyBuffer_Release(&h->views[--h->held]);
    free(h->views);
    free(h->layers);
    free(h);
}

static void model_destructor(PyObject *capsule) { free_holder(PyCapsule_GetPointer(capsule, "xtc.model")); }

/* obj's buffer (None: NULL when may_be_none), itemsize x count bytes, held for the model's life */
static const void *hold(model_holder *h, PyObject *obj, Py_ssize_t itemsize, Py_ssize_t count, const char *name,
                        int may_be_none, int *ok) {
    if (!*ok) return NULL;
    if (obj == Py_None) {
        if (!may_be_none) {
            PyErr_Format(PyExc_ValueError, "%s is required", name);
            *ok = 0;
        }
        return NULL;
    }
    if (get_buffer(obj, &h->views[h->held], itemsize, count, 0, name) < 0) {
        *ok = 0;
        return NULL;
    }
    return h->views[h->held++].buf;
}

static void hold_linear(model_holder *h, PyObject *spec, xtc_linear *l, int64_t N, int64_t K, int *ok) {
    PyObject *neg, *nonzero, *colsum, *alpha, *w, *bias;
    long long Kp;
    if (!*ok) return;
    if (!PyArg_ParseTuple(spec, "LOOOOOO", &Kp, &neg, &nonzero, &colsum, &alpha, &w, &bias)) {
        *ok = 0;
        return;
    }
    l->N = N, l->K = K, l->Kp = Kp;
    if (neg != Py_None) {
        if (Kp < K || Kp % 4) {
            PyErr_SetString(PyExc_ValueError, "bad padded width");
            *ok = 0;
            return;
        }
        const int64_t words = (N + PANEL - 1) / PANEL * (Kp / 4);
        l->neg = hold(h, neg, 8, words, "neg", 0, ok);
        l->nonzero = hold(h, nonzero, 8, words, "nonzero", 1, ok);
        l->colsum = hold(h, colsum, 4, N, "colsum", 0, ok);
        if (*ok && PyObject_Length(alpha) != 1 && PyObject_Length(alpha) != N) {
            PyErr_SetString(PyExc_ValueError, "alpha: 1 or N scales");
            *ok = 0;
            return;
        }
        l->alpha_per_row = *ok && PyObject_Length(alpha) == N && N > 1;
        l->alpha = hold(h, alpha, 4, l->alpha_per_row ? N : 1, "alpha", 0, ok);
    } else {
        l->w = hold(h, w, 4, N * K, "w", 0, ok);
    }
    l->bias = hold(h, bias, 4, N, "bias", 1, ok);
}

static PyObject *py_model(PyObject *self, PyObject *args) {
    PyObject *word, *word_scale, *pos, *types, *ln_w, *ln_b, *proj, *layers, *pooler, *classifier;
    long long H, I, A, L, labels, vocab, max_pos, type_vocab, E, row_bytes;
    double eps;
    int act, pool_act, word_kind;
    if (!PyArg_ParseTuple(args, "(LLLLLLLLL)diiiOLOOOOOOO!OO", &H, &I, &A, &L, &labels, &vocab, &max_pos, &type_vocab,
                          &E, &eps, &act, &pool_act, &word_kind, &word, &row_bytes, &word_scale, &pos, &types, &ln_w,
                          &ln_b, &proj, &PyTuple_Type, &layers, &pooler, &classifier))
        return NULL;
    if (H < 1 || I < 1 || A < 1 || H % A || L < 0 || labels < 1 || vocab < 1 || max_pos < 1 || type_vocab < 1 ||
        E < 1 || (E != H) != (proj != Py_None) ||
        PyTuple_GET_SIZE(layers) != L || word_kind < WORD_FP32 || word_kind > WORD_INT8 || act < ACT_GELU ||
        act > ACT_TANH || pool_act < ACT_GELU || pool_act > ACT_TANH)
        return PyErr_Format(PyExc_ValueError, "bad model geometry");
    /* the bytes word_row (forward.c) reads of a row of E values */
    if (row_bytes < row_bytes_of(word_kind, E)) return PyErr_Format(PyExc_ValueError, "word rows of %lld bytes hold "
                                                                      "fewer than %lld values", row_bytes, E);
    model_holder *h = calloc(1, sizeof *h);
    if (!h) return PyErr_NoMemory();
    h->cap = (int)(32 + 40 * L); /* buffers held: at most 21 outside the layers (6 tables, 3 Linears of 5)
                                  * and 24 in each (4 Linears of 5, 4 LayerNorm vectors), with room to spare */
    h->views = calloc((size_t)h->cap, sizeof(Py_buffer));
    h->layers = calloc((size_t)(L ? L : 1), sizeof(xtc_layer));
    if (!h->views || !h->layers) {
        free_holder(h);
        return PyErr_NoMemory();
    }
    xtc_model *m = &h->m;
    *m = (xtc_model){.H = H, .I = I, .A = A, .L = L, .labels = labels, .vocab = vocab, .max_pos = max_pos,
                     .type_vocab = type_vocab, .E = E, .eps = (float)eps, .act = act, .pool_act = pool_act,
                     .word_kind = word_kind, .word_row_bytes = row_bytes, .layers = h->layers};
    int ok = 1;
    m->word = hold(h, word, 1, vocab * row_bytes, "word", 0, &ok);
    if (ok && word_scale != Py_None) {
        const Py_ssize_t n = PyObject_Length(word_scale);
        m->word_scale_per_row = n == vocab && vocab > 1;
        m->word_scale = hold(h, word_scale, 4, m->word_scale_per_row ? vocab : 1, "word_scale", 0, &ok);
    }
    m->pos = hold(h, pos, 4, max_pos * E, "pos", 0, &ok);
    m->types = hold(h, types, 4, type_vocab * E, "types", 0, &ok);
    m->emb_ln_w = hold(h, ln_w, 4, E, "emb_ln_w", 0, &ok);
    m->emb_ln_b = hold(h, ln_b, 4, E, "emb_ln_b", 0, &ok);
    if (E != H) hold_linear(h, proj, &m->emb_proj, H, E, &ok);
    for (int64_t i = 0; i < L && ok; i++) {
        PyObject *qkv, *out, *fin, *fout, *w1, *b1, *w2, *b2;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(layers, i), "OOOOOOOO", &qkv, &out, &fin, &fout, &w1, &b1, &w2, &b2)) {
            ok = 0;
            break;
        }
        xtc_layer *l = &h->layers[i];
        hold_linear(h, qkv, &l->qkv, 3 * H, H, &ok);
        hold_linear(h, out, &l->attn_out, H, H, &ok);
        hold_linear(h, fin, &l->ffn_in, I, H, &ok);
        hold_linear(h, fout, &l->ffn_out, H, I, &ok);
        l->ln1_w = hold(h, w1, 4, H, "ln1_w", 0, &ok);
        l->ln1_b = hold(h, b1, 4, H, "ln1_b", 0, &ok);
        l->ln2_w = hold(h, w2, 4, H, "ln2_w", 0, &ok);
        l->ln2_b = hold(h, b2, 4, H, "ln2_b", 0, &ok);
    }
    hold_linear(h, pooler, &m->pooler, H, H, &ok);
    hold_linear(h, classifier, &m->classifier, labels, H, &ok);
    if (!ok) {
        free_holder(h);
        return NULL;
    }
    PyObject *capsule = PyCapsule_New(h, "xtc.model", model_destructor);
    if (!capsule) free_holder(h);
    return capsule;
}

static PyObject *py_forward(PyObject *self, PyObject *args) {
    PyObject *mo, *io, *po, *to, *ko, *lo;
    long long B, T;
    int path, threads;
    if (!PyArg_ParseTuple(args, "OOOOOLLOii", &mo, &io, &po, &to, &ko, &B, &T, &lo, &path, &threads)) return NULL;
    const model_holder *mh = PyCapsule_GetPointer(mo, "xtc.model");
    if (!mh) return NULL;
    if ((path = resolve_path(path)) < 0) return NULL;
    const xtc_model *m = &mh->m;
    if (B < 1 || T < 1) return PyErr_Format(PyExc_ValueError, "bad input shape"); /* positions: checked below */
    held_buffers h = {.held = 0};
    int ok = 1, failed = 0;
    const int64_t *ids = take(&h, io, 8, B * T, 0, "input_ids", &ok);
    const int64_t *positions = take(&h, po, 8, B * T, 0, "positions", &ok);
    const int64_t *types = take(&h, to, 8, B * T, 0, "token_type_ids", &ok);
    const int64_t *mask = take(&h, ko, 8, B * T, 0, "attention_mask", &ok);
    float *logits = take(&h, lo, 4, B * m->labels, 1, "logits", &ok);
    for (int64_t i = 0; ok && i < B * T; i++) /* every index the forward looks up, in range */
        if (ids[i] < 0 || ids[i] >= m->vocab || positions[i] < 0 || positions[i] >= m->max_pos || types[i] < 0 ||
            types[i] >= m->type_vocab) {
            PyErr_Format(PyExc_ValueError, "token %lld: id, position or token type out of range", (long long)i);
            ok = 0;
        }
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        failed = xtc_forward(m, ids, positions, types, mask, B, T, logits, path, threads);
        Py_END_ALLOW_THREADS
    }
    return finish(&h, ok, failed);
}

static PyObject *py_available_paths(PyObject *self, PyObject *noargs) {
    PyObject *out = PyList_New(0);
    const char *names[] = {"", "reference", "avx2", "avx512-vnni"};
    for (int p = PATH_REFERENCE; p <= PATH_AVX512; p++)
        if (xtc_cpu_has(p)) {
            PyObject *name = PyUnicode_FromString(names[p]);
            PyList_Append(out, name);
            Py_DECREF(name);
        }
    return out;
}

/* Which threads run the shares: the process's OpenMP runtime, or POSIX threads. */
static PyObject *py_threading(PyObject *self, PyObject *noargs) {
    const char *runtime = xtc_openmp_runtime();
    return runtime ? PyUnicode_FromFormat("openmp (%s)", runtime) : PyUnicode_FromString("pthreads");
}

static PyMethodDef methods[] = {
    {"quantize_rows", py_quantize_rows, METH_VARARGS, "quantize_rows(x, M, K, a_out, Mp, Kp, scale_out, path, threads)"},
    {"linear", py_linear, METH_VARARGS,
     "linear(x, M, K, Kp, neg, nonzero, colsum, N, alpha, bias, y, path, threads): quantize and multiply"},
    {"prepare", py_prepare, METH_VARARGS,
     "prepare(codes, N, K, Kp, neg, nonzero, colsum): weight codes into the kernels' layout; False on a bad code"},
    {"gemm", py_gemm, METH_VARARGS, "gemm(a, M, Kp, neg, nonzero, colsum, N, acc, path, threads): int32 products"},
    {"decode", py_decode, METH_VARARGS, "decode(kind, rows, n, cols, scale, out): stored rows -> float32"},
    {"decode_codes", py_decode_codes, METH_VARARGS, "decode_codes(kind, rows, n, cols, out): packed rows -> int8 codes"},
    {"model", py_model, METH_VARARGS, "model(spec): a capsule for forward (the spec: xtc.engine)"},
    {"forward", py_forward, METH_VARARGS,
     "forward(model, ids, positions, types, mask, B, T, logits, path, threads): the whole encoder forward"},
    {"available_paths", py_available_paths, METH_NOARGS, "the kernel paths this CPU runs, slowest first"},
    {"threading", py_threading, METH_NOARGS, "what runs the kernels' threads: 'openmp (LIB)' or 'pthreads'"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_lowbit", .m_doc = "xtc low-bit kernels", .m_size = -1, .m_methods = methods};

/* Bumped whenever the functions above change: xtc.kernels refuses a build older than its Python side. */
#define API_VERSION 5

PyMODINIT_FUNC PyInit__lowbit(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "API_VERSION", API_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
