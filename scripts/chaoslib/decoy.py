"""A decoy: a process that is not Vigil's but looks like it (its argv reads like
`vigil bridge --state-dir DIR`). It blocks every catchable signal and logs each one it
receives, with the sender's pid, to LOG; SIGSTOP/SIGKILL are seen from outside (state, life).

    python3 -S decoy.py LOG ARGV-TO-SHOW...
"""
import ctypes
import os
import signal
import sys
import time

log = sys.argv[1]
try:
    ctypes.CDLL(None).prctl(15, b"vigil", 0, 0, 0)  # PR_SET_NAME: comm "vigil"
except Exception:
    pass
sigs = set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, f"ready {os.getpid()} {time.time():.3f}\n".encode())
while True:
    info = signal.sigwaitinfo(sigs)
    os.write(fd, f"signal {info.si_signo} from {info.si_pid} at {time.time():.3f}\n".encode())
