/* Splitting the products and the quantization across threads (see lowbit.h). */
#define _GNU_SOURCE /* RTLD_NOLOAD */
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lowbit.h"

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
    w->failed[t] = xtc_gemm_run(w->g, lo, hi < w->g->N ? hi : w->g->N, w->path);
}

int xtc_gemm_parallel(const gemm_job *g, int path, int threads) {
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
    xtc_quantize_rows(w->x + lo * w->K, hi - lo, w->K, w->Kp, w->a + lo * w->Kp, w->scale + lo, w->path);
}

void xtc_quantize_parallel(const float *x, int64_t M, int64_t K, int64_t Mp, int64_t Kp, uint8_t *a, float *scale,
                           int path, int threads) {
    quantize_shares w = {x, M, K, Mp, Kp, a, scale, path, clamp_threads(threads, M)};
    run_shares(quantize_share, &w, w.threads);
}

const char *xtc_openmp_runtime(void) {
    if (!openmp.parallel) find_openmp();
    return openmp.parallel ? openmp.name : NULL;
}
