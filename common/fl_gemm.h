/* fl_gemm: the matrix products of training, at the shapes federated clients
 * run (batch 10 to 64), on AVX-512 and AVX2 kernels of our own, and the
 * data movement around them in a CNN: the copies that lower a convolution
 * to a product (im2col, col2im) and 2x2 max pooling.
 *
 * OpenBLAS is built for large square products; at a batch of 10 its
 * NoTrans/Trans and Trans/NoTrans paths spend more time packing than
 * multiplying (the 2NN's step at B = 10 ran at ~40% of the sgemm peak). These
 * kernels work on the operands where they lie, register-blocked:
 *   nt: C = A B^T   the forward of a dense layer, z = x W^T   (dot products)
 *   tn: C = A^T B   its weight gradient, dW = dz^T x          (rank-K update)
 *   nn: C = A B     its input gradient, dx = dz W             (rank-K update)
 * Every matrix is row-major and contiguous; `acc` 0 writes C, 1 adds to it.
 *
 * Kernel choice: AVX-512 where the CPU has it, else AVX2 + FMA, else
 * OpenBLAS; it depends on the CPU and on FEDLR_GEMM (below), never on the
 * data or the thread, so a given machine always gives the same bits. The
 * sum order within an element is fixed (k ascending; the nt kernels add
 * 16- or 8-wide partial sums, then reduce them in a fixed tree), so results
 * are deterministic but differ between the three kernel families, as they
 * already did between OpenBLAS's core types.
 *
 * FEDLR_GEMM=avx512|avx2|blas in the environment forces a family (the CPU
 * must have it; otherwise the automatic choice stands): for benchmarks and
 * tests, read once. */
#ifndef FL_GEMM_H
#define FL_GEMM_H

#include <stddef.h>
#include <stdint.h>

typedef enum { FL_GEMM_BLAS = 0, FL_GEMM_AVX2 = 1, FL_GEMM_AVX512 = 2 } fl_gemm_kind_t;

/* C (M, N) (+)= A (M, K) B^T, B (N, K). */
void fl_gemm_nt(size_t M, size_t N, size_t K, const float *A, const float *B, float *C, int acc);
/* C (M, N) (+)= A^T B, A (K, M), B (K, N). */
void fl_gemm_tn(size_t M, size_t N, size_t K, const float *A, const float *B, float *C, int acc);
/* C (M, N) (+)= A B, A (M, K), B (K, N). */
void fl_gemm_nn(size_t M, size_t N, size_t K, const float *A, const float *B, float *C, int acc);

/* C (M, N) = bias[i] + A B row by row, A (M, K), B (K, N), then with relu
 * max(C, 0): the bits of filling C with the bias, fl_gemm_nn adding the
 * product to it, then fl_relu_forward (a convolution's forward, its bias and
 * ReLU in the product's store instead of two more passes over C). */
void fl_gemm_nn_bias(size_t M, size_t N, size_t K, const float *A, const float *B, float *C,
                     const float *bias, int relu);

/* C (M, N) = C - lr (A^T B), A (K, M), B (K, N): an SGD step on a weight
 * whose gradient is A^T B, fused so the gradient is never stored. Each
 * element is rounded as in `g = A^T B; C -= lr * g` with fl_gemm_tn (the
 * product, then the multiplication by lr, then the subtraction): the same
 * bits. Returns 0 and does nothing when the family is OpenBLAS's, which has
 * no such step (the caller then takes the unfused path). */
int fl_gemm_tn_sgd(size_t M, size_t N, size_t K, const float *A, const float *B, float *C,
                   float lr);

/* Lowering a stride-1 convolution to a product (fl_layers): one image x
 * (C, H, W) with `pad` zeros on every side, a KH x KW kernel, an output of
 * OH x OW = (H + 2 pad - KH + 1) x (W + 2 pad - KW + 1):
 *   im2col  col[(c KH + kh) KW + kw][oh OW + ow] = x[c][oh + kh - pad][ow + kw - pad]
 *           (0 outside the image)
 *   col2im  dx (C, H, W) = the sum, over every entry of dcol (same shape as
 *           col), of that entry at the pixel it was copied from; dx is
 *           written whole, every sum in (kh, kw, oh) order from +0
 * The rows are short (14 or 28 floats in the FedAvg CNN): masked vector
 * copies, 3-4x faster than plain loops. Every family gives the same bits
 * (copies; sums in one order). */
typedef struct {
  size_t C, H, W, KH, KW, pad;
} fl_gemm_conv_t;
void fl_gemm_im2col(const fl_gemm_conv_t *s, float *col, const float *x);
void fl_gemm_col2im(const fl_gemm_conv_t *s, float *dx, const float *dcol);

/* 2x2 max pooling of `planes` planes of H x W (fl_layers.h's
 * fl_maxpool2_forward): out (planes, H/2, W/2) = each window's first
 * maximum in row-major order, argmax its index within the plane. The same
 * bits on every family. */
void fl_gemm_maxpool2(size_t planes, size_t H, size_t W, float *out, int32_t *argmax,
                      const float *x);

/* n floats (at least one), 64-byte aligned, for what the kernels stream:
 * parameters, batches, activations, dataset rows. A vector load that
 * straddles two cache lines costs two (the 2NN's step at B = 10 ran 20%
 * slower on malloc's 16-byte alignment). free() releases it; NULL if out of
 * memory. */
float *fl_gemm_alloc(size_t n);

/* The family in use, the best one this CPU has, and a family's name
 * ("avx512", "avx2", "blas"). */
fl_gemm_kind_t fl_gemm_kind(void);
fl_gemm_kind_t fl_gemm_cpu(void);
const char *fl_gemm_name(fl_gemm_kind_t k);

/* The same products with a given family, whatever the shape (tests and
 * benchmarks compare them; a family the CPU lacks runs as OpenBLAS). The
 * functions above pick the family per shape: fl_gemm_nt sends shapes where
 * the dot kernels lose (a short K with a tall A) to OpenBLAS. */
void fl_gemm_nt_with(fl_gemm_kind_t k, size_t M, size_t N, size_t K, const float *A, const float *B,
                     float *C, int acc);
void fl_gemm_tn_with(fl_gemm_kind_t k, size_t M, size_t N, size_t K, const float *A, const float *B,
                     float *C, int acc);
void fl_gemm_nn_with(fl_gemm_kind_t k, size_t M, size_t N, size_t K, const float *A, const float *B,
                     float *C, int acc);
void fl_gemm_im2col_with(fl_gemm_kind_t k, const fl_gemm_conv_t *s, float *col, const float *x);
void fl_gemm_col2im_with(fl_gemm_kind_t k, const fl_gemm_conv_t *s, float *dx, const float *dcol);
void fl_gemm_maxpool2_with(fl_gemm_kind_t k, size_t planes, size_t H, size_t W, float *out,
                           int32_t *argmax, const float *x);

#endif
