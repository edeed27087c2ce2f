// fusion kernels (filled in by the fusion stage).
#include "common.h"

namespace pcov {
void bind_fusion(nb::module_& m) { (void)m; }
}  // namespace pcov
