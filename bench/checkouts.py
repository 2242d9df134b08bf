"""One benchmark, two checkouts, side by side in one run: a change judged against the code before it.

    python bench/checkouts.py BEFORE_DIR AFTER_DIR --rounds 2 -- train_throughput.py --images 5000
    python bench/checkouts.py BEFORE_DIR AFTER_DIR --rounds 1 -- startup.py --runs 3

Runs `bench/<script>` of each checkout (its own code, from its own folder) in turns, BEFORE then
AFTER, `--rounds` times, so a slow or busy spell of the machine falls on both. Every number the
script prints on a line with a label ("(a) ... 737.5 images/s", "Home: 2.1 s") is collected per
checkout; the table gives the median of each line's first number per checkout and after/before
(lines that print the same settings on both sides are left out). Lines whose labels differ
between the checkouts are listed but not compared.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

NUMBER = re.compile(r"(-?\d[\d,]*\.?\d*)")


def numbers_by_label(output: str) -> dict[str, list[float]]:
    """Each line with a number: its text with the numbers blanked (the label) -> the numbers."""
    found = {}
    for line in output.splitlines():
        values = NUMBER.findall(line)
        if not values or not re.search(r"[A-Za-z]", line):
            continue
        label = " ".join(NUMBER.sub("#", line).split())
        found[label] = [float(v.replace(",", "")) for v in values]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    argv = sys.argv[1:]
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        parser.error("name the benchmark after --: -- SCRIPT [ARGS]")
    cut = argv.index("--")
    args, script = parser.parse_args(argv[:cut]), argv[cut + 1:]
    results = {"before": {}, "after": {}}
    for r in range(args.rounds):
        for side, root in (("before", args.before), ("after", args.after)):
            print(f"round {r + 1}/{args.rounds}: {side} ({root})", file=sys.stderr, flush=True)
            out = subprocess.run([sys.executable, str(root / "bench" / script[0]), *script[1:]], cwd=root,
                                 capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"{side}: bench/{script[0]} failed ({out.returncode}):\n{out.stderr[-3000:]}")
            for label, values in numbers_by_label(out.stdout).items():
                results[side].setdefault(label, []).append(values)
    print(f"bench/{' '.join(script)}: {args.rounds} round(s), before = {args.before}, after = {args.after}")
    print("| line (its first number compared; numbers as #) | before (median) | after (median) | after / before |\n"
          "|---|---|---|---|")
    for label, before in results["before"].items():
        after = results["after"].get(label)
        if not after:
            continue
        b = statistics.median(v[0] for v in before)
        a = statistics.median(v[0] for v in after)
        if a == b and all(v == before[0] for v in before + after):
            continue  # a setting both printed alike, not a measurement
        print(f"| {label} | {b:g} | {a:g} | {f'{a / b:.3f}' if b else '-'} |")
    only = set(results["before"]) ^ set(results["after"])
    for label in sorted(only):
        print(f"not compared (printed by one checkout only): {label}")


if __name__ == "__main__":
    main()
