/* fl_sweep_grid and the fl_config pieces it stands on (fl_config_set,
 * fl_config_key); fl_sweep_lrfind's rules. */
#include "fl_config.h"
#include "fl_error.h"
#include "fl_sweep_grid.h"
#include "fl_sweep_lrfind.h"
#include "fl_test.h"

static fl_config_t base(void) {
  fl_config_t c;
  fl_config_defaults(&c);
  snprintf(c.model, sizeof c.model, "softmax");
  return c;
}

TEST(config_set_checks_like_a_flag) {
  fl_config_t c = base(), before = c;
  ASSERT_EQ(fl_config_set(&c, FL_PROG_SIM, "local_epochs", "3"), 0);
  ASSERT_EQ(c.local_epochs, 3u);
  ASSERT_EQ(fl_config_set(&c, FL_PROG_SIM, "fraction", "1.5"), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "--fraction 1.5");
  ASSERT_EQ(fl_config_set(&c, FL_PROG_SIM, "schedule", "exp:gama=0.9"), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "gama");
  ASSERT_EQ(fl_config_set(&c, FL_PROG_SIM, "bind", "tcp://127.0.0.1:1"), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "not an option of fedlr-sim");
  ASSERT_EQ(fl_config_set(&c, FL_PROG_SIM, "config", "x.ini"), FL_EINVAL);
  ASSERT_EQ(c.fraction, before.fraction); /* unchanged on error */
  ASSERT_STR_EQ(fl_config_key("local_epochs"), "local-epochs");
  ASSERT_TRUE(fl_config_key("nosuch") == NULL);
}

TEST(product_order_labels_and_configs) {
  fl_config_t b = base();
  fl_grid_t g = {0};
  ASSERT_EQ(fl_grid_add(&g, &b, "lr=0.01|0.1", "--grid"), 0);
  ASSERT_EQ(fl_grid_add_values(&g, &b, "local_epochs", " 1 | 2 |3", "x.ini:3"), 0);
  ASSERT_EQ(fl_grid_num_configs(&g), 6u);
  ASSERT_EQ(fl_grid_num_seeds(&g), 1u);
  char label[128];
  /* the first dimension varies slowest */
  fl_grid_label(&g, 0, label, sizeof label);
  ASSERT_STR_EQ(label, "lr=0.01 local-epochs=1");
  fl_grid_label(&g, 2, label, sizeof label);
  ASSERT_STR_EQ(label, "lr=0.01 local-epochs=3");
  fl_grid_label(&g, 3, label, sizeof label);
  ASSERT_STR_EQ(label, "lr=0.1 local-epochs=1");
  ASSERT_EQ(fl_grid_set_seeds(&g, "4-5,9"), 0);
  ASSERT_EQ(fl_grid_num_seeds(&g), 3u);
  fl_config_t c;
  ASSERT_EQ(fl_grid_config(&g, &b, 5, 2, &c), 0);
  ASSERT_STR_EQ(c.lr, "0.1");
  ASSERT_EQ(c.local_epochs, 3u);
  ASSERT_EQ(c.seed, 9u);
  ASSERT_EQ(fl_grid_check(&g, &b), 0);
  fl_grid_free(&g);
  fl_grid_label(&g, 0, label, sizeof label);
  ASSERT_STR_EQ(label, "base");
}

TEST(bad_specs_name_the_part) {
  fl_config_t b = base();
  fl_grid_t g = {0};
  ASSERT_EQ(fl_grid_add(&g, &b, "lr", "--grid"), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "expected NAME=V1|V2");
  ASSERT_EQ(fl_grid_add(&g, &b, "lr=0.1|abc", "--grid"), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "value 'abc'");
  ASSERT_EQ(fl_grid_add(&g, &b, "lr=0.1||0.2", "--grid"), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "empty value");
  ASSERT_EQ(fl_grid_add(&g, &b, "seed=1|2", "--grid"), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "--seeds");
  ASSERT_EQ(fl_grid_add(&g, &b, "lr=0.1|0.1", "--grid"), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "given twice");
  ASSERT_EQ(g.num_dims, 0u); /* nothing half-added */
  ASSERT_EQ(fl_grid_add(&g, &b, "lr=0.1", "--grid"), 0);
  ASSERT_EQ(fl_grid_add(&g, &b, "lr=0.2", "--grid"), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "already a dimension");
  ASSERT_EQ(fl_grid_set_seeds(&g, "3-1"), FL_EINVAL);
  ASSERT_EQ(fl_grid_set_seeds(&g, "1,,2"), FL_EINVAL);
  ASSERT_EQ(fl_grid_set_seeds(&g, "1-2,2"), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "given twice");
  ASSERT_EQ(fl_grid_set_seeds(&g, "0-2000"), FL_EINVAL);
  /* a combination the rules between keys refuse: min-clients above the
   * sampled clients is fine for the sim, so use batch-size 0 */
  ASSERT_EQ(fl_grid_add(&g, &b, "batch-size=10|0", "--grid"), FL_EINVAL);
  fl_grid_free(&g);
}

