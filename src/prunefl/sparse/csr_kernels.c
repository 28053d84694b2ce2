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

/* Backward rows [row_begin, row_end): gv[k] = <gyT[r], xT[col[k]]> and gxT[col[k]] += val[k] * gyT[r]; either
 * output may be NULL. */
#define DEFINE_BACKWARD(NB)                                                                    \
    static void backward_##NB(const job_t *j) {                                                \
        for (int64_t r = j->row_begin; r < j->row_end; ++r) {                                  \
            const v8 *gr = (const v8 *)(j->gyT + r * (8 * NB));                                \
            v8 g[NB];                                                                          \
            for (int q = 0; q < NB; ++q) g[q] = gr[q];                                         \
            for (int64_t k = j->crow[r]; k < j->crow[r + 1]; ++k) {                            \
                const int64_t c = j->col[k];                                                   \
                if (j->gv) {                                                                   \
                    const v8 *x = (const v8 *)(j->xT + c * (8 * NB));                          \
                    v8 d = g[0] * x[0];                                                        \
                    for (int q = 1; q < NB; ++q) d += g[q] * x[q];                             \
                    j->gv[k] = hsum(d);                                                        \
                }                                                                              \
                if (j->gxT) {                                                                  \
                    v8 *gx = (v8 *)(j->gxT + c * (8 * NB));                                    \
                    const float w = j->val[k];                                                 \
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

static void run_tasks(task_t *tasks, int threads) {
    pthread_t handles[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int t = 1; t < threads; ++t) started[t] = pthread_create(&handles[t], 0, run_task, &tasks[t]) == 0;
    run_task(&tasks[0]);
    for (int t = 1; t < threads; ++t) {
        if (started[t]) pthread_join(handles[t], 0);
        else run_task(&tasks[t]); /* no thread: run it here */
    }
}

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
