// Shim for libzmq (Debian libzmq3-dev 4.3.4). Only SMGBus imports this module
// (`internal import CZeroMQ`). All macros used from Swift (ZMQ_*, ETERM) import as constants.
#ifndef SMG_CZEROMQ_SHIM_H
#define SMG_CZEROMQ_SHIM_H
#include <errno.h>
#include <zmq.h>
#endif
