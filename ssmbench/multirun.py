"""Several runs in one process, one thread each, each on its own CUDA stream.

Processes sharing a GPU take turns on it (time-slicing): k runs of a small model, each of whose steps leaves
most of the GPU idle, advance together no faster than one. Threads of one process share one CUDA context, so
the kernels and graph replays of their streams can run at the same time. Every run is still an ordinary run
(`ssmbench.cli.run_one`): its own seed, data, optimizer, checkpoint, time budget and rows, exactly as
`ssmbench <its arguments>` would do it; only the process is shared. Whether this beats separate processes, or
processes under MPS, is measured, not assumed: scripts/gpu_sharing_modes.sh (gpu_parallel.sh THREADS=1 is how
studies use it).

    python -m ssmbench.multirun scripts/studies/induction.txt [--names mamba,h3] [override ...]

reads a study file (one run a line: a name, then its `ssmbench` arguments; `#` comments), adds the overrides
to every run, and writes each run's log to <results_root>/<study>/logs/<name>.log, as gpu_parallel.sh does.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from contextlib import nullcontext
from pathlib import Path

import torch
from omegaconf import DictConfig

from .cli import run_one
from .config import compose_config
from .run import RunConfigError, prepare
from .train import STOP_ALL

log = logging.getLogger("ssmbench")


def read_study(path: str | Path) -> list[tuple[str, list[str]]]:
    """The (name, arguments) of each run of a study file; a repeated name is an error (logs would mix)."""
    runs: list[tuple[str, list[str]]] = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, *args = line.split()
        if any(name == n for n, _ in runs):
            raise ValueError(f"{path}:{i}: run name {name!r} appears twice")
        runs.append((name, args))
    return runs


class _ThreadLog(logging.Handler):
    """Writes the records of one thread (one run) to that run's log file."""

    def __init__(self, path: Path, thread_id: int):
        super().__init__()
        self.thread_id = thread_id
        self.stream = path.open("a")
        self.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread_id:
            self.stream.write(self.format(record) + "\n")
            self.stream.flush()

    def close(self) -> None:
        self.stream.close()
        super().close()


def _train(name: str, cfg: DictConfig, log_path: Path, errors: dict[str, str]) -> None:
    handler = _ThreadLog(log_path, threading.get_ident())
    logging.getLogger().addHandler(handler)
    try:
        device = str(cfg.device)
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        # the thread's own stream: torch's current stream is per thread, so everything this run launches
        # (its graph replays included) goes there, beside the other runs' streams
        with torch.cuda.stream(torch.cuda.Stream()) if cuda else nullcontext():
            run_one(cfg)
    except BaseException as e:  # one run's failure must not stop the others; the process exits non-zero
        log.exception("run %s failed: %s", name, e)
        errors[name] = f"{type(e).__name__}: {e}"
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def run_threads(runs: list[tuple[str, list[str]]], overrides: list[str]) -> dict[str, str]:
    """Compose and check every run's config first (a config error stops all before any work, naming the run),
    then train them in threads; returns {name: error} for the runs that failed."""
    cfgs = []
    for name, args in runs:
        try:
            cfg = compose_config([*args, *overrides])
            prepare(cfg)
        except Exception as e:  # Hydra composition errors and our own checks alike
            raise RunConfigError(f"run {name!r}: {e}") from e
        cfgs.append((name, cfg))
    errors: dict[str, str] = {}
    threads = []
    for name, cfg in cfgs:
        log_dir = Path(cfg.results_root) / cfg.study / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        t = threading.Thread(target=_train, args=(name, cfg, log_dir / f"{name}.log", errors),
                             name=f"run-{name}")
        t.start()
        threads.append(t)
    for t in threads:
        while t.is_alive():  # a timed join, so that the main thread gets to run signal handlers meanwhile
            t.join(0.5)
    return errors


def study_cli(prog: str, description: str, names_help: str, argv: list[str] | None
              ) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """The command line of the study drivers (this one, ssmbench.ensemble_run): a study file, --names, overrides
    added to every run, in any order. Returns (the runs asked for, the overrides); argparse errors name the
    study file or the unknown names. Sets up logging."""
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("study", help="a study file: one run a line, a name and then its ssmbench arguments")
    ap.add_argument("--names", help=names_help)
    ap.add_argument("overrides", nargs="*", help="added to every run, e.g. trainer.max_time_s=400")
    a = ap.parse_intermixed_args(argv)  # the study, --names and the overrides in any order
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        runs = read_study(a.study)
    except (OSError, ValueError) as e:
        ap.error(f"study file: {e}")
    if a.names:
        names = [n for n in a.names.split(",") if n]
        unknown = sorted(set(names) - {n for n, _ in runs})
        if unknown:
            ap.error(f"--names: no run {', '.join(map(repr, unknown))} in {a.study}")
        runs = [r for r in runs if r[0] in names]
    return runs, a.overrides


def pause_all_on_signals() -> list[int]:
    """SIGTERM and SIGUSR2 (what a cluster sends before it stops a job) make every run checkpoint and pause
    (train.STOP_ALL); returns the list the signals received are appended to, for the exit code 128 + signal."""
    received: list[int] = []

    def on_signal(signum, frame):
        received.append(signum)
        STOP_ALL.set()

    for sig in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, on_signal)
    return received


def main(argv: list[str] | None = None) -> int:
    runs, overrides = study_cli("python -m ssmbench.multirun", __doc__.splitlines()[0],
                                "only these runs of the file, comma-separated", argv)
    received = pause_all_on_signals()
    try:
        errors = run_threads(runs, overrides)
    except RunConfigError as e:
        print(f"ssmbench.multirun: config error: {e}", file=sys.stderr)
        return 2
    for name, err in errors.items():
        print(f"run {name} failed: {err}", file=sys.stderr)
    if received:  # as a single run does: the process ends as the signal meant, its runs paused and resumable
        print(f"ssmbench.multirun: stopped by signal {received[0]}; every run checkpointed", file=sys.stderr)
        return 128 + received[0]
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
