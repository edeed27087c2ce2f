// sparse kernels (filled in by the sparse stage).
#include "common.h"

namespace pcov {
void bind_sparse(nb::module_& m) { (void)m; }
}  // namespace pcov
