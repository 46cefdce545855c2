"""Run ids of the studies in progress must not move: a run's checkpoint is found by its id, so a change that alters
the id of an existing config (a new config key, a renamed one) orphans every paused run of that config."""

from pathlib import Path

import pytest

from ssmbench.multirun import read_study
from ssmbench.results import run_id
from ssmbench.run import prepare

from .helpers import compose_cfg

STUDIES = Path(__file__).resolve().parents[2] / "scripts" / "studies"
# results/<study>/runs/<id>: runs trained on the GPU across sessions (Table 11 finished, its models kept by id;
# the attention retries and Table 1 in progress), by study file and run name (the arguments are read from the
# study file, so the file and the ids are checked together)
IN_PROGRESS = {
    ("induction.txt", "mamba"): "e19929bb17a1fa13",
    ("induction.txt", "transformer_abs"): "2e3d18f5ec7b429a",
    ("induction.txt", "transformer"): "18eac46be048348c",
    ("induction.txt", "transformer_xpos"): "d0b58e27b9aa33d5",
    ("induction.txt", "h3"): "b8f883662e072149",
    ("induction.txt", "hyena"): "b3ae99a7114c73a2",
    ("induction.txt", "mamba_s1"): "1b79615d384ca197",
    ("induction.txt", "mamba_s2"): "743928f141a08baa",
    ("induction.txt", "transformer_abs_b64"): "7ecfd23a9aaf19f1",
    ("induction.txt", "transformer_b64"): "f12768e62b1453c9",
    ("induction.txt", "transformer_abs_learned"): "071a477d54f18ba6",
    ("induction.txt", "transformer_abs_learned_b64"): "575294201962b2a2",
    ("induction.txt", "transformer_lr1e4"): "39b5ffb7bffa6b12",
    ("induction.txt", "transformer_abs_learned_lr1e4"): "d7f968b0299ee38c",
    ("induction.txt", "transformer_xpos_s1"): "c6d4d2c1cc2b724c",
    ("induction.txt", "transformer_lr1e4_s1"): "06c58952e2f70ef4",
    ("induction.txt", "transformer_abs_learned_lr1e4_s1"): "49c7b260f4c7a8fa",
    ("induction.txt", "h3_s1"): "5747725ae6b3dae9",
    ("induction.txt", "hyena_s1"): "958a64851d7945d8",
    ("table1.txt", "s4"): "2425c9f14a2a559b",
    ("table1.txt", "s6_nogate"): "d97b6caad1fec431",
    ("table1.txt", "h3"): "fe46f9ecf6fe3341",
    ("table1.txt", "hyena"): "b3c90da3cfa93627",
    ("table1.txt", "s6_h3"): "843ae24443eced6e",
    ("table1.txt", "mamba_s4"): "6bf567f41280d476",
    ("table1.txt", "mamba_hyena"): "c5b052574ae40a3b",
    ("table1.txt", "mamba"): "06ba1efcab6da2bb",
    ("table1.txt", "transformer"): "87f6f72de57d3803",
    ("table1.txt", "lstm"): "ea977398e87b94db",
    ("table1.txt", "s6_nogate_s1"): "ecadf1aa63ea56ba",
    ("table1.txt", "s6_h3_s1"): "651e9ee006f4c1d1",
    ("table1.txt", "mamba_s1"): "81b88c5d46a5f3df",
    ("table1.txt", "mamba_lr1e3"): "60824a63191064e6",
    ("table1.txt", "mamba_s4_lr1e3"): "6956fd5e99060746",
    ("table1.txt", "mamba_hyena_lr1e3"): "6e7401402b33deea",
    ("table1.txt", "s6_nogate_lr1e3"): "c92c08b5358a418f",
    ("table1.txt", "s6_h3_lr1e3"): "b6e8704b5811e3b5",
    ("table1.txt", "s4_lr1e3"): "0757950ef8354116",
    ("table1.txt", "h3_lr1e3"): "71ddc9efedf9a05c",
    ("table1.txt", "hyena_lr1e3"): "7c403630a99bec85",
    ("table1.txt", "mamba_lr1e3_s1"): "6c62966d1d1752cf",
    ("table1.txt", "s6_h3_lr1e3_s1"): "16962304d857d7e0",
    ("table1.txt", "s6_nogate_lr1e3_s1"): "42cf578e467cde9a",
}


def study_args(study: str, name: str) -> list[str]:
    args = dict(read_study(STUDIES / study)).get(name)
    assert args is not None, f"no run {name!r} in scripts/studies/{study}"
    return args


@pytest.mark.parametrize("run,expected", IN_PROGRESS.items(), ids=lambda v: "/".join(v) if isinstance(v, tuple) else v)
def test_run_ids_of_runs_in_progress_are_stable(run, expected):
    p = prepare(compose_cfg([*study_args(*run), "device=cpu"]))
    identity = {**p.identity, "device": "cuda"}  # they run on the GPU
    assert run_id(identity) == expected, (
        "this change moves the run id of a paused study run: its checkpoint under results/<study>/runs/"
        f"{expected} would no longer be found. Keep old ids (e.g. leave a new key out of the identity while it "
        "has its default) or move the run folders to their new ids and update this test.")
