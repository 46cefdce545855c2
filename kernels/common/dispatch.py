"""Backend tables and dispatch, shared by every kernel op (selective scan, its decode step, causal conv1d).

Each op declares its backends in one `BackendTable` (`kernels/<op>/table.py`): one `Backend` row per name, with
where its implementation lives (a "module:attribute" path, imported on first use), whether it can run on a device
(None, or a sentence saying why not) and its priority for "auto" on each device type. The op's dispatcher, the model
layers that choose a backend and the profiler (ssmbench/perf/kernels.py) all read that table, so a new backend is
its implementation file and one row:

    table.resolve("auto", device)   # the available backend with the best "auto" priority on device.type
    table.resolve("triton", device) # "triton", or BackendUnavailable saying why it cannot run there
    table.impl("triton")            # the implementation (imported now, cached)

An unknown name is a ValueError listing the known ones; nothing falls back silently.
"""

from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why."""


def runs_anywhere(device: torch.device) -> str | None:
    return None


def triton_reason(device: torch.device) -> str | None:
    """Why the Triton kernels cannot run on `device` (None if they can: CUDA, or the CPU interpreter)."""
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return f"triton is not importable ({e})"
    if device.type == "cuda":
        return None
    if os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return (f"inputs are on {device.type}; the Triton kernels need a CUDA device (or TRITON_INTERPRET=1, set before "
            "triton is first imported, to run them in the CPU interpreter)")


@dataclass(frozen=True)
class Backend:
    """One row of an op's table."""

    # "module:attribute" ("." + module: inside the op's package), or entry -> path for an op with several entries
    # (causal conv1d: "fn" and "update"). Imported on first use, so a backend's imports cost nothing until then.
    impl: str | Mapping[str, str]
    # device -> None if it can run there, else a sentence saying why not
    unavailable: Callable[[torch.device], str | None] = runs_anywhere
    # device type ("cuda", "cpu", ...; "*" for any type not named) -> priority for "auto", lowest first. A device
    # type without one never gets this backend from "auto" (it can still be asked for by name).
    auto: Mapping[str, int] = field(default_factory=dict)
    fp32_only: bool = False  # computes in float32: its argument checks refuse float64 rather than round it
    # Scan rows: the backend of the step ops that go with this one in a model (S6's decode step, the Mamba block's
    # conv; "reference" keeps them plain, "auto" takes the fused ones wherever they can run).
    step: str = "auto"
    # The profiler (ssmbench/perf/kernels.py): rank of this backend's series in the order they are measured
    # (lowest first; None: after the ranked ones), the name its rows carry (None: this row's name), and the
    # package whose __version__ they record.
    profile_rank: float | None = None
    profile_name: str | None = None
    version_of: str | None = None


@functools.lru_cache(maxsize=None)
def _load(package: str, path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module, package), attr)


class BackendTable:
    """An op's backends: name -> Backend, in the order they are listed (`rows` is a plain dict: add a row to it)."""

    def __init__(self, op: str, package: str, rows: dict[str, Backend]):
        self.op = op  # as the messages name it: "selective scan", "decode", "causal conv1d"
        self.package = package  # where the implementations' relative paths start
        self.rows = rows

    def names(self) -> tuple[str, ...]:
        return tuple(self.rows)

    def choices(self) -> tuple[str, ...]:
        return ("auto",) + self.names()

    def row(self, name: str) -> Backend:
        try:
            return self.rows[name]
        except KeyError:
            raise ValueError(f"unknown {self.op} backend {name!r}; choose one of {self.choices()}") from None

    def unavailable_reason(self, name: str, device: torch.device | str) -> str | None:
        """None if backend `name` can run on `device`, else a sentence saying why not."""
        return self.row(name).unavailable(torch.device(device))

    def available(self, device: torch.device | str) -> list[str]:
        return [b for b in self.rows if self.unavailable_reason(b, device) is None]

    def auto_order(self, device: torch.device | str) -> list[str]:
        """The backends "auto" tries on `device`, best first."""
        kind = torch.device(device).type
        ranked = []
        for i, (name, row) in enumerate(self.rows.items()):
            priority = row.auto.get(kind, row.auto.get("*"))
            if priority is not None:
                ranked.append((priority, i, name))
        return [name for _, _, name in sorted(ranked)]

    def resolve(self, name: str, device: torch.device | str) -> str:
        """Turn "auto" into the first backend of `auto_order` that can run on `device`; check that an explicit one
        can run (BackendUnavailable with the reason if not)."""
        device = torch.device(device)
        if name == "auto":
            reasons = []
            for b in self.auto_order(device):
                reason = self.unavailable_reason(b, device)
                if reason is None:
                    return b
                reasons.append(f"{b}: {reason}")
            raise BackendUnavailable(f"no {self.op} backend can run on {device.type} "
                                     f"({'; '.join(reasons) or 'none has an auto priority there'})")
        reason = self.unavailable_reason(name, device)
        if reason is not None:
            raise BackendUnavailable(f"{self.op} backend {name!r} cannot run: {reason}")
        return name

    def impl(self, name: str, entry: str | None = None) -> Callable:
        """Backend `name`'s implementation (of `entry`, for an op with several), imported on first use."""
        path = self.row(name).impl
        if not isinstance(path, str):
            path = path[entry]
        return _load(self.package, path)

    def profiled(self) -> dict[str, str]:
        """The profiler's name -> backend, in the profiler's order (profile_rank; unranked rows last, as listed)."""
        order = sorted(enumerate(self.rows.items()),
                       key=lambda item: (item[1][1].profile_rank is None, item[1][1].profile_rank or 0, item[0]))
        return {row.profile_name or name: name for _, (name, row) in order}
