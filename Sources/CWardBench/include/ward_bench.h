#ifndef WARD_BENCH_H
#define WARD_BENCH_H
#include <sys/types.h>
/// Baseline for the spawn benchmark: plain fork + execv + waitpid, no sandbox. C because
/// fork in a multithreaded Swift process must go straight to exec without touching Swift.
/// Returns the child's exit status, or -1.
int ward_bench_fork_exec(const char *path, char *const argv[]);
#endif
