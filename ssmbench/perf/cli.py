"""Hydra apps of the profiler, and its report:

    ssmbench-profile                          # kernel timings, the H200 sweep (conf/profile/kernels.yaml)
    ssmbench-profile profile=targets          # the kernels' speed targets beside the official kernel's times
    ssmbench-profile profile=cpu_smoke        # the same at toy sizes, CPU-friendly (seconds)
    ssmbench-profile 'lengths=[1024,4096]' 'dtypes=[bf16,fp32]' 'shapes=[{batch:8,dim:1536,d_state:16}]'
    ssmbench-profile 'backends.attention=[sdpa_flash]' 'backends.s4_fft_conv=[]'   # choose / drop backends
    ssmbench-profile -m 'dtypes=[bf16],[fp32]'  # any key sweeps (Hydra multirun); rows of all jobs in one study
    ssmbench-generate                         # decode throughput, Mamba vs Transformer (conf/generation/h200.yaml)
    ssmbench-generate generation=cpu_smoke
    ssmbench-taskbench                        # generator time vs a training step, every reproduction experiment
    ssmbench-taskbench taskbench=cpu_smoke
    ssmbench-profile-report results/kernels   # tables and plots (each app also writes its report at the end)

Rows go to <results_root>/<study>/rows/*.json (studies: kernels, kernel_targets, generation, generators);
Hydra's own logs to <results_root>/<study>/hydra/. Without the console scripts installed: `python -m
ssmbench.perf.cli {kernels,generate,taskbench,report} [overrides...]`. Schemas: ssmbench/perf/kernels.py
(ProfileConfig), ssmbench/perf/generation.py (GenerationConfig), ssmbench/perf/tasks.py (TaskBenchConfig); a
mistyped key or a wrong type fails before any work, naming the key.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from .generation import GenerationConfig, GenerationConfigError, run_generation
from .kernels import ProfileConfig, ProfileConfigError, run_profile
from .official import default_csv
from .tasks import TaskBenchConfig, run_taskbench

log = logging.getLogger("ssmbench.profile")


def register_profile_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="profile_schema", node=ProfileConfig)
    cs.store(name="generation_schema", node=GenerationConfig)
    cs.store(name="taskbench_schema", node=TaskBenchConfig)


register_profile_configs()


def compose_profile(overrides: list[str]) -> ProfileConfig:
    """The profiler's config as `ssmbench-profile <overrides>` composes it (e.g. ["profile=targets"]), as the
    schema's object. Works inside a running Hydra app and outside one (tests, scripts)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    if GlobalHydra.instance().is_initialized():
        cfg = compose(config_name="profile", overrides=overrides)
    else:
        with initialize_config_module(config_module="ssmbench.conf", version_base="1.3"):
            cfg = compose(config_name="profile", overrides=overrides)
    return OmegaConf.to_object(cfg)


def _report(cfg, official: str | None = None) -> None:
    from .report import write_profile_report
    folder = Path(cfg.results_root) / cfg.study
    try:
        write_profile_report(folder, official)
        log.info("report: %s", folder / "summary.md")
    except Exception as e:  # the rows are the result; a report can be rebuilt with ssmbench-profile-report
        log.error("report of %s failed: %s: %s", folder, type(e).__name__, e)


def _fail(app: str, e: Exception) -> None:
    print(f"{app}: config error: {e}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="pkg://ssmbench.conf", config_name="profile")
def _profile_app(cfg: DictConfig) -> None:
    obj: ProfileConfig = OmegaConf.to_object(cfg)
    try:
        run_profile(obj)
    except ProfileConfigError as e:
        _fail("ssmbench-profile", e)
    if obj.report:
        _report(obj, obj.official_csv or default_csv())


@hydra.main(version_base="1.3", config_path="pkg://ssmbench.conf", config_name="generation")
def _generate_app(cfg: DictConfig) -> None:
    obj: GenerationConfig = OmegaConf.to_object(cfg)
    try:
        run_generation(obj)
    except (GenerationConfigError, ProfileConfigError) as e:
        _fail("ssmbench-generate", e)
    if obj.report:
        _report(obj)


@hydra.main(version_base="1.3", config_path="pkg://ssmbench.conf", config_name="taskbench")
def _taskbench_app(cfg: DictConfig) -> None:
    obj: TaskBenchConfig = OmegaConf.to_object(cfg)
    run_taskbench(obj)
    if obj.report:
        _report(obj)


def profile_main() -> None:
    _profile_app()


def generate_main() -> None:
    _generate_app()


def taskbench_main() -> None:
    _taskbench_app()


def report_main(argv: list[str] | None = None) -> None:
    from .report import main
    main(argv)


APPS = {"kernels": profile_main, "generate": generate_main, "taskbench": taskbench_main, "report": report_main}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in APPS:
        print(f"usage: python -m ssmbench.perf.cli {{{','.join(APPS)}}} [overrides or arguments...]",
              file=sys.stderr)
        sys.exit(2)
    app = sys.argv.pop(1)
    APPS[app]()
