/* Splitting the products and the quantization across threads (see lowbit.h). */
#define _GNU_SOURCE /* RTLD_NOLOAD */
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
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
 * run on our own pool of POSIX threads (below). The runtime is found, never loaded (RTLD_NOLOAD): nothing to link. */
typedef void (*gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);
typedef int (*omp_query_fn)(void);
static struct {
    gomp_parallel_fn parallel;
    omp_query_fn thread_num, num_threads;
    const char *name;
} openmp;
static pthread_mutex_t openmp_lock = PTHREAD_MUTEX_INITIALIZER;

/* How many shared objects the process has loaded so far (glibc counts them: dlpi_adds). */
static int count_loads(struct dl_phdr_info *info, size_t size, void *out) {
    *(unsigned long long *)out = info->dlpi_adds;
    return 1; /* the first object carries the count */
}

/* Looked for until found: torch (and its runtime) may be imported after the first call. Looking
 * (dlopen) costs tens of microseconds, so it is done again only once more objects are loaded. */
static void find_openmp(void) {
    static _Atomic unsigned long long looked_at = ~0ULL;
    unsigned long long loads = 0;
    dl_iterate_phdr(count_loads, &loads);
    if (loads == looked_at) return;
    pthread_mutex_lock(&openmp_lock);
    looked_at = loads;
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

/* `count` shares of one piece of work: share(ctx, t) for t in [0, count). */
typedef struct {
    xtc_share_fn share;
    void *ctx;
    int count;
} share_list;

/* Runs on every thread of the OpenMP team; a team smaller than asked still runs every share. */
static void run_shares_openmp(void *arg) {
    share_list *list = arg;
    const int team = openmp.num_threads(), me = openmp.thread_num();
    for (int t = me; t < list->count; t += team) list->share(list->ctx, t);
}

/* ---- our own pool, when no OpenMP runtime is loaded ----------------------------------------------------
 * Workers started once and kept: a forward calls the pool about 10 times per layer, and starting
 * threads for each call cost more than the work at short inputs. A worker spins for a while after
 * each job (the next one comes within microseconds inside a forward), then sleeps on a condition
 * variable. One caller at a time: a second concurrent caller runs its shares on its own thread. */
#define SPINS 200000
static struct {
    pthread_mutex_t lock, busy;
    pthread_cond_t wake;
    int size;                 /* workers started */
    _Atomic unsigned generation;
    _Atomic int pending;      /* shares not yet finished */
    _Atomic int next;         /* the next share to take */
    share_list job;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .busy = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static void take_shares(void) {
    for (int t; (t = atomic_fetch_add(&pool.next, 1)) < pool.job.count;) {
        pool.job.share(pool.job.ctx, t);
        atomic_fetch_sub(&pool.pending, 1);
    }
}

static void *pool_worker(void *arg) {
    unsigned seen = atomic_load(&pool.generation);
    for (;;) {
        int spins = 0;
        while (atomic_load(&pool.generation) == seen && spins < SPINS) spins++;
        if (atomic_load(&pool.generation) == seen) {
            pthread_mutex_lock(&pool.lock);
            while (atomic_load(&pool.generation) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
            pthread_mutex_unlock(&pool.lock);
        }
        seen = atomic_load(&pool.generation);
        take_shares();
    }
    return NULL;
}

static void run_shares_pool(xtc_share_fn share, void *ctx, int count) {
    while (pool.size < count - 1 && pool.size < MAX_THREADS) { /* workers are started as they are first needed */
        pthread_t id;
        if (pthread_create(&id, NULL, pool_worker, NULL) != 0) break;
        pthread_detach(id);
        pool.size++;
    }
    /* in this order: a worker still leaving the last job may take a share as soon as `next` is reset */
    pool.job = (share_list){share, ctx, count};
    atomic_store(&pool.pending, count);
    atomic_store(&pool.next, 0);
    pthread_mutex_lock(&pool.lock);
    atomic_fetch_add(&pool.generation, 1);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    take_shares(); /* the caller works too; with no worker to be had it runs every share */
    while (atomic_load(&pool.pending) > 0) {
    }
}

void xtc_run_shares(xtc_share_fn share, void *ctx, int count) {
    if (count > 1 && !openmp.parallel) find_openmp();
    if (count > 1 && openmp.parallel) {
        share_list list = {share, ctx, count};
        openmp.parallel(run_shares_openmp, &list, (unsigned)count, 0);
        return;
    }
    if (count > 1 && pthread_mutex_trylock(&pool.busy) == 0) {
        run_shares_pool(share, ctx, count);
        pthread_mutex_unlock(&pool.busy);
        return;
    }
    for (int t = 0; t < count; t++) share(ctx, t);
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
    xtc_run_shares(gemm_share, &w, w.threads);
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

void xtc_quantize_range(const float *x, int64_t M, int64_t K, int64_t Mp, int64_t Kp, uint8_t *a, float *scale,
                        int path, int64_t lo, int64_t hi, int last) {
    for (int64_t m = lo; m < hi && Kp > K; m++) memset(a + m * Kp + K, 128, (size_t)(Kp - K));
    if (last) memset(a + M * Kp, 128, (size_t)((Mp - M) * Kp));
    xtc_quantize_rows(x + lo * K, hi - lo, K, Kp, a + lo * Kp, scale + lo, path);
}

static void quantize_share(void *ctx, int t) {
    quantize_shares *w = ctx;
    xtc_quantize_range(w->x, w->M, w->K, w->Mp, w->Kp, w->a, w->scale, w->path, w->M * t / w->threads,
                       w->M * (t + 1) / w->threads, t == w->threads - 1);
}

void xtc_quantize_parallel(const float *x, int64_t M, int64_t K, int64_t Mp, int64_t Kp, uint8_t *a, float *scale,
                           int path, int threads) {
    quantize_shares w = {x, M, K, Mp, Kp, a, scale, path, clamp_threads(threads, M)};
    xtc_run_shares(quantize_share, &w, w.threads);
}

const char *xtc_openmp_runtime(void) {
    if (!openmp.parallel) find_openmp();
    return openmp.parallel ? openmp.name : NULL;
}
