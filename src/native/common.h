// Shared helpers for pc_ovseg's native kernels.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <cstdint>
#include <stdexcept>
#include <string>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace nb = nanobind;

namespace pcov {

// C-contiguous CPU arrays; Python wrappers in pc_ovseg/native.py make inputs conform.
template <typename T, typename... Shape>
using Array = nb::ndarray<T, nb::numpy, nb::c_contig, nb::device::cpu, Shape...>;
template <typename T, typename... Shape>
using In = nb::ndarray<const T, nb::c_contig, nb::device::cpu, Shape...>;

// Hand a heap buffer to NumPy; the capsule frees it when the array dies.
template <typename T>
Array<T> to_numpy(T* data, std::initializer_list<size_t> shape) {
  nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<T*>(p); });
  return Array<T>(data, shape, owner);
}

inline int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace pcov
