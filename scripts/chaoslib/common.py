"""What the scripts share, defined once: finding the built executables (`vigil`, the product,
and `vigil-bench`, the benchmarks and test drivers), percentiles and distributions.

Used by scripts/chaos, kill-trials, hostile-bench (through harness.py), power-cut-trials,
syscall-audit and reports. Only the standard library.
"""
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def _log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def find_vigil(who, build=False, debug=False):
    """The `vigil` executable: $VIGIL_BIN, else this checkout's release build; with `debug`,
    else its debug build; with `build`, else a release build made now (both executables).
    Exits 2 naming `who` when there is none."""
    b = os.environ.get("VIGIL_BIN")
    if b:
        if not os.access(b, os.X_OK):
            _log(f"{who}: VIGIL_BIN={b} is not an executable")
            raise SystemExit(2)
        return os.path.realpath(b)
    release = os.path.join(REPO, ".build", "release", "vigil")
    if os.access(release, os.X_OK):
        return release
    dbg = os.path.join(REPO, ".build", "debug", "vigil")
    if debug and os.access(dbg, os.X_OK):
        _log(f"{who}: using the debug build {dbg} (no release build; set VIGIL_BIN to choose)")
        return dbg
    if build:
        _log(f"{who}: no release build: running swift build -c release (once)")
        if subprocess.call(["swift", "build", "-c", "release"], cwd=REPO) == 0 and os.access(release, os.X_OK):
            return release
        _log(f"{who}: swift build -c release failed; set VIGIL_BIN to a built vigil")
        raise SystemExit(2)
    _log(f"{who}: no vigil executable at {release}: run `swift build -c release` first (or set VIGIL_BIN)")
    raise SystemExit(2)


def find_bench(who, vigil):
    """`vigil-bench`: $VIGIL_BENCH, else the one built beside `vigil` (SwiftPM builds both)."""
    b = os.environ.get("VIGIL_BENCH") or os.path.join(os.path.dirname(vigil), "vigil-bench")
    if not os.access(b, os.X_OK):
        _log(f"{who}: no vigil-bench executable at {b}: run `swift build -c release` (or set VIGIL_BENCH)")
        raise SystemExit(2)
    return os.path.realpath(b)


def pct(values, q):
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))]


def dist(values):
    """median / p95 / max / min / n of a list of seconds (rounded to ms), as a dict."""
    if not values:
        return {"n": 0, "median_s": None, "p95_s": None, "max_s": None, "min_s": None}
    r = lambda x: round(x, 3)  # noqa: E731
    return {"n": len(values), "median_s": r(statistics.median(values)), "p95_s": r(pct(values, 95)),
            "max_s": r(max(values)), "min_s": r(min(values))}


def dist_text(values, unit="ms"):
    """"p50 / p95 / max UNIT (n=N)" of a list, or "—" for none."""
    if not values:
        return "—"
    return "%.0f / %.0f / %.0f %s (n=%d)" % (pct(values, 50), pct(values, 95), max(values), unit, len(values))
