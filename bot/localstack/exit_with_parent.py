"""`python exit_with_parent.py PARENT_PID COMMAND...`: run COMMAND so that Linux SIGTERMs it when PARENT_PID dies.

The local stack's children lead their own sessions, so a terminal's signals reach only `expertbot up`; if `up`
is killed outright (SIGKILL, OOM), no handler of its runs, and this parent-death signal is what still stops
them. It is set here, in a tiny launcher that then execs the command (the setting survives exec), rather than
in a `preexec_fn`: that would run Python in a forked copy of a multi-threaded process (gRPC's threads), which
is unsafe. Run with `python -I -S` by path: nothing here needs site-packages or the project on the path.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def main(argv: list[str]) -> None:
    parent, command = int(argv[1]), argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)  # the C library this interpreter is linked with
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        sys.exit(f"exit_with_parent: prctl failed: {os.strerror(ctypes.get_errno())}")
    if os.getppid() != parent:  # the parent died before prctl: nobody would signal us any more
        sys.exit("exit_with_parent: the parent is gone")
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv)
