/* Tests for fl_partition: coverage (every index exactly once), determinism,
 * the shape of each kind's split on Fashion-MNIST, and spec validation. */
#include <stdint.h>

#include "fl_data.h"
#include "fl_error.h"
#include "fl_partition.h"
#include "fl_test.h"

/* ------------------------------------------------------------ helpers */

/* Fashion-MNIST train, loaded once per process (read-only for all tests;
 * the static pointer keeps it reachable, so LeakSanitizer stays quiet). */
static const fl_dataset_t *fmnist(void) {
  static fl_dataset_t *d;
  if (!d && fl_dataset_load_named("fashion-mnist", fl_test_data_dir(), 1, &d) != 0)
    fprintf(stderr, "  cannot load Fashion-MNIST: %s\n", fl_err_msg());
  return d;
}

/* A tiny labeled dataset without features (partitioning never reads x). */
static fl_dataset_t *synth(size_t n, size_t classes) {
  fl_dataset_t *d = calloc(1, sizeof *d);
  d->n = n;
  d->dim = 1;
  d->num_classes = classes;
  d->x = calloc(n, sizeof *d->x);
  d->y = malloc(n * sizeof *d->y);
  for (size_t i = 0; i < n; i++) d->y[i] = (int32_t)((i * 7) % classes);
  return d;
}

/* 1 if every index 0..n-1 appears exactly once across clients and each
 * client's list is ascending. */
static int covers_exactly_once(const fl_partition_t *p, size_t n) {
  unsigned char *seen = calloc(n, 1);
  size_t total = 0;
  int ok = 1;
  for (size_t c = 0; c < fl_partition_num_clients(p) && ok; c++) {
    size_t m;
    const uint32_t *ix = fl_partition_indices(p, c, &m);
    for (size_t j = 0; j < m && ok; j++) {
      if (ix[j] >= n || seen[ix[j]] || (j && ix[j] <= ix[j - 1])) ok = 0;
      else seen[ix[j]] = 1;
    }
    total += m;
  }
  free(seen);
  return ok && total == n;
}

static int same_split(const fl_partition_t *a, const fl_partition_t *b) {
  if (fl_partition_num_clients(a) != fl_partition_num_clients(b)) return 0;
  for (size_t c = 0; c < fl_partition_num_clients(a); c++) {
    size_t ma, mb;
    const uint32_t *ia = fl_partition_indices(a, c, &ma), *ib = fl_partition_indices(b, c, &mb);
    if (ma != mb || memcmp(ia, ib, ma * sizeof *ia) != 0) return 0;
  }
  return 1;
}

/* Mean number of distinct labels per client. */
static double mean_distinct(const fl_partition_t *p, const fl_dataset_t *d) {
  size_t k = fl_partition_num_clients(p), total = 0;
  for (size_t c = 0; c < k; c++) {
    size_t m, seen[256] = {0}, distinct = 0;
    const uint32_t *ix = fl_partition_indices(p, c, &m);
    for (size_t j = 0; j < m; j++)
      if (seen[d->y[ix[j]]]++ == 0) distinct++;
    total += distinct;
  }
  return (double)total / (double)k;
}

/* Mean over clients of the entropy (bits) of the client's label histogram:
 * log2(10) = 3.32 for a perfectly balanced Fashion-MNIST client, 0 for a
 * single-label one. Unlike distinct-label counts, a stray example or two
 * barely moves it. */
static double mean_label_entropy(const fl_partition_t *p, const fl_dataset_t *d) {
  size_t k = fl_partition_num_clients(p);
  double total = 0;
  for (size_t c = 0; c < k; c++) {
    size_t m, cnt[256] = {0};
    const uint32_t *ix = fl_partition_indices(p, c, &m);
    for (size_t j = 0; j < m; j++) cnt[d->y[ix[j]]]++;
    for (size_t y = 0; y < 256; y++)
      if (cnt[y]) total -= (double)cnt[y] / (double)m * log2((double)cnt[y] / (double)m);
  }
  return total / (double)k;
}

