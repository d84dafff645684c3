"""The harness's stand-in for systemd: a child subreaper that runs scripts/vigil-run and
reaps every orphan of the system under test (this VM's PID 1 does not reap orphans, so
without it a dead bridge whose runner died first would stay a zombie and pin its PID).

    python3 reaper.py CONTROL_DIR -- COMMAND ARG...

Relaunches COMMAND (the wrapper) whenever it exits, unless CONTROL_DIR/stop exists
(like systemd's Restart=always); writes the wrapper's pid to CONTROL_DIR/wrapper.pid and one
line per wrapper exit to CONTROL_DIR/wrapper-exits.log. After the stop it keeps reaping
until no child is left or 10 s passed, then exits. Signals nothing, ever.
"""
import ctypes
import os
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def main():
    control = sys.argv[1]
    assert sys.argv[2] == "--"
    cmd = sys.argv[3:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.stderr.write("reaper: prctl(PR_SET_CHILD_SUBREAPER) failed\n")
        sys.exit(1)
    out = os.path.join(control, "wrapper.log")
    exits = os.open(os.path.join(control, "wrapper-exits.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    stop = os.path.join(control, "stop")
    while not os.path.exists(stop):
        actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                   (os.POSIX_SPAWN_OPEN, 1, out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644),
                   (os.POSIX_SPAWN_DUP2, 1, 2)]
        wpid = os.posix_spawnp(cmd[0], cmd, dict(os.environ), file_actions=actions)
        tmp = os.path.join(control, ".wrapper.pid.tmp")
        with open(tmp, "w") as f:
            f.write(f"{wpid}\n")
        os.rename(tmp, os.path.join(control, "wrapper.pid"))
        while True:
            pid, status = os.waitpid(-1, 0)
            if pid == wpid:
                os.write(exits, f"{time.time():.3f} {wpid} {os.waitstatus_to_exitcode(status)}\n".encode())
                break
        if not os.path.exists(stop):
            time.sleep(0.1)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.05)


if __name__ == "__main__":
    main()
