"""Shared machinery of scripts/chaos (the chaos soak) and scripts/kill-trials.

Runs the whole system the way an operator does — scripts/vigil-run (under a small child
subreaper standing in for systemd), the runner, the bridge, mission shims, console chat —
in a private temp dir, puts load on it through the CLI (missions that leave observable side
effects, chat commands), and keeps a ledger of everything Vigil acknowledged so the end can
check that nothing was lost, nothing ran twice at once, nothing leaked and nothing foreign
was signalled.

Only the standard library. Every process this file signals is identified first: a pidfd is
opened, then /proc/PID/stat's start time and the argv are checked, then the signal goes
through the pidfd (no PID-reuse race).
"""
import datetime
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time

import common
from common import dist, pct  # noqa: F401  (the scripts use H.dist, H.pct)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PY = sys.executable or "python3"

# Every fork of this process goes through this lock, so a decoy can be given an exact PID
# (ns_last_pid) without another thread of ours taking it first.
SPAWN_LOCK = threading.Lock()


def boot_ns():
    """CLOCK_BOOTTIME in ns: the clock of the journal's `boot` field."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def mono():
    return time.monotonic()


def log(msg):
    sys.stderr.write(time.strftime("%H:%M:%S ") + msg + "\n")
    sys.stderr.flush()


# MARK: - processes


class ProcInfo:
    __slots__ = ("pid", "ppid", "state", "start", "argv", "_env")

    def __init__(self, pid, ppid, state, start, argv):
        self.pid, self.ppid, self.state, self.start, self.argv = pid, ppid, state, start, argv
        self._env = None

    @property
    def env(self):
        if self._env is None:
            self._env = read_environ(self.pid)
        return self._env


def read_stat(pid):
    """(state, ppid, start ticks) from /proc/PID/stat, or None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2:].split()
    return rest[0].decode(), int(rest[1]), int(rest[19])


