"""Several runs that differ only in their seed, trained as one batched ensemble (ssmbench.ensemble.EnsembleStep),
each still its own run.

    python -m ssmbench.ensemble_run scripts/studies/induction.txt --names a,b,c [override ...]

takes the same arguments as ssmbench.multirun (a study file, --names, overrides added to every run). The named
runs must differ only in `seed` (a clear error names the run and the keys otherwise). Each member keeps what the
solo command (`ssmbench <its arguments>`) would give it: its run id, its run folder, its checkpoint.pt and
progress.json in the solo formats (a member paused here continues solo, and a solo checkpoint continues here), its
log (<results_root>/<study>/logs/<name>.log, as multirun writes it) and its rows file, with the solo columns plus
`ensemble_k` (how many members this call trained together) and `ensemble_of` (their run ids); `step_mode` is
"ensemble".

- A member whose rows exist is skipped (as the CLI skips it). Members continue from their own checkpoints; the
  members share one schedule, so the ones still to train must all be at one step (an error names the runs and
  their steps otherwise: run them solo until they meet). A member whose training is over (checkpoint at
  trainer.steps) is only evaluated.
- Held-out checks every trainer.check_every steps, per member, on the solo run's check data (run.check_seed_of).
- A member reaching trainer.target_accuracy (or its trainer.max_train_time_s) stops, is evaluated, and its rows
  are written; one whose loss goes non-finite ends with status "nan"; the others go on as a smaller ensemble.
- trainer.max_time_s spent, or SIGTERM / SIGUSR2: every member still training checkpoints (status "paused") and
  no rows are written; the same command continues them. Exit codes as multirun's: 0 (also when paused by the
  time budget), 128 + signal when stopped by one, 1 when a member failed, 2 for a config error.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from .callbacks import OUTCOMES
from .checkpoint import CHECKPOINT, load_checkpoint, save_model
from .cli import open_run, store_rows
from .config import compose_config
from .ensemble import EnsembleStep, config_differences
from .evaluate import autocast_factory, evaluate_length
from .gpu_turns import GPU_TURNS
from .metrics import (
    free_cached_memory,
    peak_memory_bytes,
    reset_peak_memory,
    sample_memory,
    synchronize,
)
from .multirun import pause_all_on_signals, study_cli
from .run import (
    Prepared,
    RunConfigError,
    base_row,
    build_model,
    check_seed_of,
    error_rows,
    evaluated_rows,
    kept_model_meta,
    prepare,
    train_fields,
)
from .tracking import make_tracker
from .train import (
    STOP_ALL,
    TrainResult,
    _checkpoint,
    _restore,
    _StopRequest,
    check_scalars,
    note_grad_norm,
    note_kernel_options,
    record_check,
)

log = logging.getLogger("ssmbench")
STEP_MODE = "ensemble"


class EnsembleError(ValueError):
    """The named runs cannot be trained as one ensemble (they differ in more than the seed, or their checkpoints
    are at different steps); the message names the runs."""


@dataclass(eq=False)  # a member is itself: compared by identity
class Member:
    name: str
    cfg: DictConfig
    p: Prepared
    rid: str = ""
    folder: Path = Path()
    rows_file: Path = Path()
    label: str = ""
    desc: str = ""
    model: Any = None  # its LanguageModel: built from its seed, holds its weights for checks and evaluation
    gen: Any = None  # its training data generator
    res: TrainResult = field(default_factory=TrainResult)
    done: int = 0
    tracker: Any = None
    started: float = 0.0
    log_handler: Any = None


class _StepView:
    """What train._checkpoint / train._restore read from a TrainStep, for one member of an ensemble."""

    mode = STEP_MODE

    def __init__(self, state: dict | None = None):
        self.state, self.loaded = state, None

    def state_dict(self) -> dict:
        return self.state

    def load_state_dict(self, state: dict, step: int) -> None:
        self.loaded = state


class _ModelView:
    def __init__(self, state: dict):
        self.state = state

    def state_dict(self) -> dict:
        return self.state


class _MemberLog(logging.Handler):
    """A member's log file: the records tagged with its name, and the ensemble's own (untagged) records."""

    def __init__(self, path: Path, name: str):
        super().__init__()
        self.name_ = name
        path.parent.mkdir(parents=True, exist_ok=True)
        self.stream = path.open("a")
        self.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "member", self.name_) == self.name_:
            self.stream.write(self.format(record) + "\n")
            self.stream.flush()

    def close(self) -> None:
        self.stream.close()
        super().close()


def _info(m: Member, msg: str, *args) -> None:
    log.info(msg, *args, extra={"member": m.name})


# ---- setting up ------------------------------------------------------------------------------------------------
def _shape(p: Prepared) -> dict:
    """Everything that must be equal for runs to be trained as one ensemble: the identity (seed aside), the whole
    trainer (its per-call keys too: one loop serves all), the precision and the device."""
    ident = {k: v for k, v in p.identity.items() if k != "seed"}
    return {**ident, "trainer": dataclasses.asdict(p.trainer), "precision": p.precision, "device": str(p.device)}


def check_members(members: list[Member]) -> None:
    first = _shape(members[0].p)
    for m in members[1:]:
        diff = config_differences(first, _shape(m.p))
        if diff:
            raise EnsembleError(f"run {m.name!r} cannot join an ensemble with run {members[0].name!r}: ensemble "
                                f"members must differ only in their seed, but they differ in {'; '.join(diff)}")


def compose_members(runs: list[tuple[str, list[str]]], overrides: list[str]) -> list[Member]:
    members = []
    for name, args in runs:
        try:
            cfg = compose_config([*args, *overrides])
            p = prepare(cfg)
        except Exception as e:  # Hydra composition errors and our own checks alike
            raise RunConfigError(f"run {name!r}: {e}") from e
        members.append(Member(name, cfg, p))
    if not members:
        raise EnsembleError("no runs to train")
    check_members(members)
    return members


def _open(m: Member) -> bool:
    """The member's run id, folder and log, as the solo command (ssmbench.cli.open_run) derives them; False when
    its rows exist."""
    cfg, p = m.cfg, m.p
    # the log first: a skipped member says so in its own log, as the solo command would
    m.log_handler = _MemberLog(Path(cfg.results_root) / cfg.study / "logs" / f"{m.name}.log", m.name)
    logging.getLogger().addHandler(m.log_handler)
    opened = open_run(cfg, p, info=lambda msg, *args: _info(m, msg, *args))
    if opened is None:
        return False
    m.rid, m.rows_file, m.folder, m.label = opened
    m.desc = f"{p.model_cfg.name} {cfg.task.name} L={p.task.seq_len} seed={cfg.seed} [{m.rid}]"
    m.tracker = make_tracker(cfg.logger, m.folder, OmegaConf.to_yaml(cfg, resolve=True), m.rid, f"{m.label} [{m.rid}]")
    return True


def _build(m: Member) -> dict | None:
    """The member's model, built as ssmbench.run.execute builds it, and its data generator; restored from its
    checkpoint when there is one (returns the optimizer state then, else None)."""
    p = m.p
    m.started = time.perf_counter()
    m.gen = torch.Generator(device=p.device).manual_seed(p.cfg.seed)
    m.model = build_model(p)  # as a solo run's
    m.res = TrainResult(step_mode=STEP_MODE)
    ckpt = load_checkpoint(m.folder / CHECKPOINT, m.rid)
    if ckpt is None:
        note_kernel_options(m.res)
        return None
    view = _StepView()
    m.done = _restore(ckpt, m.model, view, m.gen, m.res, p.device)
    note_kernel_options(m.res)
    m.res.step_mode = ckpt.get("step_mode", STEP_MODE)  # how it was trained last, for one that is only evaluated
    _info(m, "run %s (%s) continues from its checkpoint at step %d", m.rid, m.label, m.done)
    return view.loaded


# ---- finishing a member --------------------------------------------------------------------------------------------
def _base_row(m: Member, ens_ids: list[str]) -> dict[str, Any]:
    """The columns ssmbench.run.execute gives every row of a run, plus the ensemble's."""
    return {**base_row(m.p, m.rid, m.p.cfg.study), "ensemble_k": len(ens_ids), "ensemble_of": list(ens_ids)}


