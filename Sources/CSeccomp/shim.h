#ifndef WARD_CSECCOMP_SHIM_H
#define WARD_CSECCOMP_SHIM_H
#include <seccomp.h>
#include <errno.h>

// Function-like macros do not import into Swift; these wrap them.
static inline uint32_t ward_scmp_act_errno(uint16_t e) { return SCMP_ACT_ERRNO(e); }
static inline struct scmp_arg_cmp ward_scmp_arg(unsigned int arg, enum scmp_compare op,
                                                 scmp_datum_t a, scmp_datum_t b) {
    struct scmp_arg_cmp c = { arg, op, a, b };
    return c;
}
#endif