def read_argv(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0")[:-1]]
    except OSError:
        return []


def read_environ(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            items = f.read().split(b"\0")
    except OSError:
        return {}
    env = {}
    for it in items:
        k, sep, v = it.partition(b"=")
        if sep:
            env[k.decode(errors="replace")] = v.decode(errors="replace")
    return env


def scan():
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        st = read_stat(pid)
        if st is None:
            continue
        out.append(ProcInfo(pid, st[1], st[0], st[2], read_argv(pid)))
    return out


def signal_verified(pid, start, sig, check_argv):
    """Sends `sig` to PID only if it is still the process that started at `start` and its argv
    passes `check_argv`; through a pidfd, so a reused PID is never hit. True when sent."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        st = read_stat(pid)
        if st is None or st[2] != start or st[0] == "Z" or not check_argv(read_argv(pid)):
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def run(argv, timeout=30, env=None, cwd=None):
    """subprocess.run with the spawn lock. Returns (rc, stdout, stderr); rc None on timeout."""
    with SPAWN_LOCK:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=env, cwd=cwd, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out, err
    except subprocess.TimeoutExpired:
        p.kill()  # our own direct child, not reaped yet: its PID cannot have been reused
        out, err = p.communicate()
        return None, out, err


# MARK: - the binary


def find_vigil():
    """$VIGIL_BIN, or this checkout's release build, or its debug build (what `swift build`
    made), or a release build made now (common.find_vigil)."""
    return common.find_vigil("chaos", build=True, debug=True)


# MARK: - the system under test


class System:
    """One supervised pair on a private state dir, started through scripts/vigil-run."""

    def __init__(self, work, state, vigil_bin, tunables, max_parallel):
        self.work = work
        self.state = state
        self.tunables = tunables
        self.max_parallel = max_parallel
        self.bin_dir = os.path.join(work, "bin")
        self.bin = os.path.join(self.bin_dir, "vigil")
        self.control = os.path.join(work, "control")
        self.events = os.path.join(work, "events")
        self.decoy_dir = os.path.join(work, "decoys")
        self.version_file = os.path.join(work, "version", "agent-version")
        for d in (self.bin_dir, self.control, self.events, self.decoy_dir, os.path.dirname(self.version_file), state):
            os.makedirs(d, exist_ok=True)
        shutil.copy2(vigil_bin, self.bin)
        with open(self.version_file, "w") as f:
            f.write("agent-1\n")
        self.version = 1
        self.reaper = None
        self.wrapper_restarts = 0
        self.wrapper_log_offset = 0
        self.env = dict(os.environ)
        self.env.update({"VIGIL_BIN": self.bin, "VIGIL_TEST_FAULTS": "1", "VIGIL_STATE_DIR": state})
        self.env.pop("VIGIL_BUSY_TIMEOUT", None)
        self.journal = JournalTail(os.path.join(state, "journal.jsonl"))
        journal_events(vigil_bin)  # the names, from the binary under test

    # -- lifecycle

    def start(self):
        argv = [PY, os.path.join(HERE, "reaper.py"), self.control, "--", os.path.join(REPO, "scripts", "vigil-run"),
                "--state-dir", self.state, "--version-file", self.version_file] + self.tunables
        with SPAWN_LOCK:
            self.reaper = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=self.env, start_new_session=True,
                                           stdout=open(os.path.join(self.control, "reaper.log"), "a"), stderr=subprocess.STDOUT)

    def stop(self, timeout=25):
        """vigil stop, then the reaper (and with it the wrapper) ends. Returns problems."""
        problems = []
        with open(os.path.join(self.control, "stop"), "w") as f:
            f.write("stop\n")
        rc, out, err = self.cli("stop", "--timeout", "20s", timeout=timeout)
        if rc != 0:
            problems.append(f"vigil stop exited {rc}: {(err or out).strip()[:300]}")
        if self.reaper is not None:
            try:
                self.reaper.wait(timeout=20)
            except subprocess.TimeoutExpired:
                problems.append("the reaper (wrapper supervisor) did not exit within 20 s after vigil stop")
                self.reaper.kill()  # our own child
                self.reaper.wait()
        return problems

    # -- CLI

    def cli(self, *args, timeout=30, env=None):
        e = self.env if env is None else {**self.env, **env}
        return run([self.bin, "--state-dir", self.state] + list(args), timeout=timeout, env=e, cwd=self.work)

    def status(self):
        rc, out, _ = self.cli("status", "--json", timeout=10)
        if rc != 0:
            return None
        try:
            return json.loads(out)
        except ValueError:
            return None

    @staticmethod
    def healthy(st):
        if not st:
            return False
        b, h, r = st.get("bridge") or {}, st.get("heal") or {}, st.get("runner") or {}
        age = r.get("heartbeat_age_ms")
        return (b.get("verdict") == "healthy" and h.get("tier") == 0 and h.get("circuit") == "closed"
                and r.get("alive") is True and age is not None and age < 1500)

    def outbox(self):
        rc, out, _ = self.cli("outbox", "--json", "--limit", "0", timeout=20)
        if rc != 0:
            return None
        try:
            return json.loads(out)
        except ValueError:
            return None

    def missions(self):
        rc, out, _ = self.cli("mission", "list", "--json", timeout=20)
        if rc != 0:
            return None
        try:
            return json.loads(out)
        except ValueError:
            return None

    # -- processes of this system

    def is_ours(self, p, role=None):
        """The argv of a Vigil process of this state dir (role: bridge/runner/shim/wrapper)."""
        a = p.argv if isinstance(p, ProcInfo) else p
        if not a or "--state-dir" not in a:
            return False
        i = a.index("--state-dir")
        if i + 1 >= len(a) or a[i + 1] != self.state:
            return False
        if role == "wrapper":
            return len(a) > 1 and a[1].endswith("scripts/vigil-run")
        if os.path.basename(a[0]) != "vigil" or len(a) < 2:
            return False
        return role is None or a[1] == role

    def procs(self, procs=None):
        """{role: [ProcInfo]} for wrapper, runner, bridge, shim, mission (by environment)."""
        procs = scan() if procs is None else procs
        out = {"wrapper": [], "runner": [], "bridge": [], "shim": [], "mission": []}
        for p in procs:
            if p.state == "Z":
                continue
            for role in ("wrapper", "runner", "bridge", "shim"):
                if self.is_ours(p, role):
                    out[role].append(p)
                    break
            else:
                if p.pid != os.getpid() and p.env.get("VIGIL_STATE_DIR") == self.state and "VIGIL_MISSION_ID" in p.env:
                    out["mission"].append(p)
        return out

    def leftovers(self, exclude):
        """Every process (zombies too) that belongs to this system: argv naming the state or
        work dir, or VIGIL_STATE_DIR in its environment. `exclude`: decoy PIDs."""
        me = os.getpid()
        left = []
        for p in scan():
            if p.pid in exclude or p.pid == me:
                continue
            if any(self.state in a or self.work in a for a in p.argv) or p.env.get("VIGIL_STATE_DIR") == self.state:
                left.append(p)
            elif p.state == "Z" and p.ppid in (me,):
                left.append(p)
        return left

    def kill(self, role, sig=signal.SIGKILL, pick=None):
        """Signals one live process of `role` (verified). Returns its ProcInfo or None."""
        cands = self.procs()[role]
        if not cands:
            return None
        p = pick(cands) if pick else random.choice(cands)
        if signal_verified(p.pid, p.start, sig, lambda a: self.is_ours(a, role)):
            return p
        return None

    def wrapper_pid(self):
        ws = self.procs()["wrapper"]
        return ws[0] if ws else None

    def nudge_wrapper(self, max_backoff=1.5):
        """After a runner crash the wrapper waits with a capped exponential backoff (0.5 s
        doubling to 30 s, reset after 60 s up): by design. When it would wait longer than
        `max_backoff`, restart the wrapper (SIGTERM → it exits → the reaper, like systemd's
        Restart=always, starts a fresh one), as an operator would. Returns True if done."""
        path = os.path.join(self.control, "wrapper.log")
        try:
            with open(path, "rb") as f:
                f.seek(self.wrapper_log_offset)
                data = f.read()
        except OSError:
            return False
        if not data:
            return False
        self.wrapper_log_offset += len(data)
        m = None
        for m in re.finditer(rb"(\S+) vigil-run\[\d+\]: runner crashed[^\n]*relaunching in ([0-9.]+)s", data):
            pass
        if m is None or float(m.group(2)) <= max_backoff:
            return False
        try:
            logged = datetime.datetime.strptime(m.group(1).decode(), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()
        except ValueError:
            return False
        if time.time() - logged > float(m.group(2)) - 0.3:
            return False  # read too late: the wrapper has relaunched the runner already
        w = self.wrapper_pid()
        if w and signal_verified(w.pid, w.start, signal.SIGTERM, lambda a: self.is_ours(a, "wrapper")):
            self.wrapper_restarts += 1
            return True
        return False

    def wait_healthy(self, timeout, poll=0.1, also=None):
        """Polls status until healthy (and `also(status)`), nudging a slow wrapper. Returns
        (ok, seconds waited, last status)."""
        t0 = mono()
        st = None
        while mono() - t0 < timeout:
            st = self.status()
            if self.healthy(st) and (also is None or also(st)):
                return True, mono() - t0, st
            self.nudge_wrapper()
            time.sleep(poll)
        return False, mono() - t0, st

    def bump_version(self):
        self.version += 1
        tmp = self.version_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"agent-{self.version}\n")
        os.rename(tmp, self.version_file)

    def replace_binary(self):
        """A new build on disk: same bytes, new inode (the runner sees its program changed)."""
        tmp = self.bin + ".new"
        shutil.copy2(self.bin, tmp)
        os.rename(tmp, self.bin)


_JOURNAL_EVENTS = None


def journal_events(vigil=None):
    """Every event name the journal can hold, from `vigil journal --events` (Vigil's JournalEvent:
    the one spelling, also listed in docs/operator-guide.md). Read once."""
    global _JOURNAL_EVENTS
    if _JOURNAL_EVENTS is None:
        out = subprocess.run([vigil or find_vigil(), "journal", "--events"], capture_output=True, text=True, check=True).stdout
        _JOURNAL_EVENTS = frozenset(out.split())
    return _JOURNAL_EVENTS


def ev(*names):
    """The event name(s) given, checked against `journal_events()`: a name Vigil does not journal
    (a misspelling, an old name) stops the script instead of counting nothing."""
    unknown = [n for n in names if n not in journal_events()]
    if unknown:
        raise SystemExit(f"not a journal event: {', '.join(unknown)} (see vigil journal --events)")
    return names[0] if len(names) == 1 else names


class JournalTail:
    """Reads journal.jsonl incrementally; skips torn or garbage lines (counted).

    An independent check: it parses the journal's JSON lines itself and shares no code with
    the Swift Journal reader (nor `vigil journal`), so what the soak concludes from the
    journal does not rest on the code under test."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.partial = b""
        self.entries = []
        self.bad_lines = 0
        self.lock = threading.Lock()

    def poll(self):
        with self.lock:
            try:
                with open(self.path, "rb") as f:
                    f.seek(self.offset)
                    data = f.read()
            except OSError:
                return self.entries
            self.offset += len(data)
            data = self.partial + data
            lines = data.split(b"\n")
            self.partial = lines.pop()
            for line in lines:
                if not line.strip():
                    continue
                try:
                    e = json.loads(line)
                    if isinstance(e, dict) and "event" in e:
                        self.entries.append(e)
                        continue
                except ValueError:
                    pass
                self.bad_lines += 1
            return self.entries

    def since(self, t_boot, events=None):
        if events is not None:
            ev(*events)
        es = self.poll()
        return [e for e in es if e.get("boot", 0) >= t_boot and (events is None or e["event"] in events)]


# MARK: - decoys


class Decoys:
    """Processes that are not Vigil's, some looking exactly like it. Each logs every signal
    it gets (with the sender); the end checks they got none, are alive and not stopped."""

    def __init__(self, system):
        self.system = system
        self.items = []  # dicts: popen, pid, start, log, argv, why
        self.lock = threading.Lock()
        self.pid_reuse_ok = None
        self.pid_reuse_reason = None
        try:
            with open("/proc/sys/kernel/ns_last_pid", "r+"):
                self.pid_reuse_ok = True
        except OSError as e:
            self.pid_reuse_ok = False
            self.pid_reuse_reason = f"/proc/sys/kernel/ns_last_pid is not writable ({e.strerror}); needs root"

    def _spawn(self, argv_show, why, want_pid=None):
        n = len(self.items)
        logp = os.path.join(self.system.decoy_dir, f"decoy-{n}.log")
        argv = [PY, "-S", os.path.join(HERE, "decoy.py"), logp] + argv_show
        with SPAWN_LOCK:
            if want_pid is not None:
                if os.path.exists(f"/proc/{want_pid}"):
                    return None
                with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                    f.write(str(want_pid - 1))
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
        if want_pid is not None and p.pid != want_pid:
            p.kill()  # our own child, never reaped yet
            p.wait()
            return None
        end = mono() + 5
        while mono() < end:
            try:
                with open(logp) as f:
                    if f.read().startswith("ready"):
                        break
            except OSError:
                pass
            time.sleep(0.01)
        st = read_stat(p.pid)
        d = {"popen": p, "pid": p.pid, "start": st[2] if st else None, "log": logp, "argv": argv_show, "why": why}
        with self.lock:
            self.items.append(d)
        return d

    def spawn_lookalikes(self):
        other = os.path.join(self.system.work, "other-state")
        os.makedirs(other, exist_ok=True)
        for argv, why in [(["vigil", "bridge", "--state-dir", other], "named vigil bridge, another state dir"),
                          (["vigil", "runner", "--state-dir", other], "named vigil runner, another state dir"),
                          (["/usr/local/bin/vigil", "bridge", "--state-dir", "/var/lib/vigil"], "named vigil bridge, system path"),
                          (["vigil", "bridge", "--state-dir", self.system.state], "named exactly like our bridge (not at a reused PID)")]:
            self._spawn(argv, why)

    def take_pid(self, pid, argv_show, why, attempts=40):
        """A decoy at exactly `pid` (a freed PID of a Vigil process): via ns_last_pid."""
        if not self.pid_reuse_ok:
            return None
        end = mono() + 3
        while os.path.exists(f"/proc/{pid}") and mono() < end:
            time.sleep(0.005)
        for _ in range(attempts):
            d = self._spawn(argv_show, why, want_pid=pid)
            if d:
                return d
            if os.path.exists(f"/proc/{pid}"):
                return None  # someone else (maybe a new bridge) took it
        return None

    def check(self):
        """Problems: a decoy that got a signal, died, or is stopped."""
        problems = []
        with self.lock:
            items = list(self.items)
        for d in items:
            st = read_stat(d["pid"])
            if st is None or st[2] != d["start"] or d["popen"].poll() is not None:
                problems.append(f"decoy pid {d['pid']} ({d['why']}) died")
                continue
            if st[0] in ("T", "t"):
                problems.append(f"decoy pid {d['pid']} ({d['why']}) is stopped")
            try:
                with open(d["log"]) as f:
                    sigs = [l.strip() for l in f if l.startswith("signal")]
            except OSError:
                sigs = []
            if sigs:
                problems.append(f"decoy pid {d['pid']} ({d['why']}) was signalled: {sigs[:5]}")
        return problems

    def pids(self):
        with self.lock:
            return {d["pid"] for d in self.items}

    def end(self):
        with self.lock:
            items = list(self.items)
        for d in items:
            if d["popen"].poll() is None:
                d["popen"].kill()  # our own child: its PID is ours until we reap it
            d["popen"].wait()

    def summary(self):
        with self.lock:
            return [{"pid": d["pid"], "argv": " ".join(d["argv"]), "why": d["why"]} for d in self.items]


# MARK: - load and the ledger


class Ledger:
    """What Vigil acknowledged, as seen through its CLI."""

    def __init__(self):
        self.lock = threading.Lock()
        self.missions = {}  # id -> {"lock", "secs", "t"}
        self.add_rc = {}  # exit code -> count (not 0)
        self.add_errors = []
        self.says = {}  # inbox command id -> text
        self.say_rc = {}
        self.say_errors = []
        self.rows = {}  # outbox row id -> {"key", "adapter", "first_state"}
        self.rows_vanished = []  # (row id, key) seen once, missing from a later full snapshot
        self.snapshots = 0


class Load:
    """Background load through the CLI: missions (with and without lock keys) and chat
    commands; snapshots of the outbox to learn every acknowledged notification."""

    def __init__(self, system, ledger, mission_every=(0.2, 0.6), mission_secs=(0.05, 0.8), say_every=(0.6, 2.0),
                 lock_keys=("repo-a", "repo-b", "repo-c"), lock_share=0.6):
        self.s, self.l = system, ledger
        self.mission_every, self.mission_secs, self.say_every = mission_every, mission_secs, say_every
        self.lock_keys, self.lock_share = lock_keys, lock_share
        self.stop_event = threading.Event()
        self.paused = threading.Event()
        self.threads = []
        self.mission_script = os.path.join(HERE, "mission.py")

    def start(self):
        for fn in (self._missions, self._says, self._snapshots):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=60)

    def add_mission(self, env=None):
        key = random.choice(self.lock_keys) if random.random() < self.lock_share else None
        secs = round(random.uniform(*self.mission_secs), 3)
        # Half of them checkpoint like an agent (saved half-way; a later attempt resumes).
        agent = [self.s.bin] if random.random() < 0.5 else []
        args = ["mission", "add"] + (["--lock", key] if key else []) + \
               ["--", PY, "-S", self.mission_script, self.s.events, key or "-", str(secs)] + agent
        rc, out, err = self.s.cli(*args, timeout=30, env=env)
        with self.l.lock:
            if rc == 0 and out.strip().isdigit():
                self.l.missions[int(out.strip())] = {"lock": key, "secs": secs, "t": mono()}
            else:
                self.l.add_rc[str(rc)] = self.l.add_rc.get(str(rc), 0) + 1
                if len(self.l.add_errors) < 20:
                    self.l.add_errors.append(f"rc={rc}: {(err or out).strip()[:200]}")
        return rc, out, err

    def _missions(self):
        while not self.stop_event.wait(random.uniform(*self.mission_every)):
            if not self.paused.is_set():
                self.add_mission()

    def _says(self):
        texts = ["status", "missions", "journal 3", "help", "/status"]
        while not self.stop_event.wait(random.uniform(*self.say_every)):
            if self.paused.is_set():
                continue
            text = random.choice(texts)
            rc, out, err = self.s.cli("say", *text.split(), timeout=30)
            m = re.search(r"\(command #(\d+)\)", out or "")
            with self.l.lock:
                if rc == 0 and m:
                    self.l.says[int(m.group(1))] = text
                else:
                    self.l.say_rc[str(rc)] = self.l.say_rc.get(str(rc), 0) + 1
                    if len(self.l.say_errors) < 10:
                        self.l.say_errors.append(f"rc={rc}: {(err or out).strip()[:200]}")

    def snapshot(self):
        rows = self.s.outbox()
        if rows is None:
            return False
        ids = set()
        with self.l.lock:
            for r in rows:
                ids.add(r["id"])
                if r["id"] not in self.l.rows:
                    self.l.rows[r["id"]] = {"key": r["key"], "adapter": r["adapter"], "first_state": r["state"]}
            for rid, r in self.l.rows.items():
                if rid not in ids and (rid, r["key"]) not in self.l.rows_vanished:
                    self.l.rows_vanished.append((rid, r["key"]))
            self.l.snapshots += 1
        return True

    def _snapshots(self):
        while not self.stop_event.wait(1.0):
            self.snapshot()


