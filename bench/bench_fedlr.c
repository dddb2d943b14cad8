/* bench_fedlr: fedlr's hot paths beside what the hardware can do, measured
 * in the same run.
 *
 *   sgemm peak        cblas_sgemm 1024^3, 1 and 2 threads (GFLOP/s)
 *   training          2NN (784-200-200-10) forward+backward+SGD step on real
 *                     Fashion-MNIST batches, B=10 and B=64, one worker (one
 *                     BLAS thread) and two workers in parallel (GFLOP/s,
 *                     examples/s, % of the sgemm peak at the same thread count)
 *   aggregation       fl_engine_submit() of encoded 2NN updates: decode,
 *                     validate, fold into the FedAvg sum (update GB/s), beside
 *                     memcpy bandwidth at the same working-set size and at a
 *                     DRAM-sized one
 *   rules             a whole round's aggregation (K submits + end_round) for
 *                     FedAvg, FedAvg with clipping, median and trimmed mean,
 *                     K = 10 and 50 (delta GB/s and the ratio to memcpy)
 *   CNN               the FedAvg CNN's layers and train step, B=10 and B=64,
 *                     and its products in fl_gemm's kernels against OpenBLAS's
 *
 * BENCH_ONLY=cnn|products|peak|train|agg runs one part (train: one step,
 * BENCH_MODEL=spec, BENCH_FUSED=0 for gradient then optimizer step).
 *
 * Output: a Markdown table on stdout (bench/RESULTS.md keeps a copy). The
 * seconds-per-round figure of the reference configuration comes from
 * bench/run.sh, which runs the real fedlr-sim. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "fl_blas.h"
#include "fl_gemm.h"
#include "fl_data.h"
#include "fl_engine.h"
#include "fl_error.h"
#include "fl_layers.h"
#include "fl_model.h"
#include "fl_optim.h"
#include "fl_rng.h"
#include "fl_wire.h"

#include "bench_peak.h"

typedef struct {
  const fl_model_spec_t *m;
  const fl_dataset_t *d;
  size_t B;
  int fused; /* fl_model_sgd_step (what the trainer runs for plain SGD) */
  double seconds;
  size_t steps;
  pthread_t th;
} train_job_t;

/* Trains for ~`seconds` over the dataset in order, one BLAS thread. */
static void *train_job(void *arg) {
  train_job_t *j = arg;
  const fl_model_spec_t *m = j->m;
  float *p = fl_gemm_alloc(m->num_params), *g = fl_gemm_alloc(m->num_params); /* as the trainer */
  fl_model_init(m, p, 1);
  fl_model_ws_t *ws = fl_model_ws_new(m, j->B);
  fl_optim_config_t oc;
  fl_optim_parse("sgd", &oc);
  fl_optim_t *o = fl_optim_new(&oc, m->num_params);
  size_t dim = m->dims[0], off = 0, steps = 0;
  double t0 = now_s(), t;
  do {
    for (int k = 0; k < 20; k++) {
      if (off + j->B > j->d->n) off = 0;
      if (j->fused) {
        fl_model_sgd_step(m, ws, p, j->d->x + off * dim, j->d->y + off, j->B, 0.01f, g);
      } else {
        fl_model_loss_grad(m, ws, p, j->d->x + off * dim, j->d->y + off, j->B, g);
        fl_optim_step(o, p, g, 0.01f);
      }
      off += j->B;
      steps++;
    }
    t = now_s() - t0;
  } while (t < j->seconds);
  j->steps = steps;
  j->seconds = t;
  fl_optim_destroy(&o);
  fl_model_ws_destroy(&ws);
  free(p);
  free(g);
  return NULL;
}

