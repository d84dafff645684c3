"""A chaos mission: real work with observable side effects.

    python3 -S mission.py EVENTS_DIR LOCKKEY|- SECONDS [VIGIL]

Appends `start ID ATTEMPT PID T` and `end ID ATTEMPT PID T` to EVENTS_DIR/events.log and
sleeps in between. Holds an flock on EVENTS_DIR/m-ID.lock (and k-KEY.lock) while it runs: a
second copy of the same mission (or of the same lock key) running at the same moment finds
it taken and appends an `overlap` line. The kernel drops the locks when the process dies, so
only a copy that is really alive counts.

With VIGIL (the vigil executable) it checkpoints like an agent: after half its time it saves
`half` with `vigil checkpoint save` (logs `checkpoint ID ATTEMPT SEQ`); an attempt that gets
that checkpoint as VIGIL_CHECKPOINT logs `resumed ID ATTEMPT` and does only the second half.
"""
import fcntl
import os
import subprocess
import sys
import time

d, key, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
vigil = sys.argv[4] if len(sys.argv) > 4 else None
mid = os.environ.get("VIGIL_MISSION_ID", "?")
att = os.environ.get("VIGIL_MISSION_ATTEMPT", "?")
pid = os.getpid()
log = os.open(os.path.join(d, "events.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def w(s):
    os.write(log, (s + "\n").encode())


def hold(path, what):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        w(f"overlap {what} {mid} {att} {pid} {time.time():.6f}")
    return fd


locks = [hold(os.path.join(d, f"m-{mid}.lock"), "mission")]
if key != "-":
    locks.append(hold(os.path.join(d, f"k-{key}.lock"), f"lock:{key}"))
w(f"start {mid} {att} {pid} {time.time():.6f} {key}")
if vigil:
    resumed = False
    try:
        with open(os.environ.get("VIGIL_CHECKPOINT", "")) as f:
            resumed = f.read() == "half"
    except OSError:
        pass
    if resumed:
        w(f"resumed {mid} {att} {pid} {time.time():.6f}")
    else:
        time.sleep(secs / 2)
        state = os.path.join(os.environ.get("VIGIL_MISSION_SCRATCH", d), "progress")
        with open(state, "w") as f:
            f.write("half")
        r = subprocess.run([vigil, "checkpoint", "save", state], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        w(f"checkpoint {mid} {att} {r.stdout.strip() if r.returncode == 0 else 'failed:' + str(r.returncode)} {time.time():.6f}")
    time.sleep(secs / 2)
else:
    time.sleep(secs)
w(f"end {mid} {att} {pid} {time.time():.6f} {key}")