def _evaluate(m: Member, ens_ids: list[str]) -> list[dict[str, Any]]:
    """The member's rows, as ssmbench.run.execute makes them after training (status ok or nan)."""
    p, res = m.p, m.res
    if res.status == "ok" and p.cfg.save_model:
        save_model(m.folder, m.model, kept_model_meta(p, m.rid, res.steps))
    return evaluated_rows(p, m.model, res, _base_row(m, ens_ids), train_fields(res, m.model.num_parameters()),
                          m.started)


def _error_rows(m: Member, ens_ids: list[str], e: BaseException) -> list[dict[str, Any]]:
    """As ssmbench.run.execute records a run that failed after validation."""
    params = m.model.num_parameters() if m.model is not None else 0
    return error_rows(m.p, _base_row(m, ens_ids), params, e, m.started)


def _write(m: Member, rows: list[dict[str, Any]]) -> None:
    """As ssmbench.cli.run_one stores a finished run's rows."""
    m.tracker.finish(rows)
    store_rows(rows, m.rid, m.rows_file, m.folder, m.label, info=lambda msg, *args: _info(m, msg, *args))


def _finish_training(m: Member, device: torch.device, trained: bool = True) -> None:
    """What train() does once a run's loop ends (its result fields; the checkpoint written by the caller)."""
    res = m.res
    if trained:
        res.step_mode, res.step_mode_reason = STEP_MODE, ""
    res.steps = m.done
    res.train_peak_mem_bytes = max(res.train_peak_mem_bytes, peak_memory_bytes(device))
    res.train_tokens_per_s = m.done * m.p.trainer.batch_size * m.p.task.seq_len / max(res.train_time_s, 1e-9)


