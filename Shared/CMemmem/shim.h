// glibc's memmem (a GNU extension, so not in Swift's Glibc module): substring search over bytes,
// linear time, vectorised for short needles. The spam engine's one byte search (SMGSpam/Search).
#include <stddef.h>

extern void *memmem(const void *haystack, size_t haystacklen, const void *needle, size_t needlelen);