/* Returns total GFLOP/s over `workers` parallel trainers; *eps examples/s. */
static double train_gflops(const fl_model_spec_t *m, const fl_dataset_t *d, size_t B, int workers,
                           int fused, double *eps) {
  train_job_t j[2];
  for (int w = 0; w < workers; w++) {
    j[w] = (train_job_t){m, d, B, fused, 2.0, 0, 0};
    pthread_create(&j[w].th, NULL, train_job, &j[w]);
  }
  double ex = 0;
  for (int w = 0; w < workers; w++) {
    pthread_join(j[w].th, NULL);
    ex += (double)j[w].steps * (double)B / j[w].seconds;
  }
  *eps = ex;
  return ex * fl_model_flops_per_example(m) / 1e9;
}

static double copy_gbs(size_t bytes) {
  char *a = malloc(bytes), *b = malloc(bytes);
  memset(a, 1, bytes);
  memset(b, 2, bytes);
  size_t reps = (size_t)(2e9 / (double)bytes) + 1;
  double best = 0;
  for (int r = 0; r < 5; r++) {
    double t = now_s();
    for (size_t i = 0; i < reps; i++) {
      memcpy(b, a, bytes);
      __asm__ volatile("" ::"r"(b) : "memory");
    }
    double g = (double)bytes * (double)reps / (now_s() - t) / 1e9;
    if (g > best) best = g;
  }
  free(a);
  free(b);
  return best;
}

/* An aggregation rule to measure. */
typedef struct {
  const char *name;
  fl_agg_kind_t kind;
  double beta, clip;
  const char *server; /* --server-optimizer (rate 0.01), or NULL: plain FedAvg's step */
} bench_rule_t;

/* Update bytes aggregated per second with K clients per round (10 is the
 * reference configuration). Without `rule`: fl_engine_submit() only, the
 * FedAvg fold. With it: the whole round's aggregation, K submits plus
 * fl_engine_end_round() (no test set, so no evaluation). */
static double aggregation_gbs(const fl_model_spec_t *m, uint32_t K, const bench_rule_t *rule) {
  fl_engine_config_t c;
  memset(&c, 0, sizeof c);
  c.model = *m;
  c.lr0 = 0.1;
  c.server_lr = 1;
  fl_sched_parse("const", &c.sched);
  fl_optim_parse("sgd", &c.optim);
  c.local_epochs = 1;
  c.batch_size = 10;
  c.fraction = 1.0;
  c.rounds = 1000000;
  c.quorum = 1.0;
  c.eval_every = 1000000;
  fl_sopt_parse("fedavg", &c.server_optim);
  if (rule) {
    c.aggregator = rule->kind;
    c.trim_beta = rule->beta;
    c.clip_norm = rule->clip;
    if (rule->server) {
      fl_sopt_parse(rule->server, &c.server_optim);
      c.server_lr = 0.01;
    }
  }
  int err;
  fl_engine_t *e = fl_engine_new(&c, &err);
  for (uint32_t k = 0; k < K; k++) {
    char name[16];
    snprintf(name, sizeof name, "b%u", k);
    fl_engine_add_client(e, name, 600, NULL);
  }
  float *delta = malloc(m->num_params * sizeof *delta);
  fl_rng_t r;
  fl_rng_seed(&r, 3);
  for (size_t i = 0; i < m->num_params; i++)
    delta[i] = (float)(fl_rng_uniform(&r) - 0.5) * 1e-3f;
  double total_t = 0;
  size_t total_updates = 0;
  for (int round = 1; total_t < 2.0; round++) {
    fl_engine_begin_round(e);
    uint8_t *bufs[64];
    size_t lens[64];
    for (uint32_t k = 0; k < K; k++) {
      fl_wire_tensors_t tv;
      fl_wire_tensors_init(&tv, m, delta);
      Fedlr__Update u = FEDLR__UPDATE__INIT;
      u.round = (uint32_t)round;
      u.client_id = k;
      u.num_examples = 600;
      u.is_delta = 1;
      u.n_weights = tv.n;
      u.weights = tv.ptrs;
      u.train_loss = 0.5;
      Fedlr__Envelope env = FEDLR__ENVELOPE__INIT;
      env.body_case = FEDLR__ENVELOPE__BODY_UPDATE;
      env.update = &u;
      fl_wire_encode(&env, &bufs[k], &lens[k]);
      fl_wire_tensors_free(&tv);
    }
    double t = now_s();
    for (uint32_t k = 0; k < K; k++) {
      if (fl_engine_submit(e, k, bufs[k], lens[k]) != 0) {
        fprintf(stderr, "submit: %s\n", fl_err_msg());
        exit(1);
      }
    }
    if (!rule) total_t += now_s() - t;
    total_updates += K;
    for (uint32_t k = 0; k < K; k++)
      free(bufs[k]);
    fl_round_metrics_t rm;
    if (fl_engine_end_round(e, &rm) != 0) {
      fprintf(stderr, "end_round: %s\n", fl_err_msg());
      exit(1);
    }
    if (rule) total_t += now_s() - t;
  }
  free(delta);
  fl_engine_destroy(&e);
  return (double)total_updates * (double)m->num_params * 4.0 / total_t / 1e9;
}

