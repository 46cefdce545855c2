"""Summarise Nsight Compute reports of the scan kernels as markdown: headline metrics from `--page details` and,
from `--page source --csv --print-source sass`, the instruction mix and where the warps stall.

    ncu -i REP --page details > K.details.txt
    ncu -i REP --page source --csv --print-source sass --kernel-name regex:scan_bwd > K.sass.csv   (or .csv.gz)
    python scripts/ncu_summary.py --label NAME K.details.txt K.sass.csv [--label NAME D S ...] > summary.md
"""

from __future__ import annotations

import argparse
import collections
import csv
import gzip
import re

HEADLINES = ("Duration", "Registers Per Thread", "Achieved Occupancy", "Issue Slots Busy", "No Eligible",
             "Executed Instructions", "Local Memory Spilling Requests", "L1/TEX Cache Throughput",
             "L2 Cache Throughput", "DRAM Throughput")


def details(path: str, kernel: str) -> dict[str, str]:
    """Headline metrics of the first kernel whose name starts with `kernel` in a details page."""
    out, inside = {}, False
    for line in open(path):
        if re.match(r"\s{2}\w", line):
            inside = line.strip().startswith(kernel)
            continue
        if inside:
            for name in HEADLINES:
                m = re.match(rf"\s+{re.escape(name)}\s+(\S+)?\s+([\d,.]+)\s*$", line)
                if m and name not in out:
                    out[name] = f"{m.group(2)} {m.group(1) or ''}".strip()
    return out


def sass(path: str):
    """(instruction mix %, stall reasons %, stall samples by opcode %) from a source-page CSV."""
    with (gzip.open(path, "rt") if path.endswith(".gz") else open(path)) as f:
        rows = list(csv.reader(f))
    start = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
    hdr, data = rows[start], [r for r in rows[start + 1:] if len(r) >= len(rows[start])]
    i_samp, i_exec = hdr.index("Warp Stall Sampling (All Samples)"), hdr.index("Instructions Executed")
    stall_cols = [i for i, h in enumerate(hdr) if h.startswith("stall_") and "Not Issued" not in h]
    mix, stalls, by_op = collections.Counter(), collections.Counter(), collections.Counter()
    for r in data:
        words = r[1].split()
        op = (words[1] if words[0].startswith("@") else words[0]).split(".")[0]
        mix[op] += int(r[i_exec] or 0)
        by_op[op] += int(r[i_samp] or 0)
        for i in stall_cols:
            stalls[hdr[i][len("stall_"):]] += int(r[i] or 0)

    def pct(c):
        total = sum(c.values()) or 1
        return [(k, 100 * v / total) for k, v in c.most_common(8)]
    return len(data), pct(mix), pct(stalls), pct(by_op)


def main():
    ap = argparse.ArgumentParser(usage="ncu_summary.py [--kernel NAME] --label NAME DETAILS SASS [--label ...]")
    ap.add_argument("--kernel", default="scan_bwd_kernel")
    ap.add_argument("--label", nargs=3, action="append", required=True, metavar=("NAME", "DETAILS", "SASS"))
    args = ap.parse_args()
    runs = [tuple(x) for x in args.label]
    print(f"# Nsight Compute: {args.kernel}\n")
    heads = [details(d, args.kernel) for _, d, _ in runs]
    print("| metric | " + " | ".join(n for n, _, _ in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for name in HEADLINES:
        print(f"| {name} | " + " | ".join(h.get(name, "") for h in heads) + " |")
    for (label, _, s) in runs:
        n, mix, stalls, by_op = sass(s)
        fmt = lambda xs: ", ".join(f"{k} {v:.1f}%" for k, v in xs)  # noqa: E731
        print(f"\n## {label}\n\n- static SASS instructions: {n}\n- executed instruction mix: {fmt(mix)}\n"
              f"- stall reasons (share of samples): {fmt(stalls)}\n- stall samples by opcode: {fmt(by_op)}")


if __name__ == "__main__":
    main()