static size_t min_size(const fl_partition_t *p) {
  size_t mn = SIZE_MAX;
  for (size_t c = 0; c < fl_partition_num_clients(p); c++) {
    size_t m;
    fl_partition_indices(p, c, &m);
    if (m < mn) mn = m;
  }
  return mn;
}

static const char *const kinds[] = {"iid", "shards:2", "dirichlet:0.5"};

/* ------------------------------------------------------------ tests */

TEST(every_index_once_all_kinds) {
  SKIP_UNLESS_FASHION_MNIST();
  const fl_dataset_t *d = fmnist();
  ASSERT_TRUE(d != NULL);
  for (size_t i = 0; i < 3; i++) {
    fl_partition_t *p = NULL;
    int rc = fl_partition_new(d, kinds[i], 100, 42, &p);
    if (rc) fprintf(stderr, "  %s: %s\n", kinds[i], fl_err_msg());
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(fl_partition_num_clients(p), 100);
    int ok = covers_exactly_once(p, d->n);
    fl_partition_destroy(&p);
    ASSERT_TRUE(p == NULL);
    if (!ok) fprintf(stderr, "  kind %s\n", kinds[i]);
    ASSERT_TRUE(ok);
  }
}

TEST(every_index_once_small_uneven) {
  /* n not divisible by anything convenient; several client counts, incl.
   * one client and as many clients as examples. */
  fl_dataset_t *d = synth(103, 5);
  size_t ks[] = {1, 2, 7, 51, 103};
  for (size_t i = 0; i < 3; i++)
    for (size_t j = 0; j < sizeof ks / sizeof *ks; j++) {
      const char *spec = i == 1 ? "shards:1" : kinds[i];
      fl_partition_t *p = NULL;
      int rc = fl_partition_new(d, spec, ks[j], 7, &p);
      if (rc) fprintf(stderr, "  %s k=%zu: %s\n", spec, ks[j], fl_err_msg());
      int ok = rc == 0 && covers_exactly_once(p, d->n) && min_size(p) >= 1;
      fl_partition_destroy(&p);
      if (!ok) fprintf(stderr, "  %s with %zu clients\n", spec, ks[j]);
      ASSERT_TRUE(ok);
    }
  fl_dataset_destroy(&d);
}

TEST(deterministic_by_seed) {
  SKIP_UNLESS_FASHION_MNIST();
  const fl_dataset_t *d = fmnist();
  ASSERT_TRUE(d != NULL);
  for (size_t i = 0; i < 3; i++) {
    fl_partition_t *a = NULL, *b = NULL, *c = NULL;
    ASSERT_EQ(fl_partition_new(d, kinds[i], 50, 1234, &a), 0);
    ASSERT_EQ(fl_partition_new(d, kinds[i], 50, 1234, &b), 0);
    ASSERT_EQ(fl_partition_new(d, kinds[i], 50, 1235, &c), 0);
    int same = same_split(a, b), differ = !same_split(a, c);
    fl_partition_destroy(&a);
    fl_partition_destroy(&b);
    fl_partition_destroy(&c);
    if (!same || !differ) fprintf(stderr, "  kind %s\n", kinds[i]);
    ASSERT_TRUE(same);
    ASSERT_TRUE(differ);
  }
}

TEST(iid_sizes_near_equal) {
  fl_dataset_t *d = synth(1003, 10);
  fl_partition_t *p = NULL;
  ASSERT_EQ(fl_partition_new(d, "iid", 10, 3, &p), 0);
  for (size_t c = 0; c < 10; c++) {
    size_t m;
    fl_partition_indices(p, c, &m);
    ASSERT_EQ(m, c < 3 ? 101 : 100); /* first n % k clients get one more */
  }
  fl_partition_destroy(&p);
  fl_dataset_destroy(&d);
  /* On real data iid clients see (nearly) every class. */
  SKIP_UNLESS_FASHION_MNIST();
  const fl_dataset_t *fm = fmnist();
  ASSERT_TRUE(fm != NULL);
  ASSERT_EQ(fl_partition_new(fm, "iid", 100, 3, &p), 0);
  double md = mean_distinct(p, fm);
  fl_partition_destroy(&p);
  ASSERT_DBL_OP(md, >, 9.9);
}

