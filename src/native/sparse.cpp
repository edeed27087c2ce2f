// Sparse convolution support: voxel hashing, strided coordinate sets and kernel maps.
//
// Coordinates are (M,4) int32 rows (batch, x, y, z) in units of the finest voxel, so a tensor
// at stride s holds multiples of s (as MinkowskiEngine does). A kernel map lists, for every
// kernel offset, the (input row, output row) pairs it connects; the Python side turns each
// offset into gather -> matmul -> scatter-add.
//
// Offset order (the weight layout (K^3, Cin, Cout) depends on it): index k = (i*K + j)*K + l
// for per-axis steps i (x), j (y), l (z): the LAST axis runs fastest, as in a C-order reshape
// of a dense (K, K, K) kernel. Odd K steps are centred (-(K-1)/2 .. (K-1)/2), even K steps run
// 0 .. K-1, matching conv3d with padding K//2 (odd) or 0 (even, used with stride K).
#include "common.h"

#include <algorithm>
#include <vector>

namespace pcov {
namespace {

inline uint64_t mix64(uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27; x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

inline uint64_t hash4(const int32_t* c) {
  uint64_t h = mix64(uint64_t(uint32_t(c[0])) * 0x9E3779B97F4A7C15ULL ^ uint64_t(uint32_t(c[1])));
  h = mix64(h ^ (uint64_t(uint32_t(c[2])) << 32 | uint64_t(uint32_t(c[3]))));
  return h;
}

// Open-addressing table of row indices into a coordinate array; lookups compare all 4 ints.
class CoordHash {
 public:
  explicit CoordHash(const int32_t* coords, size_t n) : c_(coords) {
    cap_ = 16;
    while (cap_ < 2 * n) cap_ <<= 1;
    slots_.assign(cap_, -1);
  }
  // Insert row i; returns the existing row with the same coordinate, or i when new.
  int64_t insert(int64_t i) { return insert_key(c_ + 4 * i, i); }
  int64_t insert_key(const int32_t* key, int64_t i) {
    size_t s = hash4(key) & (cap_ - 1);
    while (slots_[s] != -1) {
      if (eq(c_ + 4 * slots_[s], key)) return slots_[s];
      s = (s + 1) & (cap_ - 1);
    }
    slots_[s] = i;
    return i;
  }
  int64_t find(const int32_t* key) const {
    size_t s = hash4(key) & (cap_ - 1);
    while (slots_[s] != -1) {
      if (eq(c_ + 4 * slots_[s], key)) return slots_[s];
      s = (s + 1) & (cap_ - 1);
    }
    return -1;
  }

 private:
  static bool eq(const int32_t* a, const int32_t* b) {
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
  }
  const int32_t* c_;
  size_t cap_;
  std::vector<int64_t> slots_;
};

inline int32_t floor_to(int32_t v, int32_t s) {
  int32_t q = v / s;
  if ((v % s != 0) && (v < 0)) --q;
  return q * s;
}

// Unique rows of floor(coords / stride) * stride (batch kept), in order of first appearance,
// plus the input->output row map.
nb::tuple downsample_impl(In<int32_t, nb::shape<-1, 4>> coords, int stride) {
  if (stride < 1) throw std::invalid_argument("stride must be >= 1");
  const size_t n = coords.shape(0);
  const int32_t* c = coords.data();
  std::vector<int32_t> q(4 * n);
  int64_t* inverse = new int64_t[n];
  std::vector<int64_t> first;
  {
    nb::gil_scoped_release release;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < (int64_t)n; ++i) {
      q[4 * i] = c[4 * i];
      for (int a = 1; a < 4; ++a) q[4 * i + a] = floor_to(c[4 * i + a], stride);
    }
    CoordHash h(q.data(), n);
    std::vector<int64_t> out_row(n, -1);
    first.reserve(n / 4 + 16);
    for (size_t i = 0; i < n; ++i) {
      const int64_t r = h.insert((int64_t)i);
      if (r == (int64_t)i) {
        out_row[i] = (int64_t)first.size();
        first.push_back((int64_t)i);
      }
      inverse[i] = out_row[r];
    }
  }
  const size_t m = first.size();
  int32_t* out = new int32_t[4 * m];
  for (size_t v = 0; v < m; ++v)
    for (int a = 0; a < 4; ++a) out[4 * v + a] = q[4 * first[v] + a];
  return nb::make_tuple(to_numpy(out, {m, 4}), to_numpy(inverse, {n}));
}

// Kernel map: for output row o and offset k, the input row at out[o] + step_k * dilation.
// Returns (in_rows int64 (P,), out_rows int64 (P,), offsets int64 (K^3+1,)) with the pairs of
// offset k in [offsets[k], offsets[k+1]), each offset's pairs sorted by output row.
nb::tuple kernel_map_impl(In<int32_t, nb::shape<-1, 4>> in_coords, In<int32_t, nb::shape<-1, 4>> out_coords,
                          int kernel_size, int dilation) {
  if (kernel_size < 1) throw std::invalid_argument("kernel_size must be >= 1");
  if (dilation < 1) throw std::invalid_argument("dilation must be >= 1");
  const size_t n_in = in_coords.shape(0), n_out = out_coords.shape(0);
  const int32_t* ci = in_coords.data();
  const int32_t* co = out_coords.data();
  const int K = kernel_size, K3 = K * K * K;
  const int lo = (K % 2 == 1) ? -(K - 1) / 2 : 0;
  std::vector<std::vector<int64_t>> pin(K3), pout(K3);
  {
    nb::gil_scoped_release release;
    CoordHash h(ci, n_in);
    for (size_t i = 0; i < n_in; ++i)
      if (h.insert((int64_t)i) != (int64_t)i)
        throw std::invalid_argument("kernel_map: duplicate input coordinates");
#pragma omp parallel for schedule(dynamic, 1)
    for (int k = 0; k < K3; ++k) {
      const int32_t dx = (lo + k / (K * K)) * dilation, dy = (lo + (k / K) % K) * dilation,
                    dz = (lo + k % K) * dilation;
      auto& vi = pin[k];
      auto& vo = pout[k];
      int32_t key[4];
      for (size_t o = 0; o < n_out; ++o) {
        key[0] = co[4 * o]; key[1] = co[4 * o + 1] + dx; key[2] = co[4 * o + 2] + dy; key[3] = co[4 * o + 3] + dz;
        const int64_t r = h.find(key);
        if (r >= 0) { vi.push_back(r); vo.push_back((int64_t)o); }
      }
    }
  }
  size_t total = 0;
  int64_t* offsets = new int64_t[K3 + 1];
  for (int k = 0; k < K3; ++k) { offsets[k] = (int64_t)total; total += pin[k].size(); }
  offsets[K3] = (int64_t)total;
  int64_t* in_rows = new int64_t[std::max<size_t>(total, 1)];
  int64_t* out_rows = new int64_t[std::max<size_t>(total, 1)];
  {
    nb::gil_scoped_release release;
#pragma omp parallel for schedule(dynamic, 1)
    for (int k = 0; k < K3; ++k) {
      std::copy(pin[k].begin(), pin[k].end(), in_rows + offsets[k]);
      std::copy(pout[k].begin(), pout[k].end(), out_rows + offsets[k]);
    }
  }
  return nb::make_tuple(to_numpy(in_rows, {total}), to_numpy(out_rows, {total}),
                        to_numpy(offsets, {size_t(K3 + 1)}));
}

// out[rows[p]] += src[p] for every p. Rows must be unique (true within one kernel offset:
// each output has at most one input per offset and vice versa), so rows are updated in parallel.
template <typename T>
void scatter_add_rows_impl(nb::ndarray<T, nb::c_contig, nb::device::cpu, nb::shape<-1, -1>> out,
                           In<int64_t, nb::shape<-1>> rows, In<T, nb::shape<-1, -1>> src) {
  const int64_t n = (int64_t)out.shape(0), c = (int64_t)out.shape(1), p = (int64_t)rows.shape(0);
  if ((int64_t)src.shape(0) < p || (int64_t)src.shape(1) != c)
    throw std::invalid_argument("scatter_add_rows: src must have at least len(rows) rows and out's columns");
  T* o = out.data();
  const T* s = src.data();
  const int64_t* r = rows.data();
  bool bad = false;
  {
    nb::gil_scoped_release release;
#pragma omp parallel for schedule(static) if (p * c > 32768) reduction(|| : bad)
    for (int64_t i = 0; i < p; ++i) {
      const int64_t row = r[i];
      if (row < 0 || row >= n) { bad = true; continue; }
      T* dst = o + row * c;
      const T* a = s + i * c;
      for (int64_t j = 0; j < c; ++j) dst[j] += a[j];
    }
  }
  if (bad) throw std::out_of_range("scatter_add_rows: row index out of range");
}

}  // namespace

void bind_sparse(nb::module_& m) {
  m.def("sparse_downsample", &downsample_impl, nb::arg("coords"), nb::arg("stride"),
        "sparse_downsample(coords int32 (N,4), stride) -> (unique floor(coords/stride)*stride rows "
        "int32 (M,4) in order of first appearance, inverse int64 (N,)); column 0 (batch) is kept.");
  m.def("sparse_kernel_map", &kernel_map_impl, nb::arg("in_coords"), nb::arg("out_coords"),
        nb::arg("kernel_size"), nb::arg("dilation"),
        "sparse_kernel_map(in_coords, out_coords, kernel_size, dilation) -> (in_rows, out_rows, "
        "offsets (K^3+1,)): pairs with in = out + step_k * dilation, grouped by offset k, "
        "k = (i*K + j)*K + l (last axis fastest; odd K centred, even K from 0).");
  const char* doc = "scatter_add_rows(out (N,C), rows int64 (P,) unique, src (>=P,C)): out[rows[p]] += src[p], in place.";
  m.def("scatter_add_rows", &scatter_add_rows_impl<float>, nb::arg("out"), nb::arg("rows"), nb::arg("src"), doc);
  m.def("scatter_add_rows", &scatter_add_rows_impl<double>, nb::arg("out"), nb::arg("rows"), nb::arg("src"), doc);
}

}  // namespace pcov