class Watcher:
    """Samples /proc: never two bridges (or runners) of this state dir at once for more than
    a moment; decoys alive, unstopped, unsignalled."""

    def __init__(self, system, decoys, period=0.3):
        self.s, self.decoys, self.period = system, decoys, period
        self.stop_event = threading.Event()
        self.problems = []
        self.samples = 0
        self.max_seen = {"bridge": 0, "runner": 0, "wrapper": 0, "shim": 0}
        self._streak = {"bridge": 0, "runner": 0}
        self.shim_excess = []  # samples with more live shims than --max-parallel
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stop_event.set()
        self.thread.join(timeout=10)

    def _run(self):
        while not self.stop_event.wait(self.period):
            decoys = self.decoys.pids()
            procs = [p for p in scan() if p.pid not in decoys]
            roles = self.s.procs(procs)
            self.samples += 1
            # A /proc scan takes a while: a process that exited and its successor started during
            # it are both in it. Count only those still alive together right after the scan; and
            # not a child forked by one of them that has not exec'd yet (same argv as its parent).
            for r, limit in (("shim", self.s.max_parallel), ("bridge", 1), ("runner", 1)):
                pids = {p.pid for p in roles[r]}
                roles[r] = [p for p in roles[r] if p.ppid not in pids]
                if len(roles[r]) > limit:
                    roles[r] = [p for p in roles[r] if (read_stat(p.pid) or ("Z", 0, -1))[0] != "Z"
                                and (read_stat(p.pid) or ("Z", 0, -1))[2] == p.start]
            for r in self.max_seen:
                self.max_seen[r] = max(self.max_seen[r], len(roles[r]))
            if len(roles["shim"]) > self.s.max_parallel and len(self.shim_excess) < 20:
                self.shim_excess.append({"t": round(time.time(), 3), "boot_ns": boot_ns(), "shims": [
                    {"pid": p.pid, "state": p.state, "ppid": p.ppid, "argv": " ".join(p.argv[4:10])} for p in roles["shim"]]})
            for r in ("bridge", "runner"):
                if len(roles[r]) > 1:
                    self._streak[r] += 1
                    if self._streak[r] == 4:  # > 1 s
                        self.problems.append(f"{len(roles[r])} {r}s of the state dir alive at once for > 1 s: "
                                             f"{[p.pid for p in roles[r]]}")
                else:
                    self._streak[r] = 0
            for p in self.decoys.check():
                if p not in self.problems:
                    self.problems.append(p)