TEST(shards_two_labels_per_client) {
  /* 100 clients x 2 shards = 200 shards of 300; each class has 6000
   * examples = exactly 20 shards, so each shard holds one label. */
  SKIP_UNLESS_FASHION_MNIST();
  const fl_dataset_t *d = fmnist();
  ASSERT_TRUE(d != NULL);
  fl_partition_t *p = NULL;
  ASSERT_EQ(fl_partition_new(d, "shards:2", 100, 9, &p), 0);
  size_t two = 0, max_distinct = 0, bad_size = 0;
  for (size_t c = 0; c < 100; c++) {
    size_t m, seen[10] = {0}, distinct = 0;
    const uint32_t *ix = fl_partition_indices(p, c, &m);
    bad_size += m != 600;
    for (size_t j = 0; j < m; j++)
      if (seen[d->y[ix[j]]]++ == 0) distinct++;
    if (distinct > max_distinct) max_distinct = distinct;
    two += distinct == 2;
  }
  fl_partition_destroy(&p);
  ASSERT_EQ(bad_size, 0);
  ASSERT_LE(max_distinct, 2);
  ASSERT_GT(two, 50); /* random shard pairs mostly differ in label */
}

TEST(shards_remainder_spread) {
  fl_dataset_t *d = synth(23, 3);
  fl_partition_t *p = NULL;
  ASSERT_EQ(fl_partition_new(d, "shards:2", 5, 1, &p), 0); /* 10 shards: 3 of 3, 7 of 2 */
  size_t mn = SIZE_MAX, mx = 0;
  for (size_t c = 0; c < 5; c++) {
    size_t m;
    fl_partition_indices(p, c, &m);
    if (m < mn) mn = m;
    if (m > mx) mx = m;
  }
  fl_partition_destroy(&p);
  fl_dataset_destroy(&d);
  ASSERT_GE(mn, 4);
  ASSERT_LE(mx, 6);
}

TEST(dirichlet_skew_follows_alpha) {
  SKIP_UNLESS_FASHION_MNIST();
  const fl_dataset_t *d = fmnist();
  ASSERT_TRUE(d != NULL);
  fl_partition_t *lo = NULL, *hi = NULL;
  ASSERT_EQ(fl_partition_new(d, "dirichlet:0.1", 100, 5, &lo), 0);
  ASSERT_EQ(fl_partition_new(d, "dirichlet:100", 100, 5, &hi), 0);
  double md_lo = mean_distinct(lo, d), md_hi = mean_distinct(hi, d);
  double h_lo = mean_label_entropy(lo, d), h_hi = mean_label_entropy(hi, d);
  fprintf(stderr, "  alpha 0.1: %.2f distinct labels, entropy %.2f bits; alpha 100: %.2f, %.2f bits\n", md_lo, h_lo,
          md_hi, h_hi);
  fl_partition_destroy(&lo);
  fl_partition_destroy(&hi);
  /* Dir(100) clients look like the whole dataset; Dir(0.1) clients are
   * dominated by one or two labels (with a tail of stray examples, which is
   * why distinct-label counts stay around 5 with 6000 examples per class). */
  ASSERT_DBL_OP(md_hi, >, 9.9);
  ASSERT_DBL_OP(h_hi, >, 3.2);
  ASSERT_DBL_OP(h_lo, <, 0.5 * h_hi);
  ASSERT_DBL_OP(md_lo, <, md_hi - 2);
}

