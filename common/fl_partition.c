/* fl_partition: iid / shards / dirichlet splits. See fl_partition.h.
 *
 * Every kind works the same way: decide an owner client for each example,
 * then group the indices by owner with a counting sort. Grouping by a stable
 * pass over i = 0..n-1 leaves each client's indices ascending, so the layout
 * is canonical whatever order the kind produced them in (the trainer
 * reshuffles every epoch anyway). */
#include "fl_partition.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"
#include "fl_rng.h"

/* Far beyond any sensible K; keeps num_clients*K from overflowing. */
#define FL_PARTITION_MAX_SHARDS_PER_CLIENT 1000000u

struct fl_partition {
  size_t n; /* examples in the dataset */
  size_t num_clients;
  uint32_t *idx; /* (n) example indices, grouped by client */
  size_t *off;   /* (num_clients + 1) client c owns idx[off[c] .. off[c+1]) */
};

enum { KIND_IID, KIND_SHARDS, KIND_DIRICHLET };

typedef struct {
  int kind;
  size_t shards; /* K for shards:K */
  double alpha;  /* ALPHA for dirichlet:ALPHA */
} spec_t;

static int parse_spec(const char *spec, spec_t *s) {
  if (!spec)
    return fl_err_set(FL_EINVAL,
                      "partition spec is NULL (expected iid, shards:K or dirichlet:ALPHA)");
  memset(s, 0, sizeof *s);
  if (strcmp(spec, "iid") == 0) {
    s->kind = KIND_IID;
    return 0;
  }
  if (strncmp(spec, "shards:", 7) == 0) {
    const char *arg = spec + 7;
    char *end;
    errno = 0;
    unsigned long long k = strtoull(arg, &end, 10);
    /* strtoull accepts leading space and '-'; a K must be plain digits. */
    if (*arg < '0' || *arg > '9' || *end != '\0' || errno == ERANGE || k == 0 ||
        k > FL_PARTITION_MAX_SHARDS_PER_CLIENT)
      return fl_err_set(
          FL_EINVAL,
          "partition spec '%s': shard count '%s' must be an integer in 1..%u (e.g. shards:2)", spec,
          arg, FL_PARTITION_MAX_SHARDS_PER_CLIENT);
    s->kind = KIND_SHARDS;
    s->shards = (size_t)k;
    return 0;
  }
  if (strncmp(spec, "dirichlet:", 10) == 0) {
    const char *arg = spec + 10;
    char *end;
    double a = strtod(arg, &end);
    if (end == arg || *end != '\0' || *arg == ' ' || !isfinite(a) || !(a > 0))
      return fl_err_set(
          FL_EINVAL,
          "partition spec '%s': alpha '%s' must be a finite number > 0 (e.g. dirichlet:0.5; "
          "smaller is more skewed)",
          spec, arg);
    s->kind = KIND_DIRICHLET;
    s->alpha = a;
    return 0;
  }
  if (strncmp(spec, "iid:", 4) == 0)
    return fl_err_set(FL_EINVAL, "partition spec '%s': iid takes no parameter", spec);
  return fl_err_set(
      FL_EINVAL, "unknown partition spec '%s' (expected iid, shards:K or dirichlet:ALPHA)", spec);
}

int fl_partition_check_spec(const char *spec) {
  spec_t s;
  return parse_spec(spec, &s);
}

/* Example indices sorted by label, stably (counting sort); class k occupies
 * out[start[k] .. start[k+1]). start has num_classes + 1 entries. */
static void sort_by_label(const fl_dataset_t *d, uint32_t *out, size_t *start) {
  size_t k = d->num_classes;
  memset(start, 0, (k + 1) * sizeof *start);
  for (size_t i = 0; i < d->n; i++)
    start[d->y[i] + 1]++;
  for (size_t c = 0; c < k; c++)
    start[c + 1] += start[c];
  size_t *pos = start + k + 1; /* caller gave room for k more: a cursor per class */
  memcpy(pos, start, k * sizeof *pos);
  for (size_t i = 0; i < d->n; i++)
    out[pos[d->y[i]]++] = (uint32_t)i;
}

/* iid: a shuffled permutation cut into contiguous near-equal parts; the
 * first n % k clients get one extra. */
static void owners_iid(size_t n, size_t k, fl_rng_t *rng, uint32_t *perm, uint32_t *owner) {
  for (size_t i = 0; i < n; i++)
    perm[i] = (uint32_t)i;
  fl_rng_shuffle_u32(rng, perm, n);
  size_t base = n / k, extra = n % k, p = 0;
  for (size_t c = 0; c < k; c++) {
    size_t sz = base + (c < extra);
    for (size_t j = 0; j < sz; j++)
      owner[perm[p++]] = (uint32_t)c;
  }
}