/* The robust rules' per-round cost next to FedAvg's (a Markdown table). */
static void print_rules(const fl_model_spec_t *m, double cp_ws, double cp_big) {
  const size_t ws = m->num_params * 4;
  /* The deltas' norm is about 0.13: clip at 0.05 so every update is
   * scaled (the worst case). */
  const bench_rule_t rules[] = {{"FedAvg", FL_AGG_FEDAVG, 0, 0, NULL},
                                {"FedAvg + clip-norm", FL_AGG_FEDAVG, 0, 0.05, NULL},
                                {"median", FL_AGG_MEDIAN, 0, 0, NULL},
                                {"trimmed-mean:0.1", FL_AGG_TRIMMED_MEAN, 0.1, 0, NULL},
                                {"median + clip-norm", FL_AGG_MEDIAN, 0, 0.05, NULL},
                                {"FedAvg, server fedavgm", FL_AGG_FEDAVG, 0, 0, "fedavgm"},
                                {"FedAvg, server fedadam", FL_AGG_FEDAVG, 0, 0, "fedadam"},
                                {"FedAvg, server fedyogi", FL_AGG_FEDAVG, 0, 0, "fedyogi"}};
  printf("\n| aggregation per round, 2NN (submits + end_round) | K=10 | K=50 | K=10 vs memcpy "
         "(cache, DRAM) |\n|---|---|---|---|\n");
  for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
    double g10 = aggregation_gbs(m, 10, &rules[i]), g50 = aggregation_gbs(m, 50, &rules[i]);
    printf("| %s | %.2f GB/s (%.2f ms/round) | %.2f GB/s (%.2f ms/round) | %.0f%%, %.0f%% |\n",
           rules[i].name, g10, 10 * (double)ws / g10 / 1e6, g50, 50 * (double)ws / g50 / 1e6,
           100 * g10 / cp_ws, 100 * g10 / cp_big);
  }
}

/* The server step alone (fl_sopt_step over the model, after the
 * aggregate): ms per round for each optimizer, and the bytes it moves
 * (x, the aggregate, and the state, read and written) per second. */
