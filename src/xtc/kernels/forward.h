/*
 * The whole encoder forward of a packed BERT-family classifier in C (forward.c), over the low-bit
 * products of lowbit.h: no Python between layers. BERT, RoBERTa / XLM-R, ELECTRA and DistilBERT share
 * this layout; the caller gives each its positions, token types (or one row of zeros) and head.
 *
 *   x = LayerNorm(word[ids] + position[positions] + token_type[types])          (M = B*T rows of E)
 *   x = x @ Wp.T + bp  when E != H (ELECTRA's projection of narrower embeddings)   (M rows of H)
 *   per layer:  a = quantize(x)                                                    (once for Q, K and V)
 *               q|k|v = a @ Wqkv.T * s + b                                         (one product, N = 3H)
 *               c = softmax(q k.T / sqrt(D) + mask) v                              (per sequence and head)
 *               x = LayerNorm(c @ Wo.T + bo + x)
 *               h = act(x @ Wi.T + bi);  x = LayerNorm(h @ Wf.T + bf + x)
 *   logits = classifier(pool_act(pooler(x[CLS])))
 *
 * Every float op is written so that the three paths (the scalar reference and the AVX2+FMA and
 * AVX-512 builds of the same C, chosen by `path`) give the same bits: sums run over 16 fixed lanes
 * then a fixed tree (one summation order), products are fmaf (exact by definition) or, in the
 * attention's GCC vector code, plain * and + (never contracted in ISO C), and exp and erf are our own
 * polynomials (no libm calls whose vector versions could round differently). The integer products
 * are exact (lowbit.h), so the whole forward is bit-identical on every path.
 */
#ifndef XTC_FORWARD_H
#define XTC_FORWARD_H

#include <stdint.h>

enum { ACT_GELU = 0, ACT_RELU = 1, ACT_TANH = 2 };
/* How the word embedding table is stored (the packed file's encodings): decoded row by row on lookup. */
enum { WORD_FP32 = 0, WORD_FP16 = 1, WORD_BINARY = 2, WORD_TERNARY2 = 3, WORD_TRITS = 4, WORD_INT8 = 5 };

typedef struct {
    int64_t N, K, Kp;
    /* low-bit weights (neg != NULL): the layout of lowbit.h, scales alpha [1] or [N] */
    const uint64_t *neg, *nonzero;
    const int32_t *colsum;
    const float *alpha;
    int alpha_per_row;
    const float *w; /* float weights [N, K] otherwise */
    const float *bias; /* [N] or NULL */
} xtc_linear;

typedef struct {
    xtc_linear qkv, attn_out, ffn_in, ffn_out;
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
} xtc_layer;

typedef struct {
    int64_t H, I, A, L, labels, vocab, max_pos, type_vocab;
    int64_t E; /* the embeddings' width: H, or narrower with a projection to H */
    float eps;
    int act, pool_act;
    int word_kind;
    const void *word;        /* [vocab, row_bytes]: E values a row */
    int64_t word_row_bytes;
    const float *word_scale; /* [1] or [vocab] for the scaled kinds */
    int word_scale_per_row;
    const float *pos, *types, *emb_ln_w, *emb_ln_b; /* [max_pos, E], [type_vocab, E], [E], [E] */
    xtc_linear emb_proj;     /* E -> H; used only when E != H */
    const xtc_layer *layers; /* [L] */
    xtc_linear pooler, classifier;
} xtc_model;

/* logits [B, labels]; ids, positions, types, mask [B, T] (checked by the caller: in range).
 * Returns 0, or -1 when out of memory. */
int xtc_forward(const xtc_model *m, const int64_t *ids, const int64_t *positions, const int64_t *types,
                const int64_t *mask, int64_t B, int64_t T, float *logits, int path, int threads);

/* One stored row of E values of a kind (WORD_*), times s for the scaled kinds, into out [E]: how the word
 * table is looked up, and how the engine decodes the other stored tensors at load. */
void xtc_decode_row(int kind, const uint8_t *row, int64_t E, float s, float *out);
/* n packed rows (row_bytes apart) of a low-bit kind (WORD_BINARY, WORD_TERNARY2, WORD_TRITS) -> their int8
 * codes out [n, cols] (ternary2's invalid code 0b11 gives 3, which xtc_prepare_weights refuses) */
void xtc_decode_codes(int kind, const uint8_t *rows, int64_t n, int64_t row_bytes, int64_t cols, int8_t *out);

#endif
