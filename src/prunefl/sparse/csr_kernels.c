/*
 * CSR kernels of a sparse fully connected layer for small batches, built on first use by prunefl.sparse.native.
 *
 * Why not MKL's SpMM alone: a training step needs three passes over the kept weights (forward, input gradient,
 * kept-value gradient), and torch runs them as three kernels, the input gradient over a transposed copy of the
 * values gathered every step. Here the backward is one pass over the CSR (each kept weight w[r, c] adds
 * w * gy[r] to gx[c] and takes gv = <gy[r], x[c]>), with a batch of up to 64 held in registers: on Conv-2's fc1
 * (2048x3136, density 0.1, batch 20, 2 threads) ~0.5x torch's time for the forward and the backward.
 *
 * Layout: the batch is the fast axis. Activations are stored transposed, feature-major, with the batch padded
 * with zeros to a multiple of 8 lanes (BP = 8 * NB): xT[c * BP + b] = x[b, c]. Rows of the CSR are split between
 * threads by equal kept counts; each thread accumulates the scattered input gradient into its own slice, and the
 * slices are summed at the end, so no two threads write the same memory.
 *
 * Inputs are trusted: the Python side builds every index array from a mask and checks shapes and dtypes.
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define MAX_THREADS 64
#define MAX_BLOCKS 8 /* batch <= 64 */

typedef float v8 __attribute__((vector_size(32), aligned(4)));

typedef struct {
    const int32_t *crow, *col;
    const float *val, *bias, *gyT, *xT;
    float *yT, *gv, *gxT;
    int64_t row_begin, row_end, cols, blocks;
} job_t;

/* Forward rows [row_begin, row_end): yT[r] = bias[r] + sum_k val[k] xT[col[k]]. NB is a constant in each copy. */
#define DEFINE_FORWARD(NB)                                                                     \
    static void forward_##NB(const job_t *j) {                                                 \
        for (int64_t r = j->row_begin; r < j->row_end; ++r) {                                  \
            const float b0 = j->bias ? j->bias[r] : 0.0f;                                      \
            v8 acc[NB];                                                                        \
            for (int q = 0; q < NB; ++q) acc[q] = (v8){0, 0, 0, 0, 0, 0, 0, 0} + b0;           \
            for (int64_t k = j->crow[r]; k < j->crow[r + 1]; ++k) {                            \
                const v8 *x = (const v8 *)(j->xT + (int64_t)j->col[k] * (8 * NB));             \
                const float w = j->val[k];                                                     \
                for (int q = 0; q < NB; ++q) acc[q] += w * x[q];                               \
            }                                                                                  \
            v8 *y = (v8 *)(j->yT + r * (8 * NB));                                              \
            for (int q = 0; q < NB; ++q) y[q] = acc[q];                                        \
        }                                                                                      \
    }

static inline float hsum(v8 a) { return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])); }

/* Shuffles of two v8 into one: lane i takes lane I_i of the concatenation (a, b). */
typedef int32_t v8i __attribute__((vector_size(32)));
#if defined(__clang__)
#define SHUFFLE(a, b, i0, i1, i2, i3, i4, i5, i6, i7) __builtin_shufflevector(a, b, i0, i1, i2, i3, i4, i5, i6, i7)
#else
#define SHUFFLE(a, b, i0, i1, i2, i3, i4, i5, i6, i7) __builtin_shuffle(a, b, (v8i){i0, i1, i2, i3, i4, i5, i6, i7})
#endif

/* The lane sums of d[0..7], as one vector: a transpose-and-add tree (7 shuffle pairs), where eight separate
 * horizontal sums would take ~3x the shuffles. */
static inline v8 hsum8(const v8 *d) {
    v8 e[4], f[2];
    for (int i = 0; i < 4; ++i)
        e[i] = SHUFFLE(d[2 * i], d[2 * i + 1], 0, 8, 2, 10, 4, 12, 6, 14) +
               SHUFFLE(d[2 * i], d[2 * i + 1], 1, 9, 3, 11, 5, 13, 7, 15);
    for (int i = 0; i < 2; ++i)
        f[i] = SHUFFLE(e[2 * i], e[2 * i + 1], 0, 1, 8, 9, 4, 5, 12, 13) +
               SHUFFLE(e[2 * i], e[2 * i + 1], 2, 3, 10, 11, 6, 7, 14, 15);
    return SHUFFLE(f[0], f[1], 0, 1, 2, 3, 8, 9, 10, 11) + SHUFFLE(f[0], f[1], 4, 5, 6, 7, 12, 13, 14, 15);
}

/* Backward rows [row_begin, row_end): gv[k] = <gyT[r], xT[col[k]]> and gxT[col[k]] += val[k] * gyT[r]; either
 * output may be NULL. The dot products of eight kept weights are reduced together (hsum8). */