static void print_server_steps(const fl_model_spec_t *m, double cp_ws) {
  const size_t P = m->num_params;
  float *x = malloc(P * sizeof *x), *d = malloc(P * sizeof *d);
  float *st[2] = {malloc(P * sizeof(float)), malloc(P * sizeof(float))};
  fl_rng_t r;
  fl_rng_seed(&r, 4);
  for (size_t i = 0; i < P; i++) {
    x[i] = (float)(fl_rng_uniform(&r) - 0.5);
    d[i] = (float)(fl_rng_uniform(&r) - 0.5) * 1e-3f;
  }
  const char *specs[] = {"fedavg", "fedavgm", "fedadagrad", "fedadam", "fedyogi"};
  printf("\n| server step alone, 2NN (%zu parameters) | ms/round | bytes moved | vs memcpy (cache) "
         "|\n|---|---|---|---|\n",
         P);
  for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++) {
    fl_sopt_config_t c;
    fl_sopt_parse(specs[k], &c);
    fl_sopt_init(&c, st, P);
    double best = 1e30;
    for (int rep = 0; rep < 7; rep++) {
      double t = now_s();
      for (int i = 0; i < 20; i++)
        fl_sopt_step(&c, 0.01, x, d, st, P);
      double dt = (now_s() - t) / 20;
      if (dt < best) best = dt;
    }
    /* x read+written, d read, each state vector read+written */
    double bytes = (double)P * 4 * (3 + 2 * (double)fl_sopt_num_state(&c));
    printf("| %s | %.3f ms | %.1f MB (%.1f GB/s) | %.0f%% |\n", specs[k], best * 1e3, bytes / 1e6,
           bytes / best / 1e9, 100 * bytes / best / 1e9 / cp_ws);
  }
  free(x);
  free(d);
  free(st[0]);
  free(st[1]);
}

/* The FedAvg paper's CNN, layer by layer with common/fl_layers (issue 14's
 * starting point; not yet a model fedlr trains): conv 5x5 1->32 'same' on
 * 28x28, 2x2 pool, conv 5x5 32->64 'same' on 14x14, pool, dense 3136->512,
 * dense 512->10. Forward + backward GFLOP/s per layer at batch B, one
 * thread, beside the 1-thread sgemm peak. FLOPs: 2 per multiply-add, the
 * forward and each backward product (no input gradient for the first
 * layer). */
static void print_cnn_layers(size_t B, double peak1) {
  fl_rng_t r;
  fl_rng_seed(&r, 5);
  const fl_conv2d_t c1 = {B, 1, 28, 28, 32, 5, 5, 2}, c2 = {B, 32, 14, 14, 64, 5, 5, 2};
  const size_t n_in = B * 784, n_a1 = B * 32 * 784, n_p1 = B * 32 * 196, n_a2 = B * 64 * 196,
               n_p2 = B * 64 * 49, n_f = B * 512, n_z = B * 10;
  const size_t n_w1 = 32 * 25, n_w2 = 64 * 32 * 25, n_w3 = 512 * 3136, n_w4 = 10 * 512;
  size_t ncol = fl_conv2d_col_size(&c2) > fl_conv2d_col_size(&c1) ? fl_conv2d_col_size(&c2)
                                                                  : fl_conv2d_col_size(&c1);
  float *buf[16];
  const size_t sizes[16] = {n_in, n_a1, n_p1, n_a2, n_p2, n_f,  n_z,  n_w1,
                            n_w2, n_w3, n_w4, ncol, n_a1, n_a2, n_w3, 512};
  for (int i = 0; i < 16; i++) {
    buf[i] = fl_gemm_alloc(sizes[i]);
    for (size_t k = 0; k < sizes[i]; k++)
      buf[i][k] = (float)(fl_rng_uniform(&r) - 0.5) * 0.1f;
  }
  float *x = buf[0], *a1 = buf[1], *p1 = buf[2], *a2 = buf[3], *p2 = buf[4], *f = buf[5],
        *z = buf[6], *w1 = buf[7], *w2 = buf[8], *w3 = buf[9], *w4 = buf[10], *col = buf[11],
        *d1 = buf[12], *d2 = buf[13], *dw = buf[14], *bias = buf[15];
  int32_t *am1 = malloc(n_p1 * sizeof *am1), *am2 = malloc(n_p2 * sizeof *am2);
  const fl_pool2_t q1 = {B, 32, 28, 28}, q2 = {B, 64, 14, 14};
  double flops[4] = {2.0 * 2 * B * 32 * 784 * 25, 3.0 * 2 * B * 64 * 196 * 800,
                     3.0 * 2 * B * 3136 * 512, 3.0 * 2 * B * 512 * 10};
  double best[5] = {1e30, 1e30, 1e30, 1e30, 1e30};
  float db[512];
  for (int rep = 0; rep < 5; rep++) {
    double t[6];
    t[0] = now_s();
    fl_conv2d_forward(&c1, a1, x, w1, bias, col);
    fl_conv2d_backward(&c1, NULL, d1, db, a1, x, w1, col);
    t[1] = now_s();
    fl_maxpool2_forward(&q1, p1, am1, a1);
    fl_conv2d_forward(&c2, a2, p1, w2, bias, col);
    fl_conv2d_backward(&c2, d1, d2, db, a2, p1, w2, col); /* d1: dinp (B, 32, 14, 14) fits */
    t[2] = now_s();
    fl_maxpool2_forward(&q2, p2, am2, a2);
    fl_dense_forward(f, p2, w3, bias, B, 3136, 512);
    fl_dense_backward(d2, dw, db, f, p2, w3, B, 3136, 512);
    t[3] = now_s();
    fl_dense_forward(z, f, w4, bias, B, 512, 10);
    fl_dense_backward(d2, dw, db, z, f, w4, B, 512, 10);
    t[4] = now_s();
    for (int l = 0; l < 4; l++)
      best[l] = fmin(best[l], t[l + 1] - t[l]);
    best[4] = fmin(best[4], t[4] - t[0]);
  }
  const char *names[4] = {"conv1 5x5 1->32 on 28x28", "pool + conv2 5x5 32->64 on 14x14",
                          "pool + dense 3136->512", "dense 512->10"};
  double total = 0;
  for (int l = 0; l < 4; l++) {
    total += flops[l];
    printf("| CNN %s, B=%zu | %.1f GFLOP/s | %.0f%% of 1-thread sgemm peak |\n", names[l], B,
           flops[l] / best[l] / 1e9, 100 * flops[l] / best[l] / 1e9 / peak1);
  }
  printf(
      "| CNN whole step (layers only, no loss), B=%zu | %.1f GFLOP/s, %.0f examples/s | %.0f%% of "
      "1-thread sgemm peak |\n",
      B, total / best[4] / 1e9, (double)B / best[4], 100 * total / best[4] / 1e9 / peak1);
  for (int i = 0; i < 16; i++)
    free(buf[i]);
  free(am1);
  free(am2);
}