TEST(lrfind_rules) {
  fl_lrfind_t lf;
  ASSERT_EQ(fl_lrfind_parse("on", &lf), 0);
  ASSERT_NEAR(lf.min, 1e-4, 0);
  ASSERT_EQ(lf.rounds, 40u);
  ASSERT_NEAR(lf.min * pow(lf.gamma, lf.rounds - 1), lf.max, 1e-9);
  ASSERT_EQ(fl_lrfind_parse("min=0.01,max=1,rounds=3", &lf), 0);
  ASSERT_NEAR(lf.gamma, 10.0, 1e-12);
  fl_config_t c = base();
  c.target_accuracy = 0.9;
  fl_lrfind_apply(&lf, &c);
  ASSERT_EQ(fl_config_validate(&c, FL_PROG_SIM), 0);
  ASSERT_EQ(c.rounds, 3u);
  ASSERT_NEAR(c.target_accuracy, 0, 0);
  ASSERT_STR_EQ(c.schedule, "exp:gamma=10");
  ASSERT_EQ(fl_lrfind_parse("min=1,max=0.5", &lf), FL_EINVAL);
  ASSERT_EQ(fl_lrfind_parse("rounds=2", &lf), FL_EINVAL);
  ASSERT_EQ(fl_lrfind_parse("maxx=3", &lf), FL_EINVAL);
  ASSERT_CONTAINS(fl_err_msg(), "unknown key 'maxx'");
  /* a loss that falls from 2 to 0.5, then climbs: diverged once the
   * smoothed loss is above 4 x its minimum; the suggestion is a tenth of
   * the rate at the minimum */
  fl_round_metrics_t r[12] = {0};
  double loss[12] = {2.0, 1.5, 1.0, 0.7, 0.5, 0.5, 0.6, 1.0, 2.0, 4.0, 8.0, 16.0};
  for (int i = 0; i < 12; i++) {
    r[i].round = (uint32_t)i + 1;
    r[i].lr = 0.001 * pow(2, i);
    r[i].train_loss = loss[i];
  }
  ASSERT_EQ(fl_lrfind_parse("on", &lf), 0);
  char why[200];
  ASSERT_EQ(fl_lrfind_diverged(&lf, r, 6, why, sizeof why), 0);
  int at = 0;
  for (int n = 1; n <= 12 && !at; n++)
    if (fl_lrfind_diverged(&lf, r, (size_t)n, why, sizeof why)) at = n;
  ASSERT_GT(at, 9);
  ASSERT_CONTAINS(why, "diverged");
  fl_lrfind_result_t res = fl_lrfind_analyse(r, 8);
  ASSERT_NEAR(res.at_min, r[6].lr, 1e-12); /* smoothed (by hand: 0.707 at round 7) lags the raw minimum */
  ASSERT_NEAR(res.suggested, res.at_min / 10, 1e-15);
  ASSERT_TRUE(res.steepest < res.at_min);
  /* a network that died: the loss falls, then sits near chance level,
   * below 4 x its minimum (3.6 at 0.9) but above where it began (2.2) */
  fl_round_metrics_t d[12] = {0};
  double dl[12] = {2.2, 1.6, 1.1, 0.9, 0.95, 1.4, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5};
  int dat = 0;
  for (int i = 0; i < 12; i++) {
    d[i].round = (uint32_t)i + 1;
    d[i].lr = 0.01 * pow(2, i);
    d[i].train_loss = dl[i];
  }
  for (int n = 1; n <= 12 && !dat; n++)
    if (fl_lrfind_diverged(&lf, d, (size_t)n, why, sizeof why)) dat = n;
  ASSERT_GT(dat, 6);
  ASSERT_LE(dat, 10);
  ASSERT_CONTAINS(why, "back above its first value");
  r[3].train_loss = NAN;
  ASSERT_EQ(fl_lrfind_diverged(&lf, r, 4, why, sizeof why), 1);
  ASSERT_CONTAINS(why, "not finite");
}

FL_TEST_MAIN()