/* shards: label-sorted order cut into k*K shards (sizes differ by at most
 * one), shard ids permuted, client c takes perm[c*K .. c*K+K). */
static int owners_shards(const fl_dataset_t *d, size_t k, size_t shards, fl_rng_t *rng,
                         uint32_t *sorted, uint32_t *owner) {
  size_t n = d->n, total = k * shards;
  int rc = 0;
  size_t *start = malloc((2 * d->num_classes + 1) * sizeof *start);
  uint32_t *perm = malloc(total * sizeof *perm);
  uint32_t *shard_client = malloc(total * sizeof *shard_client); /* (total) shard id -> client */
  if (!start || !perm || !shard_client) {
    rc = fl_err_set(FL_ENOMEM, "partition: out of memory for %zu shards", total);
    goto out;
  }
  sort_by_label(d, sorted, start);
  /* Shuffling the shard ids and handing them out in order is the same as
   * giving each client K random shards without replacement. */
  for (size_t s = 0; s < total; s++)
    perm[s] = (uint32_t)s;
  fl_rng_shuffle_u32(rng, perm, total);
  for (size_t q = 0; q < total; q++)
    shard_client[perm[q]] = (uint32_t)(q / shards);
  size_t base = n / total, extra = n % total, pos = 0;
  for (size_t s = 0; s < total; s++) {
    size_t sz = base + (s < extra);
    for (size_t j = 0; j < sz; j++)
      owner[sorted[pos++]] = shard_client[s];
  }
out:
  free(start);
  free(perm);
  free(shard_client);
  return rc;
}

/* dirichlet: per class, proportions p ~ Dir(alpha) over clients, and the
 * class's shuffled examples cut at round(cumsum(p) * m). */
static int owners_dirichlet(const fl_dataset_t *d, size_t k, double alpha, fl_rng_t *rng,
                            uint32_t *sorted, uint32_t *owner) {
  size_t nc = d->num_classes;
  int rc = 0;
  size_t *start = malloc((2 * nc + 1) * sizeof *start);
  double *p = malloc(k * sizeof *p);
  if (!start || !p) {
    rc = fl_err_set(FL_ENOMEM, "partition: out of memory for %zu clients", k);
    goto out;
  }
  sort_by_label(d, sorted, start);
  for (size_t cls = 0; cls < nc; cls++) {
    uint32_t *ex = sorted + start[cls];
    size_t m = start[cls + 1] - start[cls];
    if (m == 0) continue;
    fl_rng_shuffle_u32(rng, ex, m);
    double sum = 0;
    for (size_t c = 0; c < k; c++)
      sum += p[c] = fl_rng_gamma(rng, alpha);
    if (!(sum > 0) || !isfinite(sum)) {
      /* For tiny alpha every gamma draw can underflow to 0. Dirichlet's
       * limit as alpha -> 0 puts all mass on one client, so do that. */
      size_t who = (size_t)fl_rng_below(rng, k);
      for (size_t j = 0; j < m; j++)
        owner[ex[j]] = (uint32_t)who;
      continue;
    }
    double cum = 0;
    size_t lo = 0;
    for (size_t c = 0; c < k; c++) {
      cum += p[c];
      size_t hi = c + 1 == k ? m : (size_t)floor(cum / sum * (double)m + 0.5);
      if (hi > m) hi = m;
      if (hi < lo) hi = lo;
      for (size_t j = lo; j < hi; j++)
        owner[ex[j]] = (uint32_t)c;
      lo = hi;
    }
  }
out:
  free(start);
  free(p);
  return rc;
}

/* Gives every empty client one example taken from the currently largest
 * client (lowest id on ties), which gives up its highest index. Possible
 * because n >= k: while some client is empty, the largest holds >= 2. */
static int repair_empty(size_t n, size_t k, uint32_t *owner) {
  size_t *cnt = calloc(k, sizeof *cnt);
  if (!cnt) return fl_err_set(FL_ENOMEM, "partition: out of memory for %zu clients", k);
  for (size_t i = 0; i < n; i++)
    cnt[owner[i]]++;
  for (size_t c = 0; c < k; c++) {
    if (cnt[c]) continue;
    size_t big = 0;
    for (size_t j = 1; j < k; j++)
      if (cnt[j] > cnt[big]) big = j;
    for (size_t i = n; i-- > 0;) {
      if (owner[i] == big) {
        owner[i] = (uint32_t)c;
        break;
      }
    }
    cnt[big]--;
    cnt[c] = 1;
  }
  free(cnt);
  return 0;
}

