// Mapping: a growing sparse voxel hash for streamed RGB-D frames (pc_ovseg.mapping).
// VoxelHash maps floor(xyz / voxel_size) to a dense slot id (slots are handed out in order of
// first insertion, so the per-voxel arrays that Python owns simply grow); open addressing on
// packed 63-bit keys, rehashed at half load. ``map_accumulate`` folds one frame's points into
// the per-voxel running means (position, colour) and counts.
#include "common.h"

#include <cmath>
#include <vector>

namespace pcov {
namespace {

constexpr int kBits = 21;                       // per axis: +-2^20 voxels around the map origin
constexpr int64_t kHalf = int64_t(1) << (kBits - 1);
constexpr int64_t kMask = (int64_t(1) << kBits) - 1;

inline uint64_t mix(uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27; x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

class VoxelHash {
 public:
  explicit VoxelHash(double voxel_size) : vs_(voxel_size) {
    if (!(voxel_size > 0)) throw std::invalid_argument("voxel_size must be > 0");
    reset_table(1024);
  }

  double voxel_size() const { return vs_; }
  size_t size() const { return slot_keys_.size(); }
  size_t table_bytes() const {
    return keys_.capacity() * sizeof(int64_t) + vals_.capacity() * sizeof(int32_t) +
           slot_keys_.capacity() * sizeof(int64_t);
  }

  // key of a point, or -1 when it is not finite or outside the addressable range
  inline int64_t key_of(float x, float y, float z) const {
    const double q[3] = {std::floor(double(x) / vs_), std::floor(double(y) / vs_), std::floor(double(z) / vs_)};
    int64_t k = 0;
    for (int a = 0; a < 3; ++a) {
      if (!(q[a] >= -double(kHalf) && q[a] < double(kHalf))) return -1;
      k = (k << kBits) | (int64_t(q[a]) + kHalf);
    }
    return k;
  }

  Array<int64_t> insert(In<float, nb::shape<-1, 3>> xyz) {
    const size_t n = xyz.shape(0);
    const float* p = xyz.data();
    int64_t* out = new int64_t[n];
    {
      nb::gil_scoped_release release;
      int64_t last_key = -2, last_slot = -1;  // neighbouring pixels mostly share a voxel
      for (size_t i = 0; i < n; ++i) {
        const int64_t k = key_of(p[3 * i], p[3 * i + 1], p[3 * i + 2]);
        if (k < 0) { out[i] = -1; continue; }
        if (k != last_key) {
          last_key = k;
          last_slot = find_or_add(k);
        }
        out[i] = last_slot;
      }
    }
    return to_numpy(out, {n});
  }

  Array<int64_t> find(In<float, nb::shape<-1, 3>> xyz) const {
    const size_t n = xyz.shape(0);
    const float* p = xyz.data();
    int64_t* out = new int64_t[n];
    {
      nb::gil_scoped_release release;
      for (size_t i = 0; i < n; ++i) {
        const int64_t k = key_of(p[3 * i], p[3 * i + 1], p[3 * i + 2]);
        out[i] = k < 0 ? -1 : lookup(k);
      }
    }
    return to_numpy(out, {n});
  }

  // voxel integer coordinates (M, 3) of every slot
  Array<int32_t> coords() const {
    const size_t m = slot_keys_.size();
    int32_t* c = new int32_t[3 * m + 1];
    for (size_t s = 0; s < m; ++s) {
      const int64_t k = slot_keys_[s];
      c[3 * s] = int32_t(((k >> (2 * kBits)) & kMask) - kHalf);
      c[3 * s + 1] = int32_t(((k >> kBits) & kMask) - kHalf);
      c[3 * s + 2] = int32_t((k & kMask) - kHalf);
    }
    return to_numpy(c, {m, 3});
  }

  // keep only the slots where keep[s] != 0, renumbered in order; returns old slot -> new (-1 = dropped)
  Array<int64_t> keep(In<uint8_t, nb::shape<-1>> keep) {
    const size_t m = slot_keys_.size();
    if (keep.shape(0) != m) throw std::invalid_argument("keep must have one entry per voxel");
    int64_t* remap = new int64_t[m + 1];
    std::vector<int64_t> kept;
    kept.reserve(m);
    for (size_t s = 0; s < m; ++s) {
      if (keep.data()[s]) { remap[s] = int64_t(kept.size()); kept.push_back(slot_keys_[s]); }
      else remap[s] = -1;
    }
    size_t cap = 1024;
    while (cap < 2 * kept.size() + 2) cap <<= 1;
    reset_table(cap);
    for (int64_t k : kept) find_or_add(k);
    return to_numpy(remap, {m});
  }

 private:
  void reset_table(size_t cap) {
    keys_.assign(cap, -1);
    vals_.assign(cap, -1);
    mask_ = cap - 1;
    slot_keys_.clear();
  }

  int64_t lookup(int64_t k) const {
    size_t s = mix(uint64_t(k)) & mask_;
    while (keys_[s] != -1) {
      if (keys_[s] == k) return vals_[s];
      s = (s + 1) & mask_;
    }
    return -1;
  }

  int64_t find_or_add(int64_t k) {
    size_t s = mix(uint64_t(k)) & mask_;
    while (keys_[s] != -1) {
      if (keys_[s] == k) return vals_[s];
      s = (s + 1) & mask_;
    }
    const int64_t id = int64_t(slot_keys_.size());
    keys_[s] = k;
    vals_[s] = int32_t(id);
    slot_keys_.push_back(k);
    if (2 * slot_keys_.size() > keys_.size()) grow();
    return id;
  }

  void grow() {
    std::vector<int64_t> old_keys;
    old_keys.swap(keys_);
    std::vector<int32_t> old_vals;
    old_vals.swap(vals_);
    const size_t cap = old_keys.size() * 2;
    keys_.assign(cap, -1);
    vals_.assign(cap, -1);
    mask_ = cap - 1;
    for (size_t i = 0; i < old_keys.size(); ++i) {
      if (old_keys[i] == -1) continue;
      size_t s = mix(uint64_t(old_keys[i])) & mask_;
      while (keys_[s] != -1) s = (s + 1) & mask_;
      keys_[s] = old_keys[i];
      vals_[s] = old_vals[i];
    }
  }

  double vs_;
  std::vector<int64_t> keys_;
  std::vector<int32_t> vals_;
  std::vector<int64_t> slot_keys_;
  size_t mask_ = 0;
};

// One frame into the per-voxel state. A voxel's position and colour are the mean over the frames
// that saw it of each frame's mean (as views.frames.cloud_from_frames builds a batch cloud: every
// frame counts once, however many of its pixels fall in the voxel); ``npts`` counts points,
// ``obs`` frames, ``last`` holds the last frame that saw the voxel. While the frame is folded in,
// ``last`` of a touched voxel temporarily holds -(its index in this frame + 2).
void map_accumulate(In<int64_t, nb::shape<-1>> slots, In<float, nb::shape<-1, 3>> xyz,
                    In<uint8_t, nb::shape<-1, 3>> rgb, Array<float, nb::shape<-1, 3>> pos,
                    Array<float, nb::shape<-1, 3>> col, Array<uint32_t, nb::shape<-1>> npts,
                    Array<uint16_t, nb::shape<-1>> obs, Array<int32_t, nb::shape<-1>> last, int32_t frame) {
  const size_t n = slots.shape(0), cap = pos.shape(0);
  if (xyz.shape(0) != n) throw std::invalid_argument("slots and xyz differ in length");
  const bool has_rgb = rgb.shape(0) == n;
  if (!has_rgb && rgb.shape(0) != 0) throw std::invalid_argument("rgb must have one row per point or none");
  if (col.shape(0) != cap || npts.shape(0) != cap || obs.shape(0) != cap || last.shape(0) != cap)
    throw std::invalid_argument("per-voxel arrays differ in length");
  if (frame < 0) throw std::invalid_argument("frame must be >= 0");
  const int64_t* sl = slots.data();
  const float* p = xyz.data();
  const uint8_t* c = rgb.data();
  float* P = pos.data();
  float* C = col.data();
  uint32_t* N = npts.data();
  uint16_t* O = obs.data();
  int32_t* L = last.data();
  for (size_t i = 0; i < n; ++i)
    if (sl[i] >= int64_t(cap)) throw std::invalid_argument("slot beyond the per-voxel arrays");
  nb::gil_scoped_release release;
  std::vector<int64_t> touched;
  std::vector<double> sums;      // per touched voxel: x y z r g b
  std::vector<uint32_t> counts;
  touched.reserve(n / 16 + 16);
  for (size_t i = 0; i < n; ++i) {
    const int64_t s = sl[i];
    if (s < 0) continue;
    if (L[s] >= -1) {  // first point of this voxel in this frame
      L[s] = -int32_t(touched.size()) - 2;
      touched.push_back(s);
      sums.insert(sums.end(), 6, 0.0);
      counts.push_back(0);
    }
    const size_t j = size_t(-L[s] - 2);
    double* q = &sums[6 * j];
    for (int a = 0; a < 3; ++a) q[a] += p[3 * i + a];
    if (has_rgb)
      for (int a = 0; a < 3; ++a) q[3 + a] += c[3 * i + a];
    counts[j] += 1;
  }
  for (size_t j = 0; j < touched.size(); ++j) {
    const int64_t s = touched[j];
    const double inv = 1.0 / counts[j];
    if (O[s] < 0xffff) O[s] += 1;
    const float w = 1.0f / float(O[s]);
    for (int a = 0; a < 3; ++a) P[3 * s + a] += (float(sums[6 * j + a] * inv) - P[3 * s + a]) * w;
    if (has_rgb)
      for (int a = 0; a < 3; ++a) C[3 * s + a] += (float(sums[6 * j + 3 + a] * inv) - C[3 * s + a]) * w;
    N[s] = N[s] + counts[j] < N[s] ? 0xffffffffu : N[s] + counts[j];
    L[s] = frame;
  }
}

}  // namespace

void bind_mapping(nb::module_& m) {
  // a map still referenced when the interpreter exits (a daemon encoder thread, a cycle) is not a
  // leak worth a report on every exit
  nb::set_leak_warnings(false);
  nb::class_<VoxelHash>(m, "VoxelHash", "Sparse voxel hash: floor(xyz / voxel_size) -> dense slot id.")
      .def(nb::init<double>(), nb::arg("voxel_size"))
      .def_prop_ro("voxel_size", &VoxelHash::voxel_size)
      .def_prop_ro("size", &VoxelHash::size)
      .def_prop_ro("table_bytes", &VoxelHash::table_bytes)
      .def("insert", &VoxelHash::insert, nb::arg("xyz"),
           "insert(xyz float32 (N,3)) -> slot int64 (N,), new voxels get the next slots; -1 = out of range")
      .def("find", &VoxelHash::find, nb::arg("xyz"), "find(xyz float32 (N,3)) -> slot int64 (N,), -1 = absent")
      .def("coords", &VoxelHash::coords, "coords() -> int32 (M,3) voxel coordinates of every slot")
      .def("keep", &VoxelHash::keep, nb::arg("keep"),
           "keep(uint8 (M,)) -> int64 (M,) old slot -> new slot (-1 = dropped); the kept slots are renumbered in order");
  m.def("map_accumulate", &map_accumulate, nb::arg("slots"), nb::arg("xyz"), nb::arg("rgb"), nb::arg("pos"),
        nb::arg("col"), nb::arg("npts"), nb::arg("obs"), nb::arg("last"), nb::arg("frame"),
        "map_accumulate(...): one frame into the per-voxel means (of per-frame means) and counts, in place.");
}

}  // namespace pcov
