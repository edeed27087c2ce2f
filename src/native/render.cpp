// Views kernels: projection + depth-test visibility, and the splat z-buffer with hole filling.
//
// Pixel convention: OpenCV, pixel (row, col) has its centre at continuous (u=col, v=row), so a
// point lands on col = floor(u + 0.5). Depth is the camera-frame z (not the ray length).
#include "common.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

static_assert(sizeof(std::atomic<uint64_t>) == sizeof(uint64_t), "lock-free 64-bit atomics expected");

namespace pcov {
namespace {

struct Pinhole {
  double R[9], t[3];  // world_to_cam rotation (row-major) and translation
  double fx, fy, cx, cy;
  int width, height;

  Pinhole(const In<double, nb::shape<3, 4>>& w2c, const In<double, nb::shape<4>>& intr, int w, int h)
      : width(w), height(h) {
    const double* m = w2c.data();
    for (int r = 0; r < 3; ++r) {
      for (int c = 0; c < 3; ++c) R[3 * r + c] = m[4 * r + c];
      t[r] = m[4 * r + 3];
    }
    const double* k = intr.data();
    fx = k[0]; fy = k[1]; cx = k[2]; cy = k[3];
  }

  // Camera-frame z and pixel (row, col); returns false when behind the near plane.
  inline bool project(const float* p, double near, float& z, int& row, int& col, double& u, double& v) const {
    const double x = p[0], y = p[1], w = p[2];
    const double xc = R[0] * x + R[1] * y + R[2] * w + t[0];
    const double yc = R[3] * x + R[4] * y + R[5] * w + t[1];
    const double zc = R[6] * x + R[7] * y + R[8] * w + t[2];
    if (!(zc > near)) return false;  // also rejects NaN
    u = fx * xc / zc + cx;
    v = fy * yc / zc + cy;
    if (!(std::fabs(u) < 1e8 && std::fabs(v) < 1e8)) return false;
    col = (int)std::floor(u + 0.5);
    row = (int)std::floor(v + 0.5);
    z = (float)zc;
    return true;
  }
};

// Below this many points a kernel runs on one thread: waking a team costs more than it saves,
// and far more on a machine shared with other work (threads wait at barriers for descheduled
// peers).
constexpr int64_t kParallelPoints = 200000;

inline uint32_t float_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
inline float bits_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// depth_test: points whose projection lands inside the image (minus border) on a valid depth
// pixel d with |d - z| <= max(abs_tol, rel_tol * d, point_tol[i]).
nb::tuple depth_test(In<float, nb::shape<-1, 3>> xyz, In<double, nb::shape<3, 4>> w2c,
                     In<double, nb::shape<4>> intr, In<float, nb::shape<-1, -1>> depth, double rel_tol,
                     double abs_tol, In<float, nb::shape<-1>> point_tol, int border, double near) {
  const int64_t n = (int64_t)xyz.shape(0);
  const int H = (int)depth.shape(0), W = (int)depth.shape(1);
  const bool has_tol = point_tol.shape(0) != 0;
  if (has_tol && (int64_t)point_tol.shape(0) != n)
    throw std::invalid_argument("point_tol must be empty or have one entry per point");
  Pinhole cam(w2c, intr, W, H);
  const float* p = xyz.data();
  const float* D = depth.data();
  const float* pt = point_tol.data();
  std::vector<int32_t> hit(n);
  std::vector<float> zs(n);
  int64_t m = 0;
  {
    nb::gil_scoped_release release;
#pragma omp parallel for schedule(static) reduction(+ : m) if (n > kParallelPoints)
    for (int64_t i = 0; i < n; ++i) {
      float z; int row, col; double u, v;
      hit[i] = -1;
      if (!cam.project(p + 3 * i, near, z, row, col, u, v)) continue;
      if (row < border || col < border || row >= H - border || col >= W - border) continue;
      const float d = D[(int64_t)row * W + col];
      if (!(d > 0)) continue;
      double tol = std::max(abs_tol, rel_tol * d);
      if (has_tol) tol = std::max(tol, (double)pt[i]);
      if (std::fabs((double)d - z) > tol) continue;
      hit[i] = row * W + col;
      zs[i] = z;
      ++m;
    }
  }
  int64_t* ids = new int64_t[m];
  int32_t* pix = new int32_t[2 * m];
  float* zout = new float[m];
  int64_t k = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (hit[i] < 0) continue;
    ids[k] = i;
    pix[2 * k] = hit[i] / W;
    pix[2 * k + 1] = hit[i] % W;
    zout[k] = zs[i];
    ++k;
  }
  return nb::make_tuple(to_numpy(ids, {(size_t)m}), to_numpy(pix, {(size_t)m, 2}),
                        to_numpy(zout, {(size_t)m}));
}

// One hole-filling pass. A pixel is a hole when, in >= need of the 8 directions, a pixel within
// `reach` steps is in front of it (empty pixels: any valid pixel counts). That is true inside
// gaps between splats and where a far surface shows through a near one, but not outside a
// silhouette (at most 5 directions there), so objects do not grow. The hole takes the depth and
// index of the nearest such foreground pixel.
void fill_pass(const float* dsrc, const int64_t* isrc, float* ddst, int64_t* idst, int H, int W, int reach,
               double tol, int need) {
  static const int DX[8] = {1, 1, 0, -1, -1, -1, 0, 1};
  static const int DY[8] = {0, 1, 1, 1, 0, -1, -1, -1};
  const float INF = std::numeric_limits<float>::infinity();
  const int64_t npx = (int64_t)H * W;
  // Window minimum of depth (empty = inf) by two separable passes: pixels with nothing in front
  // of them within `reach` are copied without the 8-direction scan (most of the image).
  std::vector<float> rowmin(npx), winmin(npx);
#pragma omp parallel for schedule(static)
  for (int r = 0; r < H; ++r) {
    const float* d = dsrc + (int64_t)r * W;
    float* out = rowmin.data() + (int64_t)r * W;
    for (int c = 0; c < W; ++c) {
      float m = INF;
      const int a = std::max(0, c - reach), b = std::min(W - 1, c + reach);
      for (int k = a; k <= b; ++k) { const float v = d[k] > 0 ? d[k] : INF; m = v < m ? v : m; }
      out[c] = m;
    }
  }
#pragma omp parallel for schedule(static)
  for (int r = 0; r < H; ++r) {
    const int a = std::max(0, r - reach), b = std::min(H - 1, r + reach);
    float* out = winmin.data() + (int64_t)r * W;
    for (int c = 0; c < W; ++c) out[c] = INF;
    for (int k = a; k <= b; ++k) {
      const float* in = rowmin.data() + (int64_t)k * W;
      for (int c = 0; c < W; ++c) out[c] = in[c] < out[c] ? in[c] : out[c];
    }
  }
#pragma omp parallel for schedule(static)
  for (int r = 0; r < H; ++r) {
    for (int c = 0; c < W; ++c) {
      const int64_t o = (int64_t)r * W + c;
      const float d = dsrc[o];
      const bool empty = !(d > 0);
      const float thresh = empty ? INF : (float)(d * (1.0 - tol));
      ddst[o] = d; idst[o] = isrc[o];
      if (!(winmin[o] < thresh)) continue;  // nothing in front within reach
      int count = 0, best_step = reach + 1;
      float best_d = 0;
      int64_t best_i = -1;
      for (int k = 0; k < 8; ++k) {
        if (count + (8 - k) < need) break;  // too few directions left
        int rr = r, cc = c;
        for (int s = 1; s <= reach; ++s) {
          rr += DY[k]; cc += DX[k];
          if (rr < 0 || cc < 0 || rr >= H || cc >= W) break;
          const int64_t q = (int64_t)rr * W + cc;
          const float dq = dsrc[q];
          if (dq > 0 && dq < thresh) {
            ++count;
            if (s < best_step || (s == best_step && dq < best_d)) { best_step = s; best_d = dq; best_i = isrc[q]; }
            break;
          }
        }
      }
      if (count >= need && best_i >= 0) { ddst[o] = best_d; idst[o] = best_i; }
    }
  }
}

// splat: z-buffer of points drawn as discs of radius f * radius[i] / z pixels (1 pixel when
// radius is empty or small), nearest point wins (ties: lower index), then hole filling.
nb::tuple splat(In<float, nb::shape<-1, 3>> xyz, In<double, nb::shape<3, 4>> w2c, In<double, nb::shape<4>> intr,
                int width, int height, In<float, nb::shape<-1>> radius, double max_pixel_radius, double near,
                int fill_iters, int fill_reach, double fill_tol, int fill_need, bool surface_owner) {
  if (width <= 0 || height <= 0) throw std::invalid_argument("image size must be positive");
  const int64_t n = (int64_t)xyz.shape(0);
  const bool has_r = radius.shape(0) != 0;
  if (has_r && (int64_t)radius.shape(0) != n)
    throw std::invalid_argument("radius must be empty or have one entry per point");
  if (n >= (int64_t(1) << 32)) throw std::invalid_argument("splat supports at most 2^32 points");
  Pinhole cam(w2c, intr, width, height);
  const int W = width, H = height;
  const int64_t npx = (int64_t)W * H;
  const float* p = xyz.data();
  const float* rad = radius.data();
  const double fmean = 0.5 * (std::fabs(cam.fx) + std::fabs(cam.fy));
  float* depth = new float[npx];
  int64_t* index = new int64_t[npx];
  {
    nb::gil_scoped_release release;
    std::unique_ptr<std::atomic<uint64_t>[]> zbuf(new std::atomic<uint64_t>[npx]);
    for (int64_t o = 0; o < npx; ++o) zbuf[o].store(~uint64_t(0), std::memory_order_relaxed);

    // Visit the pixels of point i's disc: fn(pixel offset, row, col, z, u, v).
    auto disc = [&](int64_t i, auto&& fn) {
      float z; int row, col; double u, v;
      if (!cam.project(p + 3 * i, near, z, row, col, u, v)) return;
      double rp = has_r ? fmean * rad[i] / z : 0.0;
      if (rp > max_pixel_radius) rp = max_pixel_radius;
      const int h = rp >= 1.0 ? (int)rp : 0;
      if (row + h < 0 || col + h < 0 || row - h >= H || col - h >= W) return;
      const double r2 = (rp + 0.5) * (rp + 0.5);
      for (int dy = -h; dy <= h; ++dy) {
        const int rr = row + dy;
        if (rr < 0 || rr >= H) continue;
        for (int dx = -h; dx <= h; ++dx) {
          const int cc = col + dx;
          if (cc < 0 || cc >= W) continue;
          if (h && double(dx * dx + dy * dy) > r2) continue;
          fn((int64_t)rr * W + cc, rr, cc, z, u, v);
        }
      }
    };
    // Every point writes packed keys into buf with an integer min: CAS when threads share the
    // buffer, plain loads and stores on one thread. key_of(i, o, rr, cc, z, u, v) -> key or ~0.
    auto min_pass = [&](std::atomic<uint64_t>* buf, auto&& key_of) {
      if (n > kParallelPoints && num_threads() > 1) {
#pragma omp parallel for schedule(dynamic, 16384)
        for (int64_t i = 0; i < n; ++i)
          disc(i, [&](int64_t o, int rr, int cc, float z, double u, double v) {
            const uint64_t key = key_of(i, o, rr, cc, z, u, v);
            std::atomic<uint64_t>& slot = buf[o];
            uint64_t cur = slot.load(std::memory_order_relaxed);
            while (key < cur && !slot.compare_exchange_weak(cur, key, std::memory_order_relaxed)) {
            }
          });
      } else {
        uint64_t* plain = reinterpret_cast<uint64_t*>(buf);
        for (int64_t i = 0; i < n; ++i)
          disc(i, [&](int64_t o, int rr, int cc, float z, double u, double v) {
            const uint64_t key = key_of(i, o, rr, cc, z, u, v);
            if (key < plain[o]) plain[o] = key;
          });
      }
    };
    // Pass 1: the packed (depth bits, index) key makes "nearest wins, ties to the lower index"
    // a single integer min.
    min_pass(zbuf.get(), [&](int64_t i, int64_t, int, int, float z, double, double) {
      return (uint64_t(float_bits(z)) << 32) | uint64_t(uint32_t(i));
    });
    for (int64_t o = 0; o < npx; ++o) {
      const uint64_t k = zbuf[o].load(std::memory_order_relaxed);
      if (k == ~uint64_t(0)) { depth[o] = 0.f; index[o] = -1; }
      else { depth[o] = bits_float(uint32_t(k >> 32)); index[o] = int64_t(k & 0xffffffffULL); }
    }
    if (surface_owner && has_r) {
      // Pass 2: the front surface is known; among the discs that lie on it (within twice the
      // disc's world radius of the front depth), the point whose centre is nearest the pixel
      // owns it. Plain "nearest depth wins" lets a large disc in front of its neighbours'
      // centres steal their pixels, so a point on a surface would rarely be the one drawn at
      // its own pixel.
      std::unique_ptr<std::atomic<uint64_t>[]> own(new std::atomic<uint64_t>[npx]);
      for (int64_t o = 0; o < npx; ++o) own[o].store(~uint64_t(0), std::memory_order_relaxed);
      min_pass(own.get(), [&](int64_t i, int64_t o, int rr, int cc, float z, double u, double v) -> uint64_t {
        const float tol = std::max(2.0f * rad[i], 0.002f * z);
        if (depth[o] <= 0.f || z > depth[o] + tol) return ~uint64_t(0);
        const double d2 = (cc - u) * (cc - u) + (rr - v) * (rr - v);
        return (uint64_t(std::min(d2 * 4096.0, 4.0e9)) << 32) | uint64_t(uint32_t(i));
      });
      for (int64_t o = 0; o < npx; ++o) {
        const uint64_t k = own[o].load(std::memory_order_relaxed);
        if (k != ~uint64_t(0)) index[o] = int64_t(k & 0xffffffffULL);
      }
    }
    if (fill_iters > 0) {
      std::vector<float> d2(npx);
      std::vector<int64_t> i2(npx);
      float* da = depth; int64_t* ia = index;
      float* db = d2.data(); int64_t* ib = i2.data();
      for (int it = 0; it < fill_iters; ++it) {
        fill_pass(da, ia, db, ib, H, W, fill_reach, fill_tol, fill_need);
        std::swap(da, db); std::swap(ia, ib);
      }
      if (da != depth) {
        std::memcpy(depth, da, sizeof(float) * npx);
        std::memcpy(index, ia, sizeof(int64_t) * npx);
      }
    }
  }
  return nb::make_tuple(to_numpy(depth, {(size_t)H, (size_t)W}), to_numpy(index, {(size_t)H, (size_t)W}));
}

// fill_holes on an existing depth/index pair (e.g. a ray-cast or externally rendered map).
nb::tuple fill_holes(In<float, nb::shape<-1, -1>> depth, In<int64_t, nb::shape<-1, -1>> index, int iters, int reach,
                     double tol, int need) {
  const int H = (int)depth.shape(0), W = (int)depth.shape(1);
  if ((int)index.shape(0) != H || (int)index.shape(1) != W) throw std::invalid_argument("depth/index shape mismatch");
  const int64_t npx = (int64_t)H * W;
  float* d = new float[npx];
  int64_t* ix = new int64_t[npx];
  std::memcpy(d, depth.data(), sizeof(float) * npx);
  std::memcpy(ix, index.data(), sizeof(int64_t) * npx);
  {
    nb::gil_scoped_release release;
    std::vector<float> d2(npx);
    std::vector<int64_t> i2(npx);
    for (int it = 0; it < iters; ++it) {
      fill_pass(d, ix, d2.data(), i2.data(), H, W, reach, tol, need);
      std::memcpy(d, d2.data(), sizeof(float) * npx);
      std::memcpy(ix, i2.data(), sizeof(int64_t) * npx);
    }
  }
  return nb::make_tuple(to_numpy(d, {(size_t)H, (size_t)W}), to_numpy(ix, {(size_t)H, (size_t)W}));
}

}  // namespace