TEST(dirichlet_no_empty_clients) {
  SKIP_UNLESS_FASHION_MNIST();
  const fl_dataset_t *d = fmnist();
  ASSERT_TRUE(d != NULL);
  const char *specs[] = {"dirichlet:0.1", "dirichlet:0.001", "dirichlet:1e-9"};
  for (size_t i = 0; i < 3; i++) {
    fl_partition_t *p = NULL;
    ASSERT_EQ(fl_partition_new(d, specs[i], 1000, 11, &p), 0);
    size_t mn = min_size(p);
    int ok = covers_exactly_once(p, d->n);
    fl_partition_destroy(&p);
    if (mn < 1 || !ok) fprintf(stderr, "  %s\n", specs[i]);
    ASSERT_GE(mn, 1);
    ASSERT_TRUE(ok);
  }
  /* As many clients as examples: everybody gets exactly one. */
  fl_dataset_t *s = synth(40, 4);
  fl_partition_t *p = NULL;
  ASSERT_EQ(fl_partition_new(s, "dirichlet:0.05", 40, 2, &p), 0);
  size_t mn = min_size(p);
  int ok = covers_exactly_once(p, s->n);
  fl_partition_destroy(&p);
  fl_dataset_destroy(&s);
  ASSERT_EQ(mn, 1);
  ASSERT_TRUE(ok);
}

TEST(spec_validation) {
  const char *good[] = {"iid", "shards:1", "shards:20", "dirichlet:0.5", "dirichlet:100", "dirichlet:1e-3"};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
    int rc = fl_partition_check_spec(good[i]);
    if (rc) fprintf(stderr, "  %s: %s\n", good[i], fl_err_msg());
    ASSERT_EQ(rc, 0);
  }
  struct {
    const char *spec, *needle;
  } bad[] = {
      {"", "unknown partition spec ''"},
      {"IID", "unknown partition spec 'IID'"},
      {"iid:3", "iid takes no parameter"},
      {"shards", "unknown partition spec 'shards'"},
      {"shards:", "shard count ''"},
      {"shards:0", "shard count '0'"},
      {"shards:-2", "shard count '-2'"},
      {"shards:2x", "shard count '2x'"},
      {"shards:1.5", "shard count '1.5'"},
      {"shards:99999999999999999999", "shard count '99999999999999999999'"},
      {"dirichlet:", "alpha ''"},
      {"dirichlet:0", "alpha '0'"},
      {"dirichlet:-1", "alpha '-1'"},
      {"dirichlet:nan", "alpha 'nan'"},
      {"dirichlet:inf", "alpha 'inf'"},
      {"dirichlet:0.5.1", "alpha '0.5.1'"},
      {"pathological", "expected iid, shards:K or dirichlet:ALPHA"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    int rc = fl_partition_check_spec(bad[i].spec);
    if (rc != FL_EINVAL || !strstr(fl_err_msg(), bad[i].needle))
      fprintf(stderr, "  spec '%s' -> %d '%s'\n", bad[i].spec, rc, fl_err_msg());
    ASSERT_EQ(rc, FL_EINVAL);
    ASSERT_CONTAINS(fl_err_msg(), bad[i].needle);
  }
  ASSERT_EQ(fl_partition_check_spec(NULL), FL_EINVAL);
}

TEST(new_rejects_bad_sizes) {
  fl_dataset_t *d = synth(10, 2);
  fl_partition_t *p = NULL;
  ASSERT_EQ(fl_partition_new(d, "iid", 0, 1, &p), FL_EINVAL);
  ASSERT_EQ(fl_partition_new(d, "iid", 11, 1, &p), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "11 clients for 10 examples");
  ASSERT_EQ(fl_partition_new(d, "shards:3", 4, 1, &p), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "12 shards");
  ASSERT_EQ(fl_partition_new(d, "bogus", 2, 1, &p), FL_EINVAL);
  d->y[3] = 5; /* outside num_classes */
  ASSERT_EQ(fl_partition_new(d, "dirichlet:1", 2, 1, &p), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "example 3 has label 5");
  ASSERT_TRUE(p == NULL);
  fl_dataset_destroy(&d);
  fl_partition_destroy(&p); /* NULL-safe */
  fl_partition_destroy(NULL);
  size_t m = 99;
  ASSERT_TRUE(fl_partition_indices(NULL, 0, &m) == NULL);
  ASSERT_EQ(m, 0);
}

