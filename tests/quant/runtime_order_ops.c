/* forward.c's float ops one by one, for tests/quant/test_runtime_order.py (the reference build: every
 * kernel path gives the same bits, tests/test_engine.py) */
#include "forward.c"

void t_layer_norm(float *x, const float *w, const float *b, int64_t rows, int64_t H, float eps) {
    for (int64_t r = 0; r < rows; r++) add_layer_norm_row(x + r * H, NULL, w, b, H, eps);
}

void t_exp(float *x, int64_t n) { exp_all(x, n, 0.0f); }

void t_gelu(float *x, int64_t n) { activate_all(x, n, ACT_GELU); }

/* qkv [B, T, 3H], mask [B, T] -> ctx [B, T, H] */
void t_attention(const float *qkv, const int64_t *mask, int64_t B, int64_t T, int64_t H, int64_t A, float *ctx) {
    xtc_model m = {.H = H, .A = A};
    fwd f = {.m = &m, .qkv = (float *)qkv, .mask = mask, .B = B, .T = T, .queries = T, .ctx = ctx};
    float *kt = malloc(sizeof(float) * attention_scratch(&m, T));
    for (int64_t b = 0; b < B; b++)
        for (int64_t a = 0; a < A; a++) attend_body(&f, b, a, kt, 4);
    free(kt);
}

/* y [M, N] = x [M, K] @ w.T + bias */
void t_linear(const float *x, const float *w, const float *bias, int64_t M, int64_t N, int64_t K, float *y) {
    const xtc_linear l = {.N = N, .K = K, .w = w, .bias = bias};
    float_linear_body(&l, x, y, 0, M);
}
