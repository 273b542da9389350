// glibc's allocator tuning (mallopt), which no Swift module exports.
#if defined(__linux__)
#include <malloc.h>
#endif
