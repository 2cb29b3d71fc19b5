// Shim for libclamav (Debian libclamav-dev 1.4). Only SMGClamAV imports this module
// (`internal import CClamAV`). The CL_* option macros import as integer constants.
#ifndef SMG_CCLAMAV_SHIM_H
#define SMG_CCLAMAV_SHIM_H
#include <clamav.h>
#endif