# MARK: - the end: what was acknowledged must all be there


def checkpoint_events(path):
    """(checkpoints saved, saves that failed, attempts resumed from a checkpoint) in events.log."""
    saved = failed = resumed = 0
    try:
        with open(path) as f:
            for line in f:
                w = line.split()
                if len(w) >= 4 and w[0] == "checkpoint":
                    if w[3].startswith("failed"):
                        failed += 1
                    else:
                        saved += 1
                elif w and w[0] == "resumed":
                    resumed += 1
    except OSError:
        pass
    return saved, failed, resumed


def parse_events(path):
    starts, ends, overlaps = [], [], []
    try:
        with open(path) as f:
            for line in f:
                w = line.split()
                if not w:
                    continue
                if w[0] == "start" and len(w) >= 6:
                    starts.append((int(w[1]), w[2], int(w[3]), float(w[4]), w[5]))
                elif w[0] == "end" and len(w) >= 6:
                    ends.append((int(w[1]), w[2], int(w[3]), float(w[4]), w[5]))
                elif w[0] == "overlap":
                    overlaps.append(line.strip())
    except OSError:
        pass
    return starts, ends, overlaps


def chat_tags(state):
    """{outbox id: times delivered to chat.log (and its rotated predecessor)}. An independent
    check: chat.log's `[#ID]` tags are read here, not through the Swift console adapter."""
    counts = {}
    for name in ("chat.log.1", "chat.log"):
        try:
            with open(os.path.join(state, name), "rb") as f:
                for line in f:
                    m = re.match(rb"\S+ \[#(\d+)\] ", line)
                    if m:
                        i = int(m.group(1))
                        counts[i] = counts.get(i, 0) + 1
        except OSError:
            pass
    return counts