int fl_partition_new(const fl_dataset_t *d, const char *spec, size_t num_clients, uint64_t seed,
                     fl_partition_t **out) {
  spec_t s;
  fl_partition_t *p = NULL;
  uint32_t *owner = NULL, *scratch = NULL; /* (n) owner client per example; (n) work space */
  size_t *cur = NULL;
  int rc;
  if (!d || !out) return fl_err_set(FL_EINVAL, "fl_partition_new: NULL argument");
  rc = parse_spec(spec, &s);
  if (rc) return rc;
  if (d->n == 0 || d->n > UINT32_MAX)
    return fl_err_set(FL_EINVAL, "partition: dataset has %zu examples (need 1..%u)", d->n,
                      UINT32_MAX);
  if (num_clients < 1 || num_clients > d->n)
    return fl_err_set(FL_EINVAL,
                      "partition: %zu clients for %zu examples (need 1 <= clients <= examples)",
                      num_clients, d->n);
  if (s.kind == KIND_SHARDS && s.shards > d->n / num_clients)
    return fl_err_set(
        FL_EINVAL,
        "partition '%s': %zu clients x %zu shards = %zu shards, more than the %zu examples; "
        "use fewer shards per client or fewer clients",
        spec, num_clients, s.shards, num_clients * s.shards, d->n);
  if (s.kind != KIND_IID) {
    if (d->num_classes == 0 || d->num_classes > FL_DATA_MAX_CLASSES)
      return fl_err_set(FL_EINVAL, "partition '%s': dataset has %zu classes (need 1..%d)", spec,
                        d->num_classes, FL_DATA_MAX_CLASSES);
    for (size_t i = 0; i < d->n; i++)
      if (d->y[i] < 0 || (size_t)d->y[i] >= d->num_classes)
        return fl_err_set(FL_EINVAL, "partition '%s': example %zu has label %d outside 0..%zu",
                          spec, i, (int)d->y[i], d->num_classes - 1);
  }

  size_t n = d->n, k = num_clients;
  p = calloc(1, sizeof *p);
  owner = malloc(n * sizeof *owner);
  scratch = malloc(n * sizeof *scratch);
  if (p) {
    p->idx = malloc(n * sizeof *p->idx);
    p->off = calloc(k + 1, sizeof *p->off);
  }
  if (!p || !owner || !scratch || !p->idx || !p->off) {
    rc = fl_err_set(FL_ENOMEM, "partition: out of memory for %zu examples", n);
    goto out;
  }
  p->n = n;
  p->num_clients = k;

  /* One stream for the whole split; the seed alone decides it. */
  fl_rng_t rng;
  fl_rng_seed(&rng, fl_rng_derive(seed, FL_RNG_PARTITION, 0, 0));
  switch (s.kind) {
  case KIND_IID: owners_iid(n, k, &rng, scratch, owner); break;
  case KIND_SHARDS: rc = owners_shards(d, k, s.shards, &rng, scratch, owner); break;
  default:
    rc = owners_dirichlet(d, k, s.alpha, &rng, scratch, owner);
    if (!rc) rc = repair_empty(n, k, owner);
    break;
  }
  if (rc) goto out;

  /* Group by owner (counting sort, stable in i). */
  for (size_t i = 0; i < n; i++)
    p->off[owner[i] + 1]++;
  for (size_t c = 0; c < k; c++)
    p->off[c + 1] += p->off[c];
  cur = malloc(k * sizeof *cur);
  if (!cur) {
    rc = fl_err_set(FL_ENOMEM, "partition: out of memory for %zu clients", k);
    goto out;
  }
  memcpy(cur, p->off, k * sizeof *cur);
  for (size_t i = 0; i < n; i++)
    p->idx[cur[owner[i]]++] = (uint32_t)i;
  *out = p;
  p = NULL;
out:
  free(owner);
  free(scratch);
  free(cur);
  fl_partition_destroy(&p);
  return rc;
}

void fl_partition_destroy(fl_partition_t **p) {
  if (!p || !*p) return;
  free((*p)->idx);
  free((*p)->off);
  free(*p);
  *p = NULL;
}

size_t fl_partition_num_clients(const fl_partition_t *p) {
  return p ? p->num_clients : 0;
}