/* The 2NN's layers (784->200->200->10) as its fused SGD step runs them
 * (fl_gemm: forward x W^T, the input gradient dz W from the second layer
 * on, the weight gradient applied as it is formed), per layer forward +
 * backward at batch B, one thread, beside the 1-thread sgemm peak. FLOPs: 2
 * per multiply-add of each product. Bias, ReLU and softmax not included. */
static void print_mlp_layers(size_t B, double peak1) {
  fl_rng_t r;
  fl_rng_seed(&r, 6);
  const size_t dims[4] = {784, 200, 200, 10};
  float *w[3], *a[4], *dz[4], *dx = fl_gemm_alloc(B * 200);
  a[0] = fl_gemm_alloc(B * 784);
  for (size_t i = 0; i < B * 784; i++)
    a[0][i] = (float)fl_rng_uniform(&r);
  for (int l = 0; l < 3; l++) {
    size_t nw = dims[l] * dims[l + 1];
    w[l] = fl_gemm_alloc(nw);
    a[l + 1] = fl_gemm_alloc(B * dims[l + 1]);
    dz[l + 1] = fl_gemm_alloc(B * dims[l + 1]);
    for (size_t i = 0; i < nw; i++)
      w[l][i] = (float)(fl_rng_uniform(&r) - 0.5) * 0.1f;
    for (size_t i = 0; i < B * dims[l + 1]; i++)
      dz[l + 1][i] = (float)(fl_rng_uniform(&r) - 0.5) * 0.01f;
  }
  double best[4] = {1e30, 1e30, 1e30, 1e30};
  for (int rep = 0; rep < 200; rep++) {
    double t[3] = {0, 0, 0}, t0 = now_s();
    for (int l = 0; l < 3; l++) {
      double s0 = now_s();
      fl_gemm_nt(B, dims[l + 1], dims[l], a[l], w[l], a[l + 1], 0);
      t[l] += now_s() - s0;
    }
    for (int l = 2; l >= 0; l--) {
      double s0 = now_s();
      if (l > 0) fl_gemm_nn(B, dims[l], dims[l + 1], dz[l + 1], w[l], dx, 0);
      if (!fl_gemm_tn_sgd(dims[l + 1], dims[l], B, dz[l + 1], a[l], w[l], 1e-4f))
        fl_gemm_tn(dims[l + 1], dims[l], B, dz[l + 1], a[l], w[l], 1); /* OpenBLAS: no step */
      t[l] += now_s() - s0;
    }
    double all = now_s() - t0;
    for (int l = 0; l < 3; l++)
      best[l] = fmin(best[l], t[l]);
    best[3] = fmin(best[3], all);
  }
  double total = 0;
  for (int l = 0; l < 3; l++) {
    double f = (l == 0 ? 4.0 : 6.0) * (double)B * (double)dims[l] * (double)dims[l + 1];
    total += f;
    printf(
        "| 2NN layer %d (%zu->%zu) forward + backward, B=%zu | %.1f GFLOP/s | %.0f%% of 1-thread "
        "sgemm peak |\n",
        l + 1, dims[l], dims[l + 1], B, f / best[l] / 1e9, 100 * f / best[l] / 1e9 / peak1);
  }
  printf("| 2NN layers together (products only), B=%zu | %.1f GFLOP/s | %.0f%% of 1-thread sgemm "
         "peak |\n",
         B, total / best[3] / 1e9, 100 * total / best[3] / 1e9 / peak1);
  for (int l = 0; l < 4; l++)
    free(a[l]);
  for (int l = 0; l < 3; l++)
    free(w[l]), free(dz[l + 1]);
  free(dx);
}

