// Fusion: streaming weighted running mean of per-view features into an fp16 (N, D) accumulator.
// Memory stays at the fused result itself (N*D halves + N weights + N counts) for any number of
// views; each view's point ids are unique, so points update in parallel without atomics.
#include "common.h"

#include <cmath>
#include <cstring>

namespace pcov {
namespace {

inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      exp = 127 - 15 + 1;
      while (!(mant & 0x400)) { mant <<= 1; --exp; }
      bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000 | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t float_to_half(float f) {  // round to nearest even, saturating to inf
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = (x >> 16) & 0x8000;
  const uint32_t ax = x & 0x7fffffff;
  if (ax >= 0x7f800000) return sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 : 0);
  if (ax >= 0x477ff000) return sign | 0x7c00;  // overflow
  if (ax < 0x38800000) {                       // subnormal or zero
    if (ax < 0x33000000) return sign;
    const uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
    const uint32_t shift = 126 - e;  // 14 + (113 - e)
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
    return sign | uint16_t(r);
  }
  uint32_t r = ax - 0x38000000;  // rebias exponent
  const uint32_t rem = r & 0x1fff;
  r >>= 13;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) ++r;
  return sign | uint16_t(r);
}

void accumulate(Array<uint16_t, nb::ndim<2>> acc, Array<float, nb::ndim<1>> wsum,
                Array<uint16_t, nb::ndim<1>> count, In<int64_t, nb::ndim<1>> ids,
                In<float, nb::ndim<2>> feats, In<float, nb::ndim<1>> weights) {
  const int64_t n = acc.shape(0), d = acc.shape(1), m = ids.shape(0);
  if (wsum.shape(0) != (size_t)n || count.shape(0) != (size_t)n)
    throw std::invalid_argument("wsum/count must have one entry per point");
  if (feats.shape(0) != (size_t)m || feats.shape(1) != (size_t)d || weights.shape(0) != (size_t)m)
    throw std::invalid_argument("feats must be (M, D) and weights (M,) for M ids");
  uint16_t* A = acc.data();
  float* W = wsum.data();
  uint16_t* C = count.data();
  const int64_t* I = ids.data();
  const float* F = feats.data();
  const float* w = weights.data();
  for (int64_t k = 0; k < m; ++k)
    if (I[k] < 0 || I[k] >= n) throw std::out_of_range("point id out of range");
  nb::gil_scoped_release release;
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < m; ++k) {
    const float wk = w[k];
    if (!(wk > 0)) continue;
    const int64_t i = I[k];
    const float* f = F + k * d;
    uint16_t* a = A + i * d;
    const float total = W[i] + wk, t = wk / total;
    for (int64_t j = 0; j < d; ++j) {
      const float cur = half_to_float(a[j]);
      a[j] = float_to_half(cur + t * (f[j] - cur));
    }
    W[i] = total;
    if (C[i] < 65535) C[i] += 1;
  }
}

// Per-point per-group weight totals (pass 1 of balanced fusion).
void add_weights(Array<float, nb::ndim<2>> totals, In<int64_t, nb::ndim<1>> ids,
                 In<float, nb::ndim<1>> weights, int64_t group) {
  const int64_t n = totals.shape(0), g = totals.shape(1), m = ids.shape(0);
  if (group < 0 || group >= g) throw std::out_of_range("group out of range");
  if (weights.shape(0) != (size_t)m) throw std::invalid_argument("weights must match ids");
  float* T = totals.data();
  const int64_t* I = ids.data();
  const float* w = weights.data();
  for (int64_t k = 0; k < m; ++k) {
    if (I[k] < 0 || I[k] >= n) throw std::out_of_range("point id out of range");
    T[I[k] * g + group] += w[k];
  }
}

void normalize_rows_half(Array<uint16_t, nb::ndim<2>> acc) {
  const int64_t n = acc.shape(0), d = acc.shape(1);
  uint16_t* A = acc.data();
  nb::gil_scoped_release release;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    uint16_t* a = A + i * d;
    double s = 0;
    for (int64_t j = 0; j < d; ++j) { const double v = half_to_float(a[j]); s += v * v; }
    if (s <= 1e-16) continue;
    const float inv = float(1.0 / std::sqrt(s));
    for (int64_t j = 0; j < d; ++j) a[j] = float_to_half(half_to_float(a[j]) * inv);
  }
}

}  // namespace

void bind_fusion(nb::module_& m) {
  m.def("fuse_accumulate", &accumulate, nb::arg("acc"), nb::arg("wsum"), nb::arg("count"), nb::arg("ids"),
        nb::arg("feats"), nb::arg("weights"),
        "Running weighted mean of feats into acc (fp16 bits, in place); ids unique within a call.");
  m.def("fuse_add_weights", &add_weights, nb::arg("totals"), nb::arg("ids"), nb::arg("weights"), nb::arg("group"),
        "totals[ids, group] += weights (pass 1 of balanced fusion).");
  m.def("normalize_rows_half", &normalize_rows_half, nb::arg("acc"), "L2-normalise fp16 rows in place.");
}

}  // namespace pcov
