#include <dnnl.h>

// Debian's oneDNN runs its GEMM on OpenMP (libgomp). omp.h is on gcc's include path, not
// clang's, so the one function the engine needs is declared here.
void omp_set_num_threads(int count);
