/* fl_blas: who owns the cores, and which OpenBLAS kernels run.
 *
 * OpenBLAS 0.3.21 may not recognise recent Xeons and falls back to slow
 * generic kernels; OPENBLAS_CORETYPE fixes that but is read only when the
 * library loads. fl_blas_setup(), called first thing in main(), picks the
 * core type from CPUID when the user has not set OPENBLAS_CORETYPE and the
 * library reports a weaker core, and re-executes the program once with it
 * set. It also pins OpenBLAS to one thread: fedlr parallelises across
 * clients (one BLAS thread per worker), which is also what makes results
 * independent of the worker count. */
#ifndef FL_BLAS_H
#define FL_BLAS_H

/* May execv() the program again (at most once). Never returns an error:
 * on any failure the program simply continues with the default kernels. */
void fl_blas_setup(int argc, char **argv);

/* The OpenBLAS core in use, e.g. "Cooperlake". */
const char *fl_blas_corename(void);

/* The core type fl_blas_setup() would choose for this CPU ("" if none). */
const char *fl_blas_preferred_core(void);

void fl_blas_set_threads(int n);

#endif