const uint32_t *fl_partition_indices(const fl_partition_t *p, size_t c, size_t *n) {
  if (!p || c >= p->num_clients) {
    if (n) *n = 0;
    return NULL;
  }
  if (n) *n = p->off[c + 1] - p->off[c];
  return p->idx + p->off[c];
}

/* Labels shown per summary row; the rest are elided ("...") so a dataset
 * with thousands of classes still prints one readable line per client. */
#define SUMMARY_MAX_LABELS 20

void fl_partition_print_summary(const fl_partition_t *p, const fl_dataset_t *d, FILE *f,
                                size_t max_rows) {
  if (!p || !f) return;
  int with_labels =
      d && d->n == p->n && d->num_classes > 0 && d->num_classes <= FL_DATA_MAX_CLASSES;
  size_t *cnt = with_labels ? calloc(d->num_classes, sizeof *cnt) : NULL;
  if (with_labels && !cnt) with_labels = 0;
  size_t mn = SIZE_MAX, mx = 0, distinct_total = 0;
  for (size_t c = 0; c < p->num_clients; c++) {
    size_t m = p->off[c + 1] - p->off[c];
    const uint32_t *ix = p->idx + p->off[c];
    if (m < mn) mn = m;
    if (m > mx) mx = m;
    int show = c < max_rows;
    if (show) fprintf(f, "client %zu: %zu examples", c, m);
    if (with_labels) {
      size_t distinct = 0;
      for (size_t j = 0; j < m; j++) {
        int32_t y = d->y[ix[j]];
        if (y >= 0 && (size_t)y < d->num_classes && cnt[y]++ == 0) distinct++;
      }
      distinct_total += distinct;
      if (show) {
        fprintf(f, ", labels [");
        size_t shown = 0;
        for (size_t y = 0; y < d->num_classes && shown < distinct; y++) {
          if (!cnt[y]) continue;
          if (shown == SUMMARY_MAX_LABELS) {
            fprintf(f, " ...");
            break;
          }
          fprintf(f, "%s%zu:%zu", shown ? " " : "", y, cnt[y]);
          shown++;
        }
        fprintf(f, "]");
      }
      /* Reset only what this client touched: O(n) overall, not O(k * classes). */
      for (size_t j = 0; j < m; j++) {
        int32_t y = d->y[ix[j]];
        if (y >= 0 && (size_t)y < d->num_classes) cnt[y] = 0;
      }
    }
    if (show) fprintf(f, "\n");
  }
  if (p->num_clients > max_rows) fprintf(f, "... (%zu more clients)\n", p->num_clients - max_rows);
  fprintf(f, "total: %zu examples over %zu clients; per client min %zu, mean %.1f, max %zu", p->n,
          p->num_clients, mn, (double)p->n / (double)p->num_clients, mx);
  if (with_labels)
    fprintf(f, "; mean distinct labels %.2f", (double)distinct_total / (double)p->num_clients);
  fprintf(f, "\n");
  free(cnt);
}

int fl_partition_holdout(const uint32_t *idx, size_t n, double fraction, uint64_t seed,
                         uint64_t client, uint32_t *train, size_t *n_train, uint32_t *eval,
                         size_t *n_eval) {
  if (!(fraction >= 0 && fraction < 1))
    return fl_err_set(FL_EINVAL, "holdout fraction %g is not in [0, 1)", fraction);
  size_t k = (size_t)floor(fraction * (double)n);
  if (n > 0 && k > n - 1) k = n - 1;
  uint32_t *pos = malloc((n ? n : 1) * sizeof *pos);
  uint8_t *held = calloc(n ? n : 1, 1);
  if (!pos || !held) {
    free(pos);
    free(held);
    return fl_err_set(FL_ENOMEM, "out of memory holding out %zu of %zu examples", k, n);
  }
  /* A partial Fisher-Yates over positions: the first k are held out. */
  fl_rng_t r;
  fl_rng_seed(&r, fl_rng_derive(seed, FL_RNG_HOLDOUT, client, 0));
  for (size_t i = 0; i < n; i++)
    pos[i] = (uint32_t)i;
  for (size_t i = 0; i < k; i++) {
    size_t j = i + (size_t)fl_rng_below(&r, n - i);
    uint32_t t = pos[i];
    pos[i] = pos[j];
    pos[j] = t;
    held[pos[i]] = 1;
  }
  size_t a = 0, b = 0;
  for (size_t i = 0; i < n; i++) {
    if (held[i])
      eval[b++] = idx[i];
    else
      train[a++] = idx[i];
  }
  *n_train = a;
  *n_eval = b;
  free(pos);
  free(held);
  return 0;
}