TEST(print_summary) {
  SKIP_UNLESS_FASHION_MNIST();
  const fl_dataset_t *d = fmnist();
  ASSERT_TRUE(d != NULL);
  fl_partition_t *p = NULL;
  ASSERT_EQ(fl_partition_new(d, "shards:2", 100, 9, &p), 0);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  fl_partition_print_summary(p, d, f, 3);
  fclose(f);
  fl_partition_destroy(&p);
  fprintf(stderr, "%s", buf);
  int ok = strstr(buf, "client 0: 600 examples, labels [") && strstr(buf, "client 2: ") && !strstr(buf, "client 3:") &&
           strstr(buf, "... (97 more clients)") &&
           strstr(buf, "total: 60000 examples over 100 clients; per client min 600, mean 600.0, max 600") &&
           strstr(buf, "mean distinct labels");
  free(buf);
  ASSERT_TRUE(ok);
}

/* A client's held-out examples: the count, disjoint and complete, stable
 * order, deterministic per (seed, client), nothing held out at 0. */
TEST(holdout_split) {
  enum { N = 103 };
  uint32_t idx[N], tr[N], ev[N], tr2[N], ev2[N];
  for (uint32_t i = 0; i < N; i++)
    idx[i] = 1000 + 7 * (N - i); /* descending: "stable" is visible */
  size_t nt, ne, nt2, ne2;
  ASSERT_EQ(fl_partition_holdout(idx, N, 0.2, 5, 3, tr, &nt, ev, &ne), 0);
  ASSERT_EQ(ne, 20);
  ASSERT_EQ(nt, 83);
  uint8_t seen[N] = {0};
  for (size_t i = 0; i < nt; i++)
    seen[(idx[0] - tr[i]) / 7]++;
  for (size_t i = 0; i < ne; i++)
    seen[(idx[0] - ev[i]) / 7]++;
  for (size_t i = 0; i < N; i++)
    ASSERT_EQ(seen[i], 1);
  for (size_t i = 1; i < nt; i++)
    ASSERT_GT(tr[i - 1], tr[i]);
  for (size_t i = 1; i < ne; i++)
    ASSERT_GT(ev[i - 1], ev[i]);
  ASSERT_EQ(fl_partition_holdout(idx, N, 0.2, 5, 3, tr2, &nt2, ev2, &ne2), 0);
  ASSERT_EQ(memcmp(ev, ev2, ne * sizeof ev[0]), 0);
  ASSERT_EQ(fl_partition_holdout(idx, N, 0.2, 5, 4, tr2, &nt2, ev2, &ne2), 0);
  ASSERT_NE(memcmp(ev, ev2, ne * sizeof ev[0]), 0); /* another client, another choice */
  ASSERT_EQ(fl_partition_holdout(idx, N, 0, 5, 3, tr2, &nt2, ev2, &ne2), 0);
  ASSERT_EQ(ne2, 0);
  ASSERT_EQ(nt2, N);
  ASSERT_EQ(memcmp(tr2, idx, sizeof idx), 0);
  ASSERT_EQ(fl_partition_holdout(idx, 1, 0.9, 5, 3, tr2, &nt2, ev2, &ne2), 0);
  ASSERT_EQ(nt2, 1); /* one example stays to train on */
  ASSERT_EQ(ne2, 0);
  ASSERT_EQ(fl_partition_holdout(idx, N, 1.0, 5, 3, tr2, &nt2, ev2, &ne2), FL_EINVAL);
  ASSERT_EQ(fl_partition_holdout(idx, N, -0.1, 5, 3, tr2, &nt2, ev2, &ne2), FL_EINVAL);
}

FL_TEST_MAIN()