/* A model's whole train step (what the trainer runs: fl_model_sgd_step,
 * i.e. forward, loss, backward and the plain SGD step, fused where the
 * kernels allow) at B = 10 and 64 on 1 and 2 workers, and the unfused
 * gradient + optimizer step (what other optimizers take) on 1. */
/* The CNN's products at B = 10 (and the dense layer's), fl_gemm's kernels
 * of this CPU against OpenBLAS's, one thread, operands in cache, best of 5
 * timings of 50 repetitions each: the evidence for "own kernels always" in
 * fl_gemm.c. */
static void print_products(double peak1) {
  static const struct {
    const char *name;
    int tn;
    size_t M, N, K;
  } P[] = {{"conv2 forward, nn", 0, 64, 196, 800},
           {"conv2 input gradient, tn", 1, 800, 196, 64},
           {"conv2 weight gradient transposed, nn", 0, 800, 64, 196},
           {"conv1 forward, nn", 0, 32, 784, 25},
           {"conv1 weight gradient transposed, nn", 0, 25, 32, 784},
           {"dense 3136->512 input gradient B=10, nn", 0, 10, 3136, 512},
           {"dense 3136->512 weight gradient B=10, tn", 1, 512, 3136, 10}};
  float *A = fl_gemm_alloc(1 << 21), *B = fl_gemm_alloc(1 << 21), *C = fl_gemm_alloc(1 << 21);
  for (size_t i = 0; i < (1u << 21); i++)
    A[i] = B[i] = C[i] = (float)(i % 13) * 0.01f - 0.06f;
  fl_gemm_kind_t own = fl_gemm_kind();
  for (size_t p = 0; p < sizeof P / sizeof P[0]; p++) {
    double g[2];
    for (int f = 0; f < 2; f++) {
      fl_gemm_kind_t k = f ? FL_GEMM_BLAS : own;
      double best = 1e30;
      for (int rep = 0; rep < 5; rep++) {
        double t = now_s();
        for (int i = 0; i < 50; i++) {
          if (P[p].tn)
            fl_gemm_tn_with(k, P[p].M, P[p].N, P[p].K, A, B, C, 0);
          else
            fl_gemm_nn_with(k, P[p].M, P[p].N, P[p].K, A, B, C, 0);
        }
        t = (now_s() - t) / 50;
        if (t < best) best = t;
      }
      g[f] = 2.0 * (double)(P[p].M * P[p].N * P[p].K) / best / 1e9;
    }
    printf("| %s %zux%zux%zu | %s %.1f GFLOP/s, OpenBLAS %.1f: %.2fx | %.0f%% of 1-thread sgemm "
           "peak |\n",
           P[p].name, P[p].M, P[p].N, P[p].K, fl_gemm_name(own), g[0], g[1], g[0] / g[1],
           100 * g[0] / peak1);
  }
  free(A), free(B), free(C);
}