#define DEFINE_BACKWARD(NB)                                                                    \
    static void backward_##NB(const job_t *j) {                                                \
        for (int64_t r = j->row_begin; r < j->row_end; ++r) {                                  \
            const v8 *gr = (const v8 *)(j->gyT + r * (8 * NB));                                \
            v8 g[NB];                                                                          \
            for (int q = 0; q < NB; ++q) g[q] = gr[q];                                         \
            const int64_t end = j->crow[r + 1];                                                \
            int64_t k = j->crow[r];                                                            \
            if (j->gv) {                                                                       \
                for (; k + 8 <= end; k += 8) {                                                 \
                    v8 d[8];                                                                   \
                    for (int i = 0; i < 8; ++i) {                                              \
                        const v8 *x = (const v8 *)(j->xT + (int64_t)j->col[k + i] * (8 * NB)); \
                        d[i] = g[0] * x[0];                                                    \
                        for (int q = 1; q < NB; ++q) d[i] += g[q] * x[q];                      \
                    }                                                                          \
                    *(v8 *)(j->gv + k) = hsum8(d);                                             \
                }                                                                              \
                for (int64_t t = k; t < end; ++t) {                                            \
                    const v8 *x = (const v8 *)(j->xT + (int64_t)j->col[t] * (8 * NB));         \
                    v8 d = g[0] * x[0];                                                        \
                    for (int q = 1; q < NB; ++q) d += g[q] * x[q];                             \
                    j->gv[t] = hsum(d);                                                        \
                }                                                                              \
            }                                                                                  \
            if (j->gxT) {                                                                      \
                for (int64_t t = j->crow[r]; t < end; ++t) {                                   \
                    v8 *gx = (v8 *)(j->gxT + (int64_t)j->col[t] * (8 * NB));                   \
                    const float w = j->val[t];                                                 \
                    for (int q = 0; q < NB; ++q) gx[q] += w * g[q];                            \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
    }

DEFINE_FORWARD(1) DEFINE_FORWARD(2) DEFINE_FORWARD(3) DEFINE_FORWARD(4)
DEFINE_FORWARD(5) DEFINE_FORWARD(6) DEFINE_FORWARD(7) DEFINE_FORWARD(8)
DEFINE_BACKWARD(1) DEFINE_BACKWARD(2) DEFINE_BACKWARD(3) DEFINE_BACKWARD(4)
DEFINE_BACKWARD(5) DEFINE_BACKWARD(6) DEFINE_BACKWARD(7) DEFINE_BACKWARD(8)

typedef void (*kernel_t)(const job_t *);
static const kernel_t FORWARD[MAX_BLOCKS + 1] = {0, forward_1, forward_2, forward_3, forward_4,
                                                 forward_5, forward_6, forward_7, forward_8};
static const kernel_t BACKWARD[MAX_BLOCKS + 1] = {0, backward_1, backward_2, backward_3, backward_4,
                                                  backward_5, backward_6, backward_7, backward_8};

typedef struct {
    kernel_t kernel;
    job_t job;
} task_t;

static void *run_task(void *arg) {
    task_t *t = (task_t *)arg;
    if (t->kernel == 0) return 0;
    if (t->job.gxT) memset(t->job.gxT, 0, (size_t)(t->job.cols * 8 * t->job.blocks) * sizeof(float));
    t->kernel(&t->job);
    return 0;
}

/* Split rows into `threads` ranges of about equal kept counts. */
static int split_rows(const int32_t *crow, int64_t rows, int threads, int64_t *bounds) {
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    const int64_t nnz = crow[rows];
    int64_t r = 0;
    bounds[0] = 0;
    for (int t = 1; t < threads; ++t) {
        const int64_t target = nnz * t / threads;
        while (r < rows && crow[r] < target) ++r;
        bounds[t] = r;
    }
    bounds[threads] = rows;
    return threads;
}

/* Run fn on items[0..threads) (each `size` bytes) in parallel. With OpenMP, on the process's OpenMP runtime:
 * torch's own libgomp (same SONAME, so the loader reuses it), whose threads are already running or spinning after
 * torch's last parallel region; fresh pthreads would compete with those for the cores. Else on pthreads. */
static void run_parallel(void *(*fn)(void *), char *items, size_t size, int threads) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int t = 0; t < threads; ++t) fn(items + (size_t)t * size);
#else
    pthread_t handles[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int t = 1; t < threads; ++t) started[t] = pthread_create(&handles[t], 0, fn, items + (size_t)t * size) == 0;
    fn(items);
    for (int t = 1; t < threads; ++t) {
        if (started[t]) pthread_join(handles[t], 0);
        else fn(items + (size_t)t * size); /* no thread: run it here */
    }
#endif
}

static void run_tasks(task_t *tasks, int threads) { run_parallel(run_task, (char *)tasks, sizeof(task_t), threads); }

/* Return the largest batch the kernels take (a multiple of 8). */
int64_t prunefl_max_batch(void) { return 8 * MAX_BLOCKS; }

/* out[c * BP + b] = a[b * stride0 + c * stride1] for b < batch, 0 for batch <= b < BP; c < features. */
void prunefl_pad_transpose(const float *a, int64_t batch, int64_t features, int64_t stride0, int64_t stride1,
                           float *out, int64_t padded) {
    for (int64_t c = 0; c < features; ++c) {
        float *o = out + c * padded;
        for (int64_t b = 0; b < batch; ++b) o[b] = a[b * stride0 + c * stride1];
        for (int64_t b = batch; b < padded; ++b) o[b] = 0.0f;
    }
}