TERMINAL = {"done", "failed", "cancelled"}


def drain(system, ledger, load, timeout):
    """Waits until every acknowledged mission ended and every notification left the outbox."""
    t0 = mono()
    last = ""
    while mono() - t0 < timeout:
        system.nudge_wrapper()
        ms = system.missions()
        rows = system.outbox()
        if ms is not None and rows is not None:
            load.snapshot()
            by = {m["id"]: m for m in ms}
            with ledger.lock:
                open_m = [i for i in ledger.missions if by.get(i, {}).get("state") not in TERMINAL]
            busy_rows = [r for r in rows if r["state"] in ("pending", "sending")]
            last = f"{len(open_m)} missions not ended, {len(busy_rows)} notifications not delivered"
            if not open_m and not busy_rows and not any(m["state"] not in TERMINAL for m in ms):
                return True, mono() - t0, last
        time.sleep(0.5)
    return False, mono() - t0, last


def final_checks(system, ledger, journal_entries):
    """Missions, notifications, overlaps. Returns (invariants, stats)."""
    inv, stats = {}, {}
    ms = system.missions() or []
    rows = system.outbox() or []
    by_id = {m["id"]: m for m in ms}
    with ledger.lock:
        acked = dict(ledger.missions)
        says = dict(ledger.says)
        seen = dict(ledger.rows)
        vanished = list(ledger.rows_vanished)

    # Missions: every acknowledged one present and ended.
    lost = sorted(i for i in acked if i not in by_id)
    unfinished = sorted(i for i in acked if i in by_id and by_id[i]["state"] not in TERMINAL)
    states = {}
    for i in acked:
        if i in by_id:
            states[by_id[i]["state"]] = states.get(by_id[i]["state"], 0) + 1
    inv["missions_not_lost"] = {"ok": not lost, "lost": lost[:50], "count": len(lost)}
    inv["missions_all_ended"] = {"ok": not unfinished, "not_ended": unfinished[:50], "count": len(unfinished)}

    # Running twice at once: flock-detected overlaps, and interval overlaps per mission and per key.
    starts, ends, overlaps = parse_events(os.path.join(system.events, "events.log"))
    end_by = {}
    for mid, att, pid, t, key in ends:
        end_by[(mid, pid)] = t
    intervals = []  # completed runs (start..end)
    for mid, att, pid, t, key in starts:
        if (mid, pid) in end_by:
            intervals.append((mid, key, t, end_by[(mid, pid)]))
    clashes = []
    for group_of in (lambda iv: ("mission", iv[0]), lambda iv: ("lock", iv[1])):
        groups = {}
        for iv in intervals:
            g = group_of(iv)
            if g[0] == "lock" and g[1] == "-":
                continue
            groups.setdefault(g, []).append(iv)
        for g, ivs in groups.items():
            ivs.sort(key=lambda x: x[2])
            for a, b in zip(ivs, ivs[1:]):
                if b[2] < a[3]:
                    clashes.append(f"{g[0]} {g[1]}: mission {a[0]} [{a[2]:.3f},{a[3]:.3f}] and mission {b[0]} [{b[2]:.3f},{b[3]:.3f}]")
    inv["no_mission_twice_at_once"] = {"ok": not overlaps and not clashes, "flock_overlaps": overlaps[:20],
                                       "interval_overlaps": clashes[:20], "count": len(overlaps) + len(clashes)}
    runs = {}
    for mid, *_ in ends:
        runs[mid] = runs.get(mid, 0) + 1
    done_without_run = sorted(i for i in acked if by_id.get(i, {}).get("state") == "done" and runs.get(i, 0) == 0)
    inv["done_missions_really_ran"] = {"ok": not done_without_run, "missions": done_without_run[:50]}
    starts_by = {}
    for mid, *_ in starts:
        starts_by[mid] = starts_by.get(mid, 0) + 1
    stats["missions"] = {
        "acknowledged": len(acked), "states": states,
        "add_failures_by_exit_code": ledger.add_rc,
        "completed_more_than_once": sum(1 for i in acked if runs.get(i, 0) > 1),
        "completed_more_than_once_ids": sorted(i for i in acked if runs.get(i, 0) > 1)[:30],
        "add_errors": ledger.add_errors[:10],
        "started_more_than_once": sum(1 for i in acked if starts_by.get(i, 0) > 1),
        "checkpoints_saved": checkpoint_events(os.path.join(system.events, "events.log"))[0],
        "checkpoint_saves_failed": checkpoint_events(os.path.join(system.events, "events.log"))[1],
        "attempts_resumed_from_checkpoint": checkpoint_events(os.path.join(system.events, "events.log"))[2],
        "runs_started": len(starts), "runs_completed": len(ends),
        "failed_reasons": sorted({(by_id[i].get("reason") or "")[:120] for i in acked if by_id.get(i, {}).get("state") == "failed"}),
    }

    # Notifications: every row once seen is still there, delivered (or visibly failed), and in
    # chat.log exactly once.
    row_by = {r["id"]: r for r in rows}
    tags = chat_tags(system.state)
    lost_rows = sorted(i for i in seen if i not in row_by)
    not_delivered = sorted(i for i in seen if i in row_by and row_by[i]["state"] in ("pending", "sending"))
    failed_rows = sorted(i for i in row_by if row_by[i]["state"] == "failed")
    console_delivered = [r for r in rows if r["adapter"] == "console" and r["state"] == "delivered"]
    missing_in_chat = sorted(r["id"] for r in console_delivered if tags.get(r["id"], 0) == 0)
    dups = {r["id"]: tags[r["id"]] for r in rows if tags.get(r["id"], 0) > 1}
    unknown_tags = sorted(i for i in tags if i not in row_by)
    inv["notifications_not_lost"] = {"ok": not lost_rows and not missing_in_chat and not vanished,
                                     "vanished_from_outbox": vanished[:20], "missing_at_end": lost_rows[:20],
                                     "delivered_but_not_in_chat": missing_in_chat[:20],
                                     "count": len(set(lost_rows) | {v[0] for v in vanished}) + len(missing_in_chat)}
    inv["notifications_all_delivered"] = {"ok": not not_delivered, "undelivered": not_delivered[:20]}
    inv["notifications_failed_are_visible"] = {"ok": True, "failed": [{"id": i, "key": row_by[i]["key"], "error": row_by[i].get("last_error")} for i in failed_rows][:20],
                                               "count": len(failed_rows)}
    # Every acknowledged chat command got its reply (or the "interrupted" notice).
    keys = {(r["key"], r["adapter"]) for r in rows}
    no_reply = sorted(i for i in says if (f"reply:{i}", "console") not in keys)
    inv["chat_commands_answered"] = {"ok": not no_reply, "unanswered": no_reply[:20], "count": len(no_reply)}
    # Every mission that ended got its notification.
    no_end_note = sorted(i for i in acked if by_id.get(i, {}).get("state") in ("done", "failed")
                         and (f"mission-{i}-{by_id[i]['attempts']}-end", "console") not in keys)
    inv["mission_end_notified"] = {"ok": not no_end_note, "missing": no_end_note[:30], "count": len(no_end_note)}
    heal_events = sum(1 for e in journal_entries if e.get("event") == ev("heal"))
    heal_notes = sum(1 for r in rows if r["adapter"] == "console" and r["key"].startswith("heal-") and re.search(r"-t\d$", r["key"]))
    stats["notifications"] = {
        "rows": len(rows), "seen_during_run": len(seen), "snapshots": ledger.snapshots,
        "delivered": sum(1 for r in rows if r["state"] == "delivered"), "failed": len(failed_rows),
        "duplicates_delivered": sum(c - 1 for c in dups.values()), "duplicate_rows": dict(list(dups.items())[:20]),
        "chat_lines_without_row": unknown_tags[:20],
        "chat_commands_acknowledged": len(says), "say_failures_by_exit_code": ledger.say_rc, "say_errors": ledger.say_errors[:10],
        "heal_actions_journaled": heal_events, "heal_action_notifications": heal_notes,
    }
    return inv, stats


