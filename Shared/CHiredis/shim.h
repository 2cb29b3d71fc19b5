// Shim for hiredis (Debian libhiredis-dev 0.14.1: RESP2 only, no redisConnectWithOptions).
// Only SMGRedis imports this module (`internal import CHiredis`).
// hiredis.h pulls in read.h (REDIS_REPLY_* types, REDIS_ERR_* codes) and sds.h; all macros
// used from Swift are plain integer constants, so no wrapper functions are needed.
#ifndef SMG_CHIREDIS_SHIM_H
#define SMG_CHIREDIS_SHIM_H
#include <sys/time.h>
#include <hiredis/hiredis.h>
#endif
