/* fl_sched_dump: prints what common/fl_sched computes, for the Python port's
 * test (tests/it_py_sched.sh, python/tests/test_sched.py), which feeds it
 * the same specs and compares.
 *
 * Reads commands from stdin, one per line, fields separated by tabs:
 *
 *   lr      SPEC  LR0  T1,T2,...    fl_sched_parse, then fl_sched_lr at each t
 *   local   SPEC                    fl_sched_parse_local
 *   plateau SPEC  LR0  M1,M2,...    fl_sched_parse, then for each metric
 *                                   fl_plateau_observe and fl_sched_lr(t = 0)
 *
 * and answers each with one line:
 *
 *   ok  CANONICAL  V1 V2 ...        (values as C99 hex floats, %a: exact)
 *   err MESSAGE                     (fl_err_msg())
 *
 * For plateau each value is "RATE/REDUCED" (REDUCED 0 or 1). LR0 and the
 * metrics are read with strtod (hex floats welcome), t with strtoull. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fl_error.h"
#include "fl_sched.h"

#define LINE_MAX_BYTES 65536

static void answer_err(void) { printf("err\t%s\n", fl_err_msg()); }

static void answer_canon(const fl_sched_t *s) {
  char canon[1024];
  fl_sched_format(s, canon, sizeof canon);
  printf("ok\t%s\t", canon);
}

int main(void) {
  static char line[LINE_MAX_BYTES];
  while (fgets(line, sizeof line, stdin)) {
    line[strcspn(line, "\n")] = '\0';
    char *fields[4] = {0};
    int nf = 0;
    for (char *p = line; nf < 4;) {
      fields[nf++] = p;
      char *tab = strchr(p, '\t');
      if (!tab) break;
      *tab = '\0';
      p = tab + 1;
    }
    fl_sched_t s;
    if (nf >= 2 && strcmp(fields[0], "local") == 0) {
      if (fl_sched_parse_local(fields[1], &s)) {
        answer_err();
        continue;
      }
      answer_canon(&s);
      printf("\n");
    } else if (nf == 4 && (strcmp(fields[0], "lr") == 0 || strcmp(fields[0], "plateau") == 0)) {
      int plateau = fields[0][0] == 'p';
      if (fl_sched_parse(fields[1], &s)) {
        answer_err();
        continue;
      }
      double lr0 = strtod(fields[2], NULL);
      fl_plateau_t pl;
      fl_plateau_init(&pl);
      answer_canon(&s);
      const char *sep = "";
      for (char *item = strtok(fields[3], ","); item; item = strtok(NULL, ",")) {
        if (plateau) {
          int reduced = fl_plateau_observe(&s, &pl, strtod(item, NULL));
          printf("%s%a/%d", sep, fl_sched_lr(&s, lr0, 0, &pl), reduced);
        } else {
          printf("%s%a", sep, fl_sched_lr(&s, lr0, strtoull(item, NULL, 10), NULL));
        }
        sep = " ";
      }
      printf("\n");
    } else {
      printf("err\tfl_sched_dump: bad command line (see the header of tests/tools/fl_sched_dump.c)\n");
    }
    fflush(stdout);
  }
  return 0;
}