static void print_train_steps(const char *name, const fl_model_spec_t *m, const fl_dataset_t *d,
                              double peak1, double peak2) {
  size_t Bs[2] = {10, 64};
  for (int b = 0; b < 2; b++) {
    for (int w = 1; w <= 2; w++) {
      double eps, g = train_gflops(m, d, Bs[b], w, 1, &eps);
      printf("| %s train step B=%zu, %d worker%s | %.1f GFLOP/s, %.0f examples/s | %.0f%% of "
             "%d-thread sgemm peak |\n",
             name, Bs[b], w, w > 1 ? "s" : "", g, eps, 100 * g / (w == 1 ? peak1 : peak2), w);
    }
    double eps, g = train_gflops(m, d, Bs[b], 1, 0, &eps);
    printf("| %s gradient + separate optimizer step B=%zu, 1 worker | %.1f GFLOP/s, %.0f "
           "examples/s | %.0f%% of 1-thread sgemm peak |\n",
           name, Bs[b], g, eps, 100 * g / peak1);
  }
}

int main(int argc, char **argv) {
  fl_blas_setup(argc, argv);
  const char *dir = argc > 1 ? argv[1] : "/usr/share/datasets/fashion-mnist";
  /* BENCH_ONLY=agg runs only the aggregation part (for profiling). */
  const char *only = getenv("BENCH_ONLY");
  fl_dataset_t *d = NULL;
  if (fl_dataset_load_named("fashion-mnist", dir, 1, &d)) {
    fprintf(stderr, "bench: %s\n", fl_err_msg());
    return 1;
  }
  fl_model_spec_t m;
  fl_model_parse("mlp:200,200", d->dim, 10, &m);
  char cpu[128] = "unknown";
  FILE *ci = fopen("/proc/cpuinfo", "r");
  for (char line[256]; ci && fgets(line, sizeof line, ci);)
    if (strncmp(line, "model name", 10) == 0 && strchr(line, ':')) {
      snprintf(cpu, sizeof cpu, "%s", strchr(line, ':') + 2);
      cpu[strcspn(cpu, "\n")] = 0;
      break;
    }
  if (ci) fclose(ci);
  printf("CPU: %s (%s); OpenBLAS core: %s; fl_gemm kernels: %s\n\n", cpu,
         __builtin_cpu_supports("avx512f") ? "AVX-512" : "no AVX-512", fl_blas_corename(),
         fl_gemm_name(fl_gemm_kind()));
  if (only && strcmp(only, "cnn") == 0) {
    double peak = sgemm_gflops(1), peak2 = sgemm_gflops(2);
    printf("| measurement | value | vs hardware |\n|---|---|---|\n");
    printf("| sgemm 1024^3, 1 thread | %.1f GFLOP/s | peak (1 core) |\n", peak);
    printf("| sgemm 1024^3, 2 threads | %.1f GFLOP/s | peak (2 cores) |\n", peak2);
    print_cnn_layers(10, peak);
    print_cnn_layers(64, peak);
    fl_model_spec_t cnn;
    fl_model_parse("cnn", d->dim, 10, &cnn);
    print_train_steps("CNN", &cnn, d, peak, peak2);
    fl_dataset_destroy(&d);
    return 0;
  }
  if (only && strcmp(only, "products") == 0) { /* own kernels against OpenBLAS's */
    double peak = sgemm_gflops(1);
    printf("| sgemm 1024^3, 1 thread | %.1f GFLOP/s | peak (1 core) |\n", peak);
    print_products(peak);
    fl_dataset_destroy(&d);
    return 0;
  }
  if (only && strcmp(only, "peak") == 0) { /* the sgemm peaks alone (bench_cnn.sh) */
    printf("| sgemm 1024^3, 1 thread | %.1f GFLOP/s | peak (1 core) |\n", sgemm_gflops(1));
    printf("| sgemm 1024^3, 2 threads | %.1f GFLOP/s | peak (2 cores) |\n", sgemm_gflops(2));
    fl_dataset_destroy(&d);
    return 0;
  }
  if (only && strcmp(only, "train") == 0) { /* one step alone, for profiling */
    const char *f = getenv("BENCH_FUSED"), *spec = getenv("BENCH_MODEL");
    fl_model_spec_t tm;
    fl_model_parse(spec ? spec : "mlp:200,200", d->dim, 10, &tm);
    double eps, g = train_gflops(&tm, d, 10, 1, !f || atoi(f), &eps);
    printf("%s train step B=10, 1 worker: %.1f GFLOP/s\n", tm.spec, g);
    fl_dataset_destroy(&d);
    return 0;
  }
  if (only && strcmp(only, "agg") == 0) {
    printf("aggregation: %.2f GB/s\n", aggregation_gbs(&m, 10, NULL));
    print_rules(&m, copy_gbs(m.num_params * 4), copy_gbs((size_t)256 << 20));
    print_server_steps(&m, copy_gbs(m.num_params * 4));
    fl_dataset_destroy(&d);
    return 0;
  }
  double peak1 = sgemm_gflops(1), peak2 = sgemm_gflops(2);
  printf("| measurement | value | vs hardware |\n|---|---|---|\n");
  printf("| sgemm 1024^3, 1 thread | %.1f GFLOP/s | peak (1 core) |\n", peak1);
  printf("| sgemm 1024^3, 2 threads | %.1f GFLOP/s | peak (2 cores) |\n", peak2);
  print_train_steps("2NN", &m, d, peak1, peak2);
  print_mlp_layers(10, peak1);
  print_mlp_layers(64, peak1);
  double agg = aggregation_gbs(&m, 10, NULL);
  size_t ws = m.num_params * 4;
  double cp_ws = copy_gbs(ws), cp_big = copy_gbs((size_t)256 << 20);
  printf("| memcpy, %zu KiB (one update) | %.1f GB/s | copy bandwidth, cache |\n", ws >> 10, cp_ws);
  printf("| memcpy, 256 MiB | %.1f GB/s | copy bandwidth, DRAM |\n", cp_big);
  printf("| FedAvg aggregation (decode+validate+fold), 2NN updates | %.1f GB/s | %.0f%% of cache "
         "copy, %.0f%% of DRAM copy |\n",
         agg, 100 * agg / cp_ws, 100 * agg / cp_big);
  print_rules(&m, cp_ws, cp_big);
  print_server_steps(&m, cp_ws);
  printf("\n| CNN layers (common/fl_layers; issue 14) | value | vs hardware |\n|---|---|---|\n");
  print_cnn_layers(10, peak1);
  print_cnn_layers(64, peak1);
  print_products(peak1);
  fl_model_spec_t cnn;
  fl_model_parse("cnn", d->dim, 10, &cnn);
  print_train_steps("CNN", &cnn, d, peak1, peak2);
  printf("\nFLOPs per example (fwd+bwd): 2NN %.0f, CNN %.0f\n", fl_model_flops_per_example(&m),
         fl_model_flops_per_example(&cnn));
  fl_dataset_destroy(&d);
  return 0;
}