void bind_render(nb::module_& m) {
  m.def("depth_test", &depth_test, nb::arg("xyz"), nb::arg("w2c"), nb::arg("intr"), nb::arg("depth"),
        nb::arg("rel_tol"), nb::arg("abs_tol"), nb::arg("point_tol"), nb::arg("border"), nb::arg("near"),
        "depth_test(xyz, w2c (3,4), intr [fx,fy,cx,cy], depth (H,W), rel_tol, abs_tol, point_tol, border, near)"
        " -> (point_ids int64, pixels int32 (M,2) row/col, z float32)");
  m.def("splat", &splat, nb::arg("xyz"), nb::arg("w2c"), nb::arg("intr"), nb::arg("width"), nb::arg("height"),
        nb::arg("radius"), nb::arg("max_pixel_radius"), nb::arg("near"), nb::arg("fill_iters"),
        nb::arg("fill_reach"), nb::arg("fill_tol"), nb::arg("fill_need"), nb::arg("surface_owner") = true,
        "splat(...) -> (depth float32 (H,W) 0 = empty, index int64 (H,W) -1 = empty)");
  m.def("fill_holes", &fill_holes, nb::arg("depth"), nb::arg("index"), nb::arg("iters"), nb::arg("reach"),
        nb::arg("tol"), nb::arg("need"));
}

}  // namespace pcov
