#ifndef WARD_CCAP_SHIM_H
#define WARD_CCAP_SHIM_H
#include <sys/capability.h>
#endif
