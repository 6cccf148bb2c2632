#include "ward_bench.h"
#include <sys/wait.h>
#include <unistd.h>

int ward_bench_fork_exec(const char *path, char *const argv[]) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        execv(path, argv);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) < 0) return -1;
    return status;
}
