// Fusion: streaming weighted running mean of per-view features into an fp16 (N, D) accumulator.
// Memory stays at the fused result itself (N*D halves + N weights + N counts) for any number of
// views; each view's point ids are unique, so points update in parallel without atomics.
#include "common.h"

#include <cmath>
#include <algorithm>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#include <cstring>
#include <vector>

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

// One row's running-mean update a += t * (f - a) on fp16 storage.
inline void update_row_scalar(uint16_t* a, const float* f, float t, int64_t d) {
  for (int64_t j = 0; j < d; ++j) {
    const float cur = half_to_float(a[j]);
    a[j] = float_to_half(cur + t * (f[j] - cur));
  }
}

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define PCOV_F16C 1
// The same with the F16C/AVX conversion instructions (8 lanes), chosen at run time so the
// build needs no -march flag and still runs on CPUs without them.
__attribute__((target("avx,f16c"))) void update_row_f16c(uint16_t* a, const float* f, float t, int64_t d) {
  const __m256 tv = _mm256_set1_ps(t);
  int64_t j = 0;
  for (; j + 8 <= d; j += 8) {
    const __m256 cur = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + j)));
    const __m256 nv = _mm256_add_ps(cur, _mm256_mul_ps(tv, _mm256_sub_ps(_mm256_loadu_ps(f + j), cur)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(a + j), _mm256_cvtps_ph(nv, _MM_FROUND_TO_NEAREST_INT));
  }
  update_row_scalar(a + j, f + j, t, d - j);
}

bool cpu_has_f16c() {
  static const bool yes = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return yes;
}
#endif

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
#ifdef PCOV_F16C
  const bool f16c = cpu_has_f16c();
#endif
  nb::gil_scoped_release release;
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < m; ++k) {
    const float wk = w[k];
    if (!(wk > 0)) continue;
    const int64_t i = I[k];
    const float* f = F + k * d;
    uint16_t* a = A + i * d;
    const float total = W[i] + wk, t = wk / total;
#ifdef PCOV_F16C
    if (f16c) update_row_f16c(a, f, t, d);
    else update_row_scalar(a, f, t, d);
#else
    update_row_scalar(a, f, t, d);
#endif
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

Array<float> normalize_rows_half(Array<uint16_t, nb::ndim<2>> acc) {
  const int64_t n = acc.shape(0), d = acc.shape(1);
  uint16_t* A = acc.data();
  float* norms = new float[n];
  {
    nb::gil_scoped_release release;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      uint16_t* a = A + i * d;
      double s = 0;
      for (int64_t j = 0; j < d; ++j) { const double v = half_to_float(a[j]); s += v * v; }
      norms[i] = float(std::sqrt(s));
      if (s <= 1e-16) continue;
      const float inv = float(1.0 / std::sqrt(s));
      for (int64_t j = 0; j < d; ++j) a[j] = float_to_half(half_to_float(a[j]) * inv);
    }
  }
  return to_numpy(norms, {(size_t)n});
}

// Felzenszwalb-Huttenlocher graph segmentation (as ScanNet's mesh segmentator, here on a point
// kNN graph): edges in increasing weight merge two components when the weight is below both
// components' internal difference + k / size; components smaller than min_size are then merged
// into their cheapest neighbour.
Array<int64_t> segment_graph(int64_t n, In<int64_t, nb::ndim<1>> eu, In<int64_t, nb::ndim<1>> ev,
                             In<float, nb::ndim<1>> ew, double k, int64_t min_size) {
  const int64_t e = eu.shape(0);
  if ((int64_t)ev.shape(0) != e || (int64_t)ew.shape(0) != e) throw std::invalid_argument("edge arrays differ in length");
  const int64_t* U = eu.data();
  const int64_t* V = ev.data();
  const float* Wt = ew.data();
  for (int64_t i = 0; i < e; ++i)
    if (U[i] < 0 || U[i] >= n || V[i] < 0 || V[i] >= n) throw std::out_of_range("edge endpoint out of range");
  int64_t* out = new int64_t[n];
  {
    nb::gil_scoped_release release;
    std::vector<int64_t> order(e);
    for (int64_t i = 0; i < e; ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return Wt[a] < Wt[b]; });
    std::vector<int64_t> parent(n), size(n, 1);
    std::vector<float> thresh(n, float(k));
    for (int64_t i = 0; i < n; ++i) parent[i] = i;
    auto find = [&](int64_t x) {
      while (parent[x] != x) { parent[x] = parent[parent[x]]; x = parent[x]; }
      return x;
    };
    for (int64_t t = 0; t < e; ++t) {
      const int64_t idx = order[t];
      int64_t a = find(U[idx]), b = find(V[idx]);
      if (a == b) continue;
      const float w = Wt[idx];
      if (w <= thresh[a] && w <= thresh[b]) {
        if (size[a] < size[b]) std::swap(a, b);
        parent[b] = a;
        size[a] += size[b];
        thresh[a] = w + float(k / double(size[a]));
      }
    }
    for (int64_t t = 0; t < e; ++t) {
      const int64_t idx = order[t];
      int64_t a = find(U[idx]), b = find(V[idx]);
      if (a != b && (size[a] < min_size || size[b] < min_size)) {
        if (size[a] < size[b]) std::swap(a, b);
        parent[b] = a;
        size[a] += size[b];
      }
    }
    std::vector<int64_t> label(n, -1);
    int64_t next = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = find(i);
      if (label[r] < 0) label[r] = next++;
      out[i] = label[r];
    }
  }
  return to_numpy(out, {(size_t)n});
}

}  // namespace

void bind_fusion(nb::module_& m) {
  m.def("fuse_accumulate", &accumulate, nb::arg("acc"), nb::arg("wsum"), nb::arg("count"), nb::arg("ids"),
        nb::arg("feats"), nb::arg("weights"),
        "Running weighted mean of feats into acc (fp16 bits, in place); ids unique within a call.");
  m.def("fuse_add_weights", &add_weights, nb::arg("totals"), nb::arg("ids"), nb::arg("weights"), nb::arg("group"),
        "totals[ids, group] += weights (pass 1 of balanced fusion).");
  m.def("segment_graph", &segment_graph, nb::arg("n"), nb::arg("u"), nb::arg("v"), nb::arg("w"), nb::arg("k"),
        nb::arg("min_size"), "Felzenszwalb segmentation of an n-node graph -> segment id per node (0..S-1).");
  m.def("normalize_rows_half", &normalize_rows_half, nb::arg("acc"), "L2-normalise fp16 rows in place; returns the norms before (view agreement of a mean of unit vectors).");
}

}  // namespace pcov
