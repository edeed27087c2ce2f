// render kernels (filled in by the render stage).
#include "common.h"

namespace pcov {
void bind_render(nb::module_& m) { (void)m; }
}  // namespace pcov
