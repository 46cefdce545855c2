"""scripts/pieces_throughput.py: steps per piece and per call, read from the logs gpu_parallel.sh writes."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pieces_throughput.py"


def _pause(time, run, model, step, budget):
    return (f"[2026-11-30 {time},123][ssmbench][INFO] - run {run} ({model} on selective_copy, seed 0) paused at "
            f"step {step} of 50000 (trainer.max_time_s={budget} spent, or SIGTERM); checkpoint at x: run the same")


def test_steps_per_piece_and_per_call(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text("\n".join([
        "# 2026-11-30T18:00:00Z gpu 0 of 1 (CUDA_VISIBLE_DEVICES=1)",
        _pause("18:02:01", "aaaa", "mamba", 1000, "390.0"),
        "some other line",
        "# 2026-11-30T18:13:00Z gpu 1 of 2",
        _pause("18:21:30", "aaaa", "mamba", 3500, "505.0"),
    ]))
    (logs / "b.log").write_text("\n".join([
        "# 2026-11-30T18:00:00Z gpu 0 of 1 (CUDA_VISIBLE_DEVICES=1)",
        _pause("18:02:40", "bbbb", "s4", 600, "390.0"),
        "# 2026-11-30T18:13:00Z gpu 0 of 2",
        _pause("18:22:10", "bbbb", "s4", 2000, "505.0"),
    ]))
    for rid, step, status in (("aaaa", 3500, "paused"), ("bbbb", 2000, "paused"), ("cccc", 50000, "ok")):
        run = tmp_path / "runs" / rid
        run.mkdir(parents=True)
        (run / "progress.json").write_text(f'{{"status": "{status}", "step": {step}}}')
        (run / "run.json").write_text('{"steps": 50000}')
    out = tmp_path / "pieces.csv"
    res = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--out", str(out)],
                         capture_output=True, text=True, check=True)
    lines = res.stdout.splitlines()
    assert lines[1].split() == ["2026-11-30", "18:02", "390", "1", "2", "1600", "4.1"]
    assert lines[2].split() == ["2026-11-30", "18:21", "505", "2", "2", "3900", "7.7"]
    # what is left: (50000 - 3500) + (50000 - 2000) steps at the last call's 3900 / 505 steps/s
    assert lines[3].startswith("left: 94,500 steps in 2 unfinished runs; at the last call's 7.7 steps/s (on 2 GPU(s)), "
                               "204 minutes")
    csv = out.read_text().splitlines()
    assert csv[0] == "log,run_id,model,seed,ended,budget_s,gpus,step,steps_in_piece"
    assert "a.log,aaaa,mamba,0,2026-11-30 18:21,505.0,2,3500,2500" in csv


def test_a_folder_without_logs_is_named(tmp_path):
    res = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 2 and f"no logs/ folder in {tmp_path}" in res.stderr