/* yT (rows x BP) = bias + W xT for W in CSR (rows x cols); xT is (cols x BP). Returns 0, or -1 for a bad
 * block count. */
int prunefl_csr_forward(const int32_t *crow, const int32_t *col, const float *val, const float *bias,
                        const float *xT, float *yT, int64_t rows, int64_t blocks, int threads) {
    if (blocks < 1 || blocks > MAX_BLOCKS) return -1;
    int64_t bounds[MAX_THREADS + 1];
    threads = split_rows(crow, rows, threads, bounds);
    task_t tasks[MAX_THREADS];
    for (int t = 0; t < threads; ++t) {
        tasks[t].kernel = FORWARD[blocks];
        tasks[t].job = (job_t){crow, col, val, bias, 0, xT, yT, 0, 0, bounds[t], bounds[t + 1], 0, blocks};
    }
    run_tasks(tasks, threads);
    return 0;
}

/* The backward pass of prunefl_csr_forward for gyT (rows x BP): gv (nnz) = the kept entries of gy^T x, and
 * gxT (cols x BP) = W^T gyT. gx_scratch holds (threads - 1) * cols * BP floats (NULL if threads == 1 or gxT is
 * NULL). gv or gxT may be NULL to skip it. Returns 0, or -1 for a bad block count. */
int prunefl_csr_backward(const int32_t *crow, const int32_t *col, const float *val, const float *gyT,
                         const float *xT, float *gv, float *gxT, float *gx_scratch, int64_t rows, int64_t cols,
                         int64_t blocks, int threads) {
    if (blocks < 1 || blocks > MAX_BLOCKS) return -1;
    int64_t bounds[MAX_THREADS + 1];
    threads = split_rows(crow, rows, threads, bounds);
    if (gxT && !gx_scratch) threads = 1;
    const int64_t slice = cols * 8 * blocks;
    task_t tasks[MAX_THREADS];
    for (int t = 0; t < threads; ++t) {
        float *gx = gxT ? (t == 0 ? gxT : gx_scratch + (int64_t)(t - 1) * slice) : 0;
        if (threads == 1) bounds[1] = rows;
        tasks[t].kernel = BACKWARD[blocks];
        tasks[t].job = (job_t){crow, col, val, 0, gyT, xT, 0, gv, gx, bounds[t], bounds[t + 1], cols, blocks};
    }
    run_tasks(tasks, threads);
    if (gxT) {
        for (int t = 1; t < threads; ++t) {
            const float *s = gx_scratch + (int64_t)(t - 1) * slice;
            for (int64_t i = 0; i < slice; ++i) gxT[i] += s[i];
        }
    }
    return 0;
}

/* Gather and scatter between a dense row-major weight (rows x cols) and the CSR values of its kept coordinates:
 * what a swap to the sparse layer and its write-back do, one pass each, threads splitting the rows. */
typedef struct {
    const int32_t *crow, *col;
    float *dense, *val;
    int64_t row_begin, row_end, cols;
    int to_dense, zero_pruned;
} copy_job_t;

static void *run_copy(void *arg) {
    const copy_job_t *j = (const copy_job_t *)arg;
    for (int64_t r = j->row_begin; r < j->row_end; ++r) {
        float *row = j->dense + r * j->cols;
        if (j->to_dense) {
            if (j->zero_pruned) memset(row, 0, (size_t)j->cols * sizeof(float));
            for (int64_t k = j->crow[r]; k < j->crow[r + 1]; ++k) row[j->col[k]] = j->val[k];
        } else {
            for (int64_t k = j->crow[r]; k < j->crow[r + 1]; ++k) j->val[k] = row[j->col[k]];
        }
    }
    return 0;
}

static void csr_copy(const int32_t *crow, const int32_t *col, float *dense, float *val, int64_t rows, int64_t cols,
                     int to_dense, int zero_pruned, int threads) {
    int64_t bounds[MAX_THREADS + 1];
    threads = split_rows(crow, rows, threads, bounds);
    copy_job_t jobs[MAX_THREADS];
    for (int t = 0; t < threads; ++t)
        jobs[t] = (copy_job_t){crow, col, dense, val, bounds[t], bounds[t + 1], cols, to_dense, zero_pruned};
    run_parallel(run_copy, (char *)jobs, sizeof(copy_job_t), threads);
}

/* val[k] = dense[row(k), col[k]] for every kept coordinate k. */
void prunefl_csr_gather(const int32_t *crow, const int32_t *col, const float *dense, float *val, int64_t rows,
                        int64_t cols, int threads) {
    csr_copy(crow, col, (float *)dense, val, rows, cols, 0, 0, threads);
}

/* dense[row(k), col[k]] = val[k]; with zero_pruned, every other coordinate of dense becomes 0. */
void prunefl_csr_scatter(const int32_t *crow, const int32_t *col, const float *val, float *dense, int64_t rows,
                         int64_t cols, int zero_pruned, int threads) {
    csr_copy(crow, col, dense, (float *)val, rows, cols, 1, zero_pruned, threads);
}
