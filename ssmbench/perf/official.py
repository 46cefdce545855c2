"""The official mamba_ssm kernel's times beside the profiler's scan rows (ssmbench/perf/kernels.py), and the one
reader of the CSV of times measured elsewhere (the report joins the same file, ssmbench/perf/report.py).

Where an official time comes from, best first:
  same_process   the profile measured the official kernel itself (its selective_scan:mamba_ssm series, when
                 mamba_ssm is importable on a CUDA device): a same-run comparison
  same_study     an earlier run of the same study measured it (rows kept by `resume=true`)
  reference_csv  the CSV `official_csv` (default: the committed ssmbench/reference/h200_official_kernels.csv,
                 mamba_ssm 2.3.2 on an H200 in another process): indicative only
  none           no time for this shape, dtype, gating, length and pass
Times are never copied into code: they are measured here or read from that file.

Every selective_scan row of a backend other than mamba_ssm gets the columns
  official_ms      the official kernel's median ms at the row's batch, dim, d_state, dtype, gating, L and pass
  official_source  one of the sources above
  official_csv     the CSV's file name when the time was read from it, else ""
  vs_official      official_ms / time_ms: above 1 means faster than the official kernel
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

OFFICIAL = ("selective_scan", "mamba_ssm")  # the (op, backend) whose times are the targets
SOURCES = ("same_process", "same_study", "reference_csv", "none")

# The CSV's op names -> (the op:backend whose time it is, dtype of the inputs).
CSV_OPS = {
    "mamba_ssm_selective_scan": ("selective_scan:mamba_ssm", "bf16"),
    "mamba_ssm_selective_scan_fp32": ("selective_scan:mamba_ssm", "fp32"),
    "sdpa_causal_flash": ("attention:sdpa_flash", "bf16"),
    "sdpa_causal_cudnn": ("attention:sdpa_cudnn", "bf16"),
    "sdpa_causal_efficient": ("attention:sdpa_efficient", "bf16"),
}


def default_csv() -> str:
    """The committed official times shipped with the package (ssmbench.reference.H200_OFFICIAL_CSV)."""
    from importlib.resources import files

    from ssmbench import reference
    return str(files(reference).joinpath(reference.H200_OFFICIAL_CSV))


def _bool(v: str) -> bool | None:
    v = (v or "").strip().lower()
    return None if v == "" else v == "true"


def read_official_csv(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The CSV (columns op,B,D,L,N,gated_z,fwd_ms,fwdbwd_ms; head dim 64 for attention) as kernel-schema rows,
    one per op, shape and pass that has a time: impl, op, backend, batch, dim, d_state (None where N is blank),
    gated (None where blank), dtype, seq_len, pass, time_ms, source. Ops not in CSV_OPS are left out."""
    path = path or default_csv()
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r["op"] not in CSV_OPS:
                continue
            impl, dtype = CSV_OPS[r["op"]]
            op, backend = impl.split(":")
            for pas, col in (("fwd", "fwd_ms"), ("fwdbwd", "fwdbwd_ms")):
                if not (r.get(col) or "").strip():  # forward-only rows (inference shapes)
                    continue
                out.append({"impl": impl, "op": op, "backend": backend, "batch": int(r["B"]), "dim": int(r["D"]),
                            "d_state": int(r["N"]) if (r.get("N") or "").strip() else None,
                            "gated": _bool(r.get("gated_z", "")), "dtype": dtype, "seq_len": int(r["L"]),
                            "pass": pas, "time_ms": float(r[col]), "source": str(path)})
    return out


def is_official(row: dict) -> bool:
    return (row.get("op"), row.get("backend")) == OFFICIAL


def takes_official(row: dict) -> bool:
    """A scan row that is compared with the official kernel: every selective_scan backend but the official one."""
    return row.get("op") == OFFICIAL[0] and row.get("backend") != OFFICIAL[1]


def _key(row: dict) -> tuple:
    return (int(row["batch"]), int(row["dim"]), int(row["d_state"]), str(row["dtype"]), bool(row["gated"]),
            int(row["seq_len"]), str(row["pass"]))


class OfficialTimes:
    """The official kernel's times for one profile: those its own rows measured (`record`), then the CSV's."""

    def __init__(self, csv_path: str | None = None):
        self.csv = csv_path or default_csv()
        self.csv_name = Path(self.csv).name
        self.reference: dict[tuple, float] = {}
        self.measured: dict[tuple, tuple[float, str]] = {}
        self.error = ""
        try:
            rows = read_official_csv(self.csv)
        except (OSError, KeyError, ValueError) as e:  # the rows then say "none"; the sweep goes on
            self.error = f"cannot read {self.csv}: {type(e).__name__}: {e}"
            rows = []
        for r in rows:
            if r["impl"] == ":".join(OFFICIAL) and r["d_state"] is not None and r["gated"] is not None:
                self.reference[_key(r)] = r["time_ms"]

    def record(self, row: dict, source: str) -> None:
        """Keep an official-kernel row's time (status ok) as the target of the other scan rows at its point."""
        if is_official(row) and row.get("status") == "ok":
            self.measured[_key(row)] = (float(row["time_ms"]), source)

    def columns(self, row: dict) -> dict[str, Any]:
        """The official_* columns of a scan row (see the module docstring)."""
        k = _key(row)
        if k in self.measured:
            ms, source = self.measured[k]
        elif k in self.reference:
            ms, source = self.reference[k], "reference_csv"
        else:
            ms, source = math.nan, "none"
        t = row.get("time_ms", math.nan)
        ok = row.get("status") == "ok" and t is not None and t > 0
        return {"official_ms": ms, "official_source": source,
                "official_csv": self.csv_name if source == "reference_csv" else "",
                "vs_official": ms / t if ok else math.nan}
