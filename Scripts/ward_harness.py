"""Shared by ward's test harnesses (crash_matrix.py, soak.py): a policy directory with the
shipped syscall sets, the defaults every harness tool needs, and the harness's own tools."""
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))

DEFAULTS = """
[defaults]
syscalls = ["@system-service"]
read = ["/usr", "/bin", "/lib", "?/lib64", "/etc/ld.so.cache", "{workspace}"]
write = ["{workspace}", "/dev/null"]
env = ["PATH=/usr/bin:/bin"]
timeout = "20s"
"""


def policy_directory(root: str, tools: str) -> str:
    """Writes ROOT/policies with the shipped syscall sets and `tools` (TOML [tools.*] tables)."""
    directory = os.path.join(root, "policies")
    os.makedirs(directory)
    shutil.copy(os.path.join(os.path.dirname(HERE), "policies", "syscall-sets.toml"), directory)
    with open(os.path.join(directory, "harness.toml"), "w") as f:
        f.write(DEFAULTS + tools)
    return directory
