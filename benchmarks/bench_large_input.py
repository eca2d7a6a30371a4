"""Large inputs: `ocean-hook test-mapping` over 10,000 and 100,000 items, in a subprocess.

    python benchmarks/bench_large_input.py [--sizes 10000 100000] [--keep DIR]

Writes GitHub-like pull requests (bench_mapping's generator, compact) as JSON Lines and as one
JSON array, runs the real console script in text mode (the full plan goes to /dev/null, as when
piped) and reports wall time and peak resident memory. Each run happens under its own small
wrapper process, whose `getrusage(RUSAGE_CHILDREN).ru_maxrss` is then the peak of that run
alone. Memory that stays flat from 10,000 to 100,000 items shows text mode streams: items are
read, mapped, diffed and printed in batches, and never all held at once.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_mapping import MAPPING, make_items

#: runs one command with stdout to /dev/null; prints its wall time and its own peak RSS (KiB on Linux)
WRAPPER = """
import resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
seconds = time.perf_counter() - started
print(code, seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def console_script() -> str:
    script = Path(sys.executable).with_name("ocean-hook")
    found = str(script) if script.exists() else shutil.which("ocean-hook")
    if not found:
        sys.exit("ocean-hook is not installed (pip install -e .)")
    return found


def write_inputs(folder: Path, count: int) -> dict[str, Path]:
    """The same items twice: JSON Lines and a JSON array, written a thousand at a time."""
    lines, array = folder / f"prs-{count}.jsonl", folder / f"prs-{count}.json"
    with lines.open("w") as jl, array.open("w") as ja:
        ja.write("[\n")
        for start in range(0, count, 1000):
            for n, item in enumerate(make_items(min(1000, count - start), seed=start, compact=True)):
                item["number"] = start + n + 1  # unique across chunks
                text = json.dumps(item)
                jl.write(text + "\n")
                ja.write(("" if start + n == 0 else ",\n") + text)
        ja.write("\n]\n")
    return {"JSON Lines": lines, "JSON array": array}


def measure(command: list[str]) -> tuple[int, float, float]:
    done = subprocess.run([sys.executable, "-c", WRAPPER, *command], capture_output=True, text=True, check=True)
    code, seconds, kib = done.stdout.split()
    return int(code), float(seconds), int(kib) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--keep", type=Path, help="write the inputs here and keep them")
    args = parser.parse_args()

    folder = args.keep or Path(tempfile.mkdtemp(prefix="ocean-hook-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    mapping = folder / "port-app-config.yml"
    mapping.write_text(MAPPING)
    script = console_script()
    rows = []
    try:
        for count in args.sizes:
            for label, data in write_inputs(folder, count).items():
                command = [script, "test-mapping", "--mapping", str(mapping), "--data", str(data)]
                code, seconds, peak = measure(command)
                size = data.stat().st_size / 2**20
                rows.append((count, label, size, code, seconds, peak))
                print(f"done: {count:,} items, {label}: {seconds:.1f} s, {peak:.0f} MiB", file=sys.stderr)
    finally:
        if args.keep is None:
            shutil.rmtree(folder)

    print(f"{'items':>9}  {'input':<11}{'file MiB':>9}{'exit':>6}{'seconds':>9}{'items/s':>9}{'peak RSS MiB':>14}")
    for count, label, size, code, seconds, peak in rows:
        print(f"{count:>9,}  {label:<11}{size:>9.0f}{code:>6}{seconds:>9.1f}{count / seconds:>9,.0f}{peak:>14.0f}")
    print(f"\ncommand: {Path(script).name} test-mapping --mapping port-app-config.yml --data FILE > /dev/null")
    return 0 if all(row[3] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
