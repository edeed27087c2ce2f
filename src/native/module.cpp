// pc_ovseg._native: one extension, one bind function per pipeline stage.
// Python code never imports this directly: pc_ovseg/native.py wraps it with dtype checks.
#include "common.h"

namespace pcov {
void bind_voxel(nb::module_& m);   // voxel.cpp  (io: downsampling, backbone: voxelisation)
void bind_render(nb::module_& m);  // render.cpp (views: projection, visibility, splatting)
void bind_fusion(nb::module_& m);  // fusion.cpp (fusion: streaming feature accumulation)
void bind_sparse(nb::module_& m);  // sparse.cpp (backbone: voxel hashing, kernel maps)
void bind_mapping(nb::module_& m); // mapping.cpp (mapping: streamed voxel hash)
}  // namespace pcov

NB_MODULE(_native, m) {
  m.doc() = "pc_ovseg native kernels (C++17, OpenMP)";
#ifdef PC_OVSEG_OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  pcov::bind_voxel(m);
  pcov::bind_render(m);
  pcov::bind_fusion(m);
  pcov::bind_sparse(m);
  pcov::bind_mapping(m);
}
