"""Benchmark `hfseqrec prepare`: seconds and peak memory on ML-1M and on a 20M-event synthetic log.

    python scripts/benchmark_prepare.py [--data PATH_TO_ml-1m.txt.gz] [--events 20000000] [--workdir /tmp/x]

Each case runs in its own child process, so the peak RSS read from wait4() is that case's alone.
`seconds` is prepare()'s own time (read, clean, split, save); `wall_seconds` adds interpreter start
and imports. Targets on a 2-core machine: ML-1M <= 10 s; 20M events <= 180 s and <= 4 GB.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = """
import json, sys
from hfseqrec.sequences import prepare
report = prepare([sys.argv[1]], sys.argv[2], format=sys.argv[3] or None)
print(json.dumps({k: report[k] for k in ("users", "items", "interactions", "seconds")}))
"""


def run_case(code, *argv):
    """Run `code` in a child python; return (its last stdout line as JSON, wall s, peak RSS in MB)."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, text=True)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        sys.exit(f"benchmark case failed: {argv}")
    result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    return {**result, "wall_seconds": round(time.perf_counter() - start, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024)}  # ru_maxrss is in KiB on Linux


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data/sasrec/ml-1m.txt.gz", help="SASRec-format ML-1M")
    parser.add_argument("--events", type=int, default=20_000_000, help="size of the synthetic log")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="hfseqrec-bench-")
    results = {"ml-1m": run_case(CHILD, args.data, os.path.join(work, "ml-1m"), "sasrec")}
    synthetic = os.path.join(work, "synthetic.csv")
    users = max(args.events // 40, 1)  # 40 events per user on average
    generated = run_case("import sys; from hfseqrec.synth import generate, write; "
                         f"write(generate(users={users}, items={max(users // 10, 10)}), sys.argv[1])", synthetic)
    results["synthetic"] = {"generate_wall_seconds": generated["wall_seconds"],
                            "file_mb": round(os.path.getsize(synthetic) / 2**20),
                            **run_case(CHILD, synthetic, os.path.join(work, "synthetic"), "")}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
