"""Tiny wrapper: run `bizon run` as a child process and report wall time + peak RSS of the child.

Usage: run_bizon.py <workdir> <bizon-args...>
Prints on stdout one line: `seconds=<float> peak_rss_mb=<float> rc=<int>`.
Peak RSS comes from resource.getrusage(RUSAGE_CHILDREN).ru_maxrss (KiB on Linux), i.e. the
largest RSS of any waited-for descendant - here the single `bizon` python process.
"""

import resource
import subprocess
import sys
import time

workdir, args = sys.argv[1], sys.argv[2:]
with open(f"{workdir}/bizon.log", "wb") as log:
    t0 = time.perf_counter()
    rc = subprocess.call(args, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - t0
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(f"seconds={elapsed:.3f} peak_rss_mb={peak_kib / 1024:.1f} rc={rc}")
