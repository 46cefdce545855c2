"""Figure family 4, the scan: the order in which a sequential loop and two parallel scans combine the steps of
the recurrence h_t = a_t h_(t-1) + b_t (drawn from the combines actually performed), and the memory that the
backward of the selective scan needs when it keeps every state against when it recomputes them.

The combine (Blelloch 1990; Martin & Cundy 2018): a step is the pair (a, b), and the composition of an earlier
segment (a1, b1) with a later one (a2, b2) is (a1 a2, a2 b1 + b2), associative, so any bracketing gives the same
prefixes; h_t is the b of the composition of steps 0..t (from h_(-1) = 0).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

from ssmbench.kernels.selective_scan import selective_scan  # noqa: E402
from ssmbench.kernels.selective_scan.torch_scan import selective_scan_torch  # noqa: E402
from ssmbench.plots import LINE_STYLES, model_colour, save_figure  # noqa: E402

from .common import Drawn, Setting  # noqa: E402

# ---------------------------------------------------------------------------------------------------------------
# Combine orders, recorded while they run


@dataclass(frozen=True)
class Segment:
    """The composition of steps first..last: h_last = a * h_(first-1) + b."""

    a: float
    b: float
    first: int
    last: int


def combine(earlier: Segment, later: Segment) -> Segment:
    if earlier.last + 1 != later.first:
        raise ValueError(f"combining non-adjacent segments {earlier.first}:{earlier.last} and "
                         f"{later.first}:{later.last}")
    return Segment(earlier.a * later.a, later.a * earlier.b + later.b, earlier.first, later.last)


@dataclass(frozen=True)
class Combine:
    round: int  # combines of one round read the previous round's slots: they can run in parallel
    left: int  # slot holding the earlier segment
    right: int  # slot holding the later segment; the result replaces it


@dataclass
class ScanRecord:
    name: str
    length: int
    combines: list[Combine] = field(default_factory=list)
    rows: list[list[Segment]] = field(default_factory=list)  # the slots after each round (rows[0]: the steps)

    @property
    def rounds(self) -> int:
        return len(self.rows) - 1

    @property
    def h(self) -> np.ndarray:
        return np.array([s.b for s in self.rows[-1]])


def sequential_rounds(L: int) -> list[list[tuple[int, int]]]:
    return [[(t - 1, t)] for t in range(1, L)]


def hillis_steele_rounds(L: int) -> list[list[tuple[int, int]]]:
    """Every slot combines with the one k back, k = 1, 2, 4, ...: log2(L) rounds, L log2(L) - L + 1 combines
    (the torch backend's "doubling" inner scan on GPUs)."""
    rounds, k = [], 1
    while k < L:
        rounds.append([(t - k, t) for t in range(k, L)])
        k *= 2
    return rounds


def work_efficient_rounds(L: int) -> list[list[tuple[int, int]]]:
    """Blelloch's up-sweep (a reduction tree), then a down-sweep that hands each prefix to the slots in between:
    2 log2(L) - 1 rounds, 2L - log2(L) - 2 combines (the inclusive form of Brent & Kung 1982)."""
    levels = int(math.log2(L))
    up = [[(i + 2 ** d - 1, i + 2 ** (d + 1) - 1) for i in range(0, L, 2 ** (d + 1))] for d in range(levels)]
    down = [[(i, i + 2 ** d) for i in range(2 ** (d + 1) - 1, L - 2 ** d, 2 ** (d + 1))]
            for d in range(levels - 2, -1, -1)]
    return up + down


SCHEDULES: dict[str, Callable[[int], list[list[tuple[int, int]]]]] = {
    "sequential loop": sequential_rounds,
    "Hillis-Steele (doubling)": hillis_steele_rounds,
    "work-efficient (Blelloch up-sweep, down-sweep)": work_efficient_rounds,
}


def run_scan(name: str, a: np.ndarray, b: np.ndarray) -> ScanRecord:
    """Run the schedule `name` on the steps (a_t, b_t), recording every combine and the slots after each round."""
    L = len(a)
    rec = ScanRecord(name, L)
    slots = [Segment(float(a[t]), float(b[t]), t, t) for t in range(L)]
    rec.rows.append(slots)
    for r, pairs in enumerate(SCHEDULES[name](L), start=1):
        new = list(slots)
        for left, right in pairs:
            new[right] = combine(slots[left], slots[right])
            rec.combines.append(Combine(r, left, right))
        slots = new
        rec.rows.append(slots)
    return rec


def sequential_h(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The plain loop h_t = a_t h_(t-1) + b_t from h_(-1) = 0."""
    h, out = 0.0, []
    for a_t, b_t in zip(a, b):
        h = a_t * h + b_t
        out.append(h)
    return np.array(out)


def example_steps(L: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A small Mamba-like recurrence: a_t = exp(-Delta_t) with Delta_t in (0.1, 1), b_t ~ N(0, 1)."""
    rng = np.random.default_rng(seed)
    return np.exp(-rng.uniform(0.1, 1.0, L)), rng.standard_normal(L)


def _label(s: Segment) -> str:
    return str(s.first) if s.first == s.last else f"{s.first}:{s.last}"


def draw_record(ax, rec: ScanRecord, max_rounds: int, colour: str) -> None:
    by_round: dict[int, list[Combine]] = {}
    for c in rec.combines:
        by_round.setdefault(c.round, []).append(c)
    for r in range(1, rec.rounds + 1):
        changed = {c.right for c in by_round.get(r, [])}
        for t in range(rec.length):
            if t not in changed:  # carried to the next round unchanged
                ax.plot([t, t], [r - 1, r], color="#bbbbbb", lw=0.8, zorder=1)
        for c in by_round.get(r, []):
            ax.annotate("", xy=(c.right, r), xytext=(c.left, r - 1), zorder=2,
                        arrowprops=dict(arrowstyle="-|>", color=colour, lw=1.1, shrinkA=8, shrinkB=8))
            ax.annotate("", xy=(c.right, r), xytext=(c.right, r - 1), zorder=2,
                        arrowprops=dict(arrowstyle="-|>", color="black", lw=0.9, shrinkA=8, shrinkB=8))
    for r, row in enumerate(rec.rows):
        changed = {c.right for c in by_round.get(r, [])}
        for t, s in enumerate(row):
            active = r == 0 or t in changed
            ax.scatter([t], [r], s=330 if active else 60, color=colour if r and active else "white",
                       edgecolor="black" if active else "#999999", lw=0.8, zorder=3)
            if active:
                ax.text(t, r, _label(s), ha="center", va="center", fontsize=7 if s.first != s.last else 8,
                        color="white" if r else "black", zorder=4, fontweight="bold")
    if rec.name.startswith("work-efficient"):  # its two phases
        up = int(math.log2(rec.length))
        ax.axhline(up + 0.5, color="grey", lw=0.8, ls="--")
        for y, text in (((1 + up) / 2, "up-sweep\n(a reduction tree)"), ((up + 1 + rec.rounds) / 2, "down-sweep")):
            ax.annotate(text, xy=(1.01, y), xycoords=("axes fraction", "data"), rotation=90, ha="left",
                        va="center", fontsize=9, color="dimgrey", annotation_clip=False)
    ax.set_xlim(-0.7, rec.length - 0.3)
    ax.set_ylim(max_rounds + 0.6, -0.6)
    ax.set_xticks(range(rec.length))
    ax.set_yticks(range(max_rounds + 1))
    ax.set(xlabel="slot t (step of the sequence)", ylabel="round (combines in one round run in parallel)")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def scan_order_figure(setting: Setting, out: Path) -> Drawn:
    L = setting.cfg.scan.diagram_len
    a, b = example_steps(L, setting.cfg.seed)
    ref = sequential_h(a, b)
    recs = [run_scan(name, a, b) for name in SCHEDULES]
    diffs = {rec.name: float(np.abs(rec.h - ref).max()) for rec in recs}
    max_rounds = max(rec.rounds for rec in recs)
    fig, axes = plt.subplots(1, len(recs), figsize=(5.2 * len(recs), 0.62 * max_rounds + 2.6), sharey=True)
    colour = model_colour("mamba")
    for ax, rec in zip(axes, recs):
        draw_record(ax, rec, max_rounds, colour)
        ax.set_title(f"{rec.name}\n{rec.rounds} rounds, {len(rec.combines)} combines; "
                     f"max |h - loop| = {diffs[rec.name]:.1e}", fontsize=10)
    for ax in axes[1:]:
        ax.set_ylabel("")
    fig.suptitle(f"Three orders of combining the L = {L} steps of h_t = a_t h_(t-1) + b_t; a node's label "
                 "i:j is the segment of steps it holds (row 0: the steps themselves)", y=1.0)
    fig.tight_layout()
    png = save_figure(fig, out / "4a_scan_order.png")
    caption = (f"The scan of a length-{L} linear recurrence (a_t = exp(-Delta_t), Delta_t uniform in (0.1, 1), "
               f"b_t standard normal, seed {setting.cfg.seed}), run three ways in Python. Each diagram is drawn "
               f"from the combines actually performed: a green arrow brings the earlier segment, a black one the "
               f"later, and the node's label is the segment of steps its value now composes (grey lines: a slot "
               f"carried unchanged). The combine (a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2) is associative, so all "
               f"three end with the prefixes 0:t, i.e. h_t. The loop needs L - 1 = {L - 1} rounds; Hillis-Steele "
               f"{recs[1].rounds} rounds but {len(recs[1].combines)} combines; the work-efficient up-sweep/"
               f"down-sweep {recs[2].rounds} rounds and {len(recs[2].combines)} combines. Computed max |h - "
               f"sequential loop|: " + ", ".join(f"{k}: {v:.1e}" for k, v in diffs.items()) + ".")
    return Drawn("4a_scan_order", "The scan: sequential vs parallel combine order", caption, png)


# ---------------------------------------------------------------------------------------------------------------
# Memory of the backward: keep every state, or recompute

class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storage allocated while the mode is active (on any device; the CPU has no allocator
    statistics of its own): every op's outputs are counted when their storage first appears and uncounted when it
    is freed (weakref.finalize on the storage, which torch keeps alive exactly as long as the storage). Storages
    an op reads before any op made them (the inputs, and views of them) are not counted. Op-level resolution: a
    temporary made and freed inside one op is not seen."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._counted: set[int] = set()
        self._outside: set[int] = set()  # storages that existed before (read, never made, inside the mode)

    def _forget(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._counted.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for t in tree_flatten((args, kwargs))[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key not in self._counted and key not in self._outside:
                    self._outside.add(key)
                    weakref.finalize(storage, self._outside.discard, key)
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key, nbytes = storage.data_ptr(), storage.nbytes()
                if nbytes and key not in self._counted and key not in self._outside:
                    self._counted.add(key)
                    self.live += nbytes
                    weakref.finalize(storage, self._forget, key, nbytes)
        self.peak = max(self.peak, self.live)
        return out


def mamba_scan_inputs(batch: int, dim: int, N: int, L: int, seed: int) -> dict[str, torch.Tensor]:
    """Inputs shaped as the Mamba layer's scan sees them (input-dependent B and C, gate z, Delta bias and
    softplus), as leaves that need gradients."""
    g = torch.Generator().manual_seed(seed)
    t = {"u": torch.randn(batch, dim, L, generator=g), "delta": torch.randn(batch, dim, L, generator=g) - 2,
         "A": -torch.arange(1, N + 1).float().repeat(dim, 1), "B": torch.randn(batch, N, L, generator=g),
         "C": torch.randn(batch, N, L, generator=g), "D": torch.ones(dim), "z": torch.randn(batch, dim, L, generator=g),
         "delta_bias": torch.rand(dim, generator=g) - 4}
    return {k: v.requires_grad_() for k, v in t.items()}


def _chunk(u, delta, A, B, C, D, z, delta_bias, h):
    y, last = selective_scan_torch(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=True,
                                   return_last_state=True, initial_state=h)
    # clone: the torch backend's last state is a view into its last chunk's stacked states, and the next
    # chunk keeps it for its backward, which would keep all those states alive
    return y, last.clone()


def recompute_scan(u, delta, A, B, C, D, z, delta_bias, chunk: int) -> torch.Tensor:
    """The selective scan keeping only the state every `chunk` steps for the backward, which recomputes the states
    in between (torch.utils.checkpoint around the torch backend, one call per chunk); the fused kernels (the
    official mamba_ssm one, this repo's Triton backend with its 32-step checkpoints) do the same in registers."""
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    # split(), not slicing: its backward is one cat, not a zero-filled full-length gradient per chunk
    for parts in zip(*(x.split(chunk, dim=-1) for x in (u, delta, B, C, z))):
        u_c, d_c, B_c, C_c, z_c = parts
        y, h = checkpoint(_chunk, u_c, d_c, A, B_c, C_c, D, z_c, delta_bias, h, use_reentrant=False)
        ys.append(y)
    return torch.cat(ys, dim=-1)


VARIANTS = {
    "reference (loop; autograd keeps every state)":
        lambda x, chunk: selective_scan(**x, delta_softplus=True, backend="reference"),
    "torch backend (chunked; autograd keeps every chunk's states)":
        lambda x, chunk: selective_scan(**x, delta_softplus=True, backend="torch"),
    "recompute (keeps a state every {chunk} steps, recomputes the rest)":
        lambda x, chunk: recompute_scan(**x, chunk=chunk),
}


def measure(variant: str, inputs: dict[str, torch.Tensor], chunk: int) -> tuple[int, torch.Tensor, list]:
    """Peak tensor bytes of forward + backward (of y.sum()) above the inputs; and y and the input gradients."""
    for v in inputs.values():
        v.grad = None
    with PeakTensorMemory() as mem:
        y = VARIANTS[variant](inputs, chunk)
        y.sum().backward()
    grads = [v.grad.clone() for v in inputs.values()]
    return mem.peak, y.detach(), grads


def scan_memory_figure(setting: Setting, out: Path) -> Drawn:
    cfg = setting.cfg.scan
    names = list(VARIANTS)
    peaks: dict[str, dict[int, int]] = {n: {} for n in names}
    worst_y, worst_g = 0.0, 0.0
    for L in sorted(cfg.lengths):
        x = mamba_scan_inputs(cfg.batch, cfg.dim, cfg.d_state, L, setting.cfg.seed)
        results = {}
        for n in names:
            if n.startswith("reference") and L > cfg.reference_max_len:
                continue
            peak, y, grads = measure(n, x, cfg.chunk)
            peaks[n][L] = peak
            results[n] = (y, grads)
        base_y, base_g = next(iter(results.values()))
        for y, grads in results.values():
            worst_y = max(worst_y, float((y - base_y).abs().max()))
            worst_g = max(worst_g, max(float((g - b).abs().max() / b.abs().max().clamp_min(1e-30))
                                       for g, b in zip(grads, base_g)))

    Ls = np.array(sorted(cfg.lengths), dtype=float)
    states = 4.0 * cfg.batch * cfg.dim * cfg.d_state * Ls  # fp32 [batch, dim, N, L]
    io = 4.0 * Ls * cfg.batch * (4 * cfg.dim + 2 * cfg.d_state)  # u, delta, z, y and B, C (fp32)
    fig, ax = plt.subplots(figsize=(8.5, 5.4))
    c = model_colour("mamba")
    slopes = {}
    for i, n in enumerate(names):
        pts = sorted(peaks[n].items())
        if not pts:
            continue
        xs, ys = np.array([p[0] for p in pts], dtype=float), np.array([p[1] for p in pts], dtype=float)
        ax.loglog(xs, ys / 2 ** 20, color=c, ls=LINE_STYLES[i], marker="os^"[i], ms=5, lw=1.8,
                  label=n.format(chunk=cfg.chunk))
        if len(xs) > 1:
            slopes[n] = float(np.polyfit(np.log(xs), np.log(ys), 1)[0])
    ax.loglog(Ls, states / 2 ** 20, color="black", ls=":", lw=1.2, label="all hidden states [batch, dim, N, L], fp32")
    ax.loglog(Ls, io / 2 ** 20, color="grey", ls="--", lw=1.0, label="inputs and output (u, Delta, z, B, C, y), fp32")
    ax.set(xlabel="sequence length L (tokens, log scale)", ylabel="peak tensor memory, forward + backward (MiB, log)",
           title=f"Selective scan backward on the CPU: batch {cfg.batch}, {cfg.dim} channels, N = {cfg.d_state}")
    ax.set_xscale("log", base=2)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=1, frameon=False, fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    png = save_figure(fig, out / "4b_scan_memory.png")

    Lmax = int(Ls.max())
    at_max = {n: peaks[n].get(Lmax) for n in names}
    shared = [L for L in peaks[names[0]] if all(L in peaks[n] for n in names)]
    Lcmp = max(shared) if shared else None
    ratio = (f"At L = {Lcmp}: reference {peaks[names[0]][Lcmp] / 2 ** 20:.2f} MiB, torch backend "
             f"{peaks[names[1]][Lcmp] / 2 ** 20:.2f} MiB, recompute {peaks[names[2]][Lcmp] / 2 ** 20:.2f} MiB "
             f"({peaks[names[1]][Lcmp] / peaks[names[2]][Lcmp]:.1f}x less than the torch backend). ") if Lcmp else ""
    largest = ""
    if Lcmp != Lmax:  # the reference stopped before the longest length
        largest = (f"At the largest L = {Lmax}: " + ", ".join(
            f"{n.split(' (')[0]} " + (f"{v / 2 ** 20:.2f} MiB" if v else "not run") for n, v in at_max.items())
            + f" (the reference runs up to L = {cfg.reference_max_len}: its backward is slow). ")
    caption = (f"Peak memory of one selective scan's forward and backward (of y.sum()) against the sequence length, "
               f"with a Mamba layer's inputs (batch {cfg.batch}, {cfg.dim} channels, N = {cfg.d_state}, B and C "
               f"input-dependent, gate z, softplus Delta; fp32), measured on the CPU as the peak bytes of tensor "
               f"storage alive at any op boundary (a TorchDispatchMode that counts every op's new storages until "
               f"they are freed), inputs excluded, their gradients included. Log-log: a slope of 1 is memory linear "
               f"in L. The reference loop and the torch backend both keep all hidden states for the backward "
               f"(autograd saves every step's, or every chunk's, [.., N] tensors: the torch backend does not "
               f"recompute), so they grow with the dotted line; the recomputing version keeps one state every "
               f"{cfg.chunk} steps and recomputes the states in between during the backward, as the fused kernels "
               f"do, and grows with the inputs (dashed) instead. {ratio}Fitted slopes: "
               + ", ".join(f"{n.split(' (')[0]} {s:.2f}" for n, s in slopes.items())
               + ". " + largest + "At short L the recomputing scan's fixed part dominates: one chunk's "
               f"recomputation, which grows with the chunk. All variants agree: max |y difference| {worst_y:.1e}, "
               f"max relative gradient difference {worst_g:.1e}.")
    return Drawn("4b_scan_memory", "The scan's backward: store every state or recompute", caption, png)
