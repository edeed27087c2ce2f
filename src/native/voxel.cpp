// Voxelisation: points -> unique voxels (in order of first appearance) + point->voxel map.
// Open-addressing hash on packed 63-bit keys: one pass, no sort, O(N).
#include "common.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace pcov {
namespace {

constexpr int kBits = 21;  // per axis: 2,097,152 voxels of extent
constexpr int64_t kMask = (int64_t(1) << kBits) - 1;

inline uint64_t mix(uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27; x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

template <typename T>
nb::tuple voxelize_impl(In<T, nb::shape<-1, 3>> xyz, double voxel_size) {
  if (!(voxel_size > 0)) throw std::invalid_argument("voxel_size must be > 0");
  const size_t n = xyz.shape(0);
  const T* p = xyz.data();
  std::vector<int32_t> c(3 * n);
  int32_t lo[3] = {std::numeric_limits<int32_t>::max(), std::numeric_limits<int32_t>::max(),
                   std::numeric_limits<int32_t>::max()};
  int32_t hi[3] = {std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::min(),
                   std::numeric_limits<int32_t>::min()};
  bool bad = false;
  {
    nb::gil_scoped_release release;
#pragma omp parallel
    {
      int32_t l[3] = {lo[0], lo[1], lo[2]}, h[3] = {hi[0], hi[1], hi[2]};
      bool b = false;
#pragma omp for schedule(static)
      for (int64_t i = 0; i < (int64_t)n; ++i) {
        for (int a = 0; a < 3; ++a) {
          double v = std::floor(double(p[3 * i + a]) / voxel_size);
          if (!(std::fabs(v) < 1e9)) { b = true; v = 0; }
          int32_t q = (int32_t)v;
          c[3 * i + a] = q;
          if (q < l[a]) l[a] = q;
          if (q > h[a]) h[a] = q;
        }
      }
#pragma omp critical
      {
        for (int a = 0; a < 3; ++a) { lo[a] = std::min(lo[a], l[a]); hi[a] = std::max(hi[a], h[a]); }
        bad = bad || b;
      }
    }
  }
  if (bad) throw std::invalid_argument("coordinates are not finite or too large for this voxel size");
  for (int a = 0; a < 3 && n; ++a)
    if (int64_t(hi[a]) - lo[a] > kMask)
      throw std::invalid_argument("cloud spans more than 2^21 voxels along an axis; use a larger voxel size");

  int64_t* inverse = new int64_t[n];
  std::vector<int64_t> first;
  std::vector<int64_t> counts;
  {
    nb::gil_scoped_release release;
    size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    std::vector<int64_t> keys(cap, -1);
    std::vector<int64_t> slot_id(cap);
    first.reserve(n / 4 + 16);
    counts.reserve(n / 4 + 16);
    for (size_t i = 0; i < n; ++i) {
      const int64_t k = (int64_t(c[3 * i] - lo[0]) << (2 * kBits)) |
                        (int64_t(c[3 * i + 1] - lo[1]) << kBits) | int64_t(c[3 * i + 2] - lo[2]);
      size_t s = mix(uint64_t(k)) & (cap - 1);
      while (keys[s] != -1 && keys[s] != k) s = (s + 1) & (cap - 1);
      if (keys[s] == -1) {
        keys[s] = k;
        slot_id[s] = (int64_t)first.size();
        first.push_back((int64_t)i);
        counts.push_back(0);
      }
      const int64_t id = slot_id[s];
      inverse[i] = id;
      counts[id] += 1;
    }
  }
  const size_t m = first.size();
  int32_t* coords = new int32_t[3 * m];
  int64_t* first_out = new int64_t[m];
  int64_t* counts_out = new int64_t[m];
  for (size_t v = 0; v < m; ++v) {
    const size_t i = first[v];
    coords[3 * v] = c[3 * i]; coords[3 * v + 1] = c[3 * i + 1]; coords[3 * v + 2] = c[3 * i + 2];
    first_out[v] = first[v];
    counts_out[v] = counts[v];
  }
  return nb::make_tuple(to_numpy(coords, {m, 3}), to_numpy(inverse, {n}), to_numpy(first_out, {m}),
                        to_numpy(counts_out, {m}));
}


// LZF (liblzf) decompression for PCD binary_compressed: per-byte by nature, so native.
Array<uint8_t> lzf_decompress_impl(In<uint8_t, nb::shape<-1>> src, size_t out_size) {
  const uint8_t* ip = src.data();
  const uint8_t* const in_end = ip + src.shape(0);
  uint8_t* out = new uint8_t[out_size ? out_size : 1];
  uint8_t* op = out;
  uint8_t* const out_end = out + out_size;
  const char* err = nullptr;
  {
    nb::gil_scoped_release release;
    while (ip < in_end) {
      unsigned ctrl = *ip++;
      if (ctrl < 32) {  // literal run of ctrl + 1 bytes
        size_t len = ctrl + 1;
        if (op + len > out_end) { err = "LZF data decompresses past the declared size"; break; }
        if (ip + len > in_end) { err = "LZF data is truncated"; break; }
        std::memcpy(op, ip, len);
        op += len; ip += len;
      } else {  // back reference
        size_t len = ctrl >> 5;
        if (len == 7) {
          if (ip >= in_end) { err = "LZF data is truncated"; break; }
          len += *ip++;
        }
        if (ip >= in_end) { err = "LZF data is truncated"; break; }
        size_t off = ((ctrl & 0x1f) << 8) + *ip++ + 1;
        len += 2;
        if (op + len > out_end) { err = "LZF data decompresses past the declared size"; break; }
        if (off > size_t(op - out)) { err = "LZF back reference points before the start"; break; }
        const uint8_t* ref = op - off;
        if (off >= len) { std::memcpy(op, ref, len); op += len; }
        else { for (size_t k = 0; k < len; ++k) *op++ = *ref++; }  // overlapping copy
      }
    }
  }
  if (!err && op != out_end) err = "LZF data decompresses to fewer bytes than declared";
  if (err) { delete[] out; throw std::invalid_argument(err); }
  return to_numpy(out, {out_size});
}

}  // namespace

void bind_voxel(nb::module_& m) {
  const char* doc =
      "voxelize(xyz, voxel_size) -> (coords int32 (M,3), inverse int64 (N,), first int64 (M,), "
      "counts int64 (M,)); voxels in order of first appearance, coords = floor(xyz / voxel_size).";
  m.def("voxelize", &voxelize_impl<float>, nb::arg("xyz"), nb::arg("voxel_size"), doc);
  m.def("voxelize", &voxelize_impl<double>, nb::arg("xyz"), nb::arg("voxel_size"), doc);
  m.def("lzf_decompress", &lzf_decompress_impl, nb::arg("data"), nb::arg("out_size"),
        "lzf_decompress(data uint8 (n,), out_size) -> uint8 (out_size,); raises ValueError on corrupt data.");
}

}  // namespace pcov