# ---- the ensemble ---------------------------------------------------------------------------------------------------
def _ensemble(active: list[Member], states: list[dict | None], step: int) -> EnsembleStep:
    """An EnsembleStep of `active` (their models hold their weights), each member given its optimizer state."""
    p = active[0].p
    ens = EnsembleStep([m.model for m in active], p.task, p.trainer, p.device, p.precision)
    for i, (m, st) in enumerate(zip(active, states)):
        if st is not None:
            ens.load_member_state(i, {"model": m.model.state_dict(), "train_step": st}, step)
    return ens


def _sync_models(ens: EnsembleStep, active: list[Member]) -> None:
    for i, m in enumerate(active):
        m.model.load_state_dict(ens.member_model_state(i))


def _save(ens: EnsembleStep, i: int, m: Member, status: str) -> None:
    st = ens.member_state(i)
    _checkpoint(m.folder, m.rid, m.done, _ModelView(st["model"]), _StepView(st["train_step"]), m.gen, m.res,
                m.p.device, status)


def train_ensemble(members: list[Member]) -> str:
    """Train and evaluate the members (already opened, not finished); returns "paused" when the call paused, else
    "done". Rows of every member that finishes are written as it finishes."""
    trainer, device = members[0].p.trainer, members[0].p.device
    invocation_start = time.perf_counter()
    states = [_build(m) for m in members]
    ens_ids = [m.rid for m in members]
    over = [m for m in members if m.done >= trainer.steps]  # training over: evaluate only
    for m in over:
        _finish_training(m, device, trained=False)
        _write(m, _evaluate(m, ens_ids))
    pairs = [(m, s) for m, s in zip(members, states) if m.done < trainer.steps]
    if not pairs:
        return "done"
    active = [m for m, _ in pairs]
    steps = {m.done for m in active}
    if len(steps) > 1:
        at = ", ".join(f"{m.name} ({m.rid}) at step {m.done}" for m in active)
        raise EnsembleError(f"the members' checkpoints are at different steps: {at}; an ensemble steps its members "
                            "together from one step, so run them solo (python -m ssmbench.cli ...) until they are "
                            "at one step, or to the end")
    done = active[0].done
    log.info("ensemble of %d: %s, from step %d of %d", len(active), ", ".join(m.rid for m in active), done,
              trainer.steps)
    try:
        ens = _ensemble(active, [s for _, s in pairs], done)
    except ValueError as e:  # a layer vmap cannot batch, or a checkpoint that does not fit: nothing was trained
        raise EnsembleError(f"runs {', '.join(m.name for m in active)}: {e}") from e
    except Exception as e:
        free_cached_memory(device)
        for m in active:
            log.error("run %s failed (%s): %s", m.rid, "error", e, extra={"member": m.name})
            _write(m, _error_rows(m, ens_ids, e))
        return "done"
    reset_peak_memory(device)
    synchronize(device)
    segment_start = last_ckpt_time = time.perf_counter()
    last_ckpt_step = done
    paused = False

    def bank_time():
        nonlocal segment_start
        now = time.perf_counter()
        for m in active:
            m.res.train_time_s += now - segment_start
        segment_start = now

    def leave(gone: list[Member]) -> EnsembleStep | None:
        """Finish the members in `gone` (rows written), and rebuild the ensemble from the others' states."""
        nonlocal active, segment_start
        _sync_models(ens, active)
        kept = [(m, ens.member_state(i)["train_step"]) for i, m in enumerate(active) if m not in gone]
        for i, m in enumerate(active):
            if m in gone:
                _finish_training(m, device)
                if m.res.status == "ok":
                    _save(ens, i, m, "evaluating")
        for m in gone:
            _write(m, _evaluate(m, ens_ids))
        active = [m for m, _ in kept]
        if active:
            log.info("ensemble continues with %d: %s", len(active), ", ".join(m.rid for m in active))
        new = _ensemble(active, [s for _, s in kept], done) if active else None
        synchronize(device)
        segment_start = time.perf_counter()
        return new

    try:
        with _StopRequest() as stop:
            while active and done < trainer.steps:
                ens(ens.sample([m.gen for m in active]))
                done += 1
                for m in active:
                    m.done = done
                gone: list[Member] = []
                at_check = done % trainer.check_every == 0 and done < trainer.steps
                reads = None
                if at_check or done % trainer.log_every == 0 or done == trainer.steps:
                    reads = ens.meters.read()
                    bank_time()
                    sample_memory(device)
                    for m, r in zip(active, reads):
                        if r["first_bad_step"] >= 0:
                            bad = r["first_bad_step"] + 1
                            m.res.status, m.res.error = "nan", f"non-finite training loss at step {bad}"
                            m.done = bad
                            gone.append(m)
                        else:
                            m.res.final_train_loss, m.res.final_train_accuracy = r["last_loss"], r["last_accuracy"]
                            note_grad_norm(m.res, r["grad_norm_max"])
                if at_check:
                    peak = peak_memory_bytes(device)
                    _sync_models(ens, active)
                    for m, r in zip(active, reads):
                        if m in gone:
                            continue
                        m.res.train_peak_mem_bytes = max(m.res.train_peak_mem_bytes, peak)
                        g = torch.Generator(device=m.gen.device).manual_seed(check_seed_of(m.p.cfg.seed))
                        with GPU_TURNS.shared():
                            check = evaluate_length(m.model, m.p.task, m.p.task.seq_len, g, batches=1,
                                                    batch_size=trainer.check_batch_size or trainer.batch_size,
                                                    max_tokens=1 << 62, device=device,
                                                    autocast=autocast_factory(device, m.p.precision))
                        norm = record_check(m.res, done, check)
                        _info(m, "%s step %d/%d: held-out accuracy %.4f loss %.4f | training loss %.4f (last %d "
                              "steps)%s", m.desc, done, trainer.steps, check["accuracy"], check["loss"], r["loss"],
                              r["steps"], norm)
                        m.tracker.scalars(done, check_scalars(m.res, r))
                        if trainer.target_accuracy is not None and check["accuracy"] >= trainer.target_accuracy:
                            m.res.stopped_early = True
                            gone.append(m)
                    synchronize(device)
                    segment_start = time.perf_counter()
                now = time.perf_counter()
                if trainer.max_train_time_s is not None:
                    for m in active:
                        if m not in gone and m.res.train_time_s + (now - segment_start) > trainer.max_train_time_s:
                            m.res.stopped_early = True
                            gone.append(m)
                if gone:
                    if reads is None:  # the members leaving need their last step's loss: one read for all
                        reads = ens.meters.read()
                        for m, r in zip(active, reads):
                            if r["steps"]:
                                m.res.final_train_loss, m.res.final_train_accuracy = r["last_loss"], r["last_accuracy"]
                                note_grad_norm(m.res, r["grad_norm_max"])
                    synchronize(device)
                    bank_time()
                    ens = leave(gone)
                    if not active:
                        break
                    now = time.perf_counter()
                out_of_budget = trainer.max_time_s is not None and now - invocation_start > trainer.max_time_s
                if done < trainer.steps and (out_of_budget or stop.requested or STOP_ALL.is_set()):
                    paused = True
                    break
                every_s, every_steps = trainer.checkpoint_every_s, trainer.checkpoint_every_steps
                due = (every_s is not None and now - last_ckpt_time > every_s) or \
                      (every_steps is not None and done - last_ckpt_step >= every_steps)
                if due and done < trainer.steps:
                    synchronize(device)
                    bank_time()
                    for i, m in enumerate(active):
                        _save(ens, i, m, "running")
                    last_ckpt_time, last_ckpt_step = time.perf_counter(), done
                    segment_start = last_ckpt_time
            if active:
                synchronize(device)
                for m, r in zip(active, ens.meters.read()):
                    if r["steps"]:
                        m.res.final_train_loss, m.res.final_train_accuracy = r["last_loss"], r["last_accuracy"]
                        note_grad_norm(m.res, r["grad_norm_max"])  # a pause keeps it for the next check
                bank_time()
                _sync_models(ens, active)
                for i, m in enumerate(active):
                    _finish_training(m, device)
                    if m.res.status != "nan":
                        m.res.status = "paused" if paused else "ok"
                        _save(ens, i, m, "paused" if paused else "evaluating")
                if paused:
                    for m in active:
                        _info(m, "run %s (%s) paused at step %d of %d (trainer.max_time_s=%s spent, or SIGTERM); "
                              "checkpoint at %s: run the same command again to continue", m.rid, m.label, m.done,
                              trainer.steps, trainer.max_time_s, m.folder / CHECKPOINT)
                        OUTCOMES.append(("paused", f"{m.label} at step {m.done}/{trainer.steps}", str(m.folder)))
                else:
                    for m in active:
                        _write(m, _evaluate(m, ens_ids))
        if paused:
            stop.forward()
    except Exception as e:  # a failure while training is every training member's result, as for a solo run
        free_cached_memory(device)
        log.exception("ensemble %s failed", ", ".join(m.rid for m in active))
        for m in active:  # (error_rows logs each run's failure)
            _write(m, _error_rows(m, ens_ids, e))
        return "done"
    return "paused" if paused else "done"


def run_ensemble(runs: list[tuple[str, list[str]]], overrides: list[str]) -> str:
    """Compose and check every run (errors before any training), then train the ones not finished as one
    ensemble. Returns "paused", "done", or "skipped" when every run had its rows."""
    members = compose_members(runs, overrides)
    todo = []
    try:
        for m in members:
            if _open(m):
                todo.append(m)
        if not todo:
            return "skipped"
        return train_ensemble(todo)
    finally:
        for m in members:
            if m.log_handler is not None:
                logging.getLogger().removeHandler(m.log_handler)
                m.log_handler.close()


def main(argv: list[str] | None = None) -> int:
    runs, overrides = study_cli("python -m ssmbench.ensemble_run", __doc__.splitlines()[0],
                                "only these runs of the file, comma-separated (they must differ only in seed)", argv)
    received = pause_all_on_signals()  # the members checkpoint and pause, then the process ends
    try:
        run_ensemble(runs, overrides)
    except (RunConfigError, EnsembleError) as e:
        print(f"ssmbench.ensemble_run: config error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        print(f"ssmbench.ensemble_run: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if received:
        print(f"ssmbench.ensemble_run: stopped by signal {received[0]}; every member checkpointed", file=sys.stderr)
        return 128 + received[0]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