def integrity_check(db_path):
    try:
        c = sqlite3.connect(db_path, timeout=10)
        try:
            r = [row[0] for row in c.execute("PRAGMA integrity_check")]
        finally:
            c.close()
        return r == ["ok"], r[:5]
    except sqlite3.Error as e:
        return False, [f"error: {e}"]


def force_cleanup(system, decoys):
    """Whatever happened: continue stopped processes of ours, stop the pair, kill what is left
    of this system (identified by argv or environment, signalled through verified pidfds),
    end the decoys."""
    for role in ("bridge", "runner", "shim"):
        for p in system.procs()[role]:
            if p.state in ("T", "t"):
                signal_verified(p.pid, p.start, signal.SIGCONT, lambda a, r=role: system.is_ours(a, r))
    if system.reaper is not None and system.reaper.poll() is None:
        system.stop()
    for p in system.leftovers(decoys.pids()):
        if system.is_ours(p):
            signal_verified(p.pid, p.start, signal.SIGKILL, lambda a: system.is_ours(a))
        elif p.env.get("VIGIL_STATE_DIR") == system.state:
            signal_verified(p.pid, p.start, signal.SIGKILL, lambda a: read_environ(p.pid).get("VIGIL_STATE_DIR") == system.state)
    decoys.end()


def print_table(title, header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    print(f"\n{title}")
    fmt = "  ".join("{:<%d}" % w for w in widths)
    print(fmt.format(*header))
    print(fmt.format(*["-" * w for w in widths]))
    for r in rows:
        print(fmt.format(*[str(x) for x in r]))


def fmt_s(x):
    return "-" if x is None else f"{x:.2f}"
