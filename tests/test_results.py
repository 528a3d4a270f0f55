"""`rlhf eval`: the results table of base, SFT, PPO and the RM on a micro workspace, every
policy column filled with its interval and n; bad run directories get a clear error."""

from __future__ import annotations

import json
import math

import pytest

from rlhf import ppo
from rlhf.breakdown import KINDS
from rlhf.cli import main
from rlhf.metrics import METRICS
from rlhf.results import RM_METRICS, TAX
from rlhf.runs import find_done, latest_done


@pytest.fixture(scope="module")
def runs(rm_ready):
    cfg = rm_ready
    policy = ppo.train(cfg, progress=False)
    base = find_done(cfg, "pretrain", ("world", "pretrain"))
    sft = find_done(cfg, "sft", ("world", "pretrain", "sft"))
    return cfg, [base.dir, sft.dir, latest_done(cfg, "rm").dir, policy.dir]


def test_eval_writes_a_table_with_every_figure_and_its_interval(runs, tmp_path, capsys):
    cfg, dirs = runs
    out = tmp_path / "results"
    argv = ["eval", "--recipe", "micro", "--workspace", str(cfg.workspace_dir), "--out", str(out)]
    again = f"{dirs[-1]}/."  # the PPO run named a second time: one row, not two
    assert main([*argv, "--runs", *map(str, dirs), again]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "results.json").read_text())
    assert data["labels"] == ["base", "SFT", "RM", "PPO"]  # the order of --runs
    n_test = data["n_test_prompts"]
    for label in ("base", "SFT", "PPO"):
        row = data["rows"][label]
        for name in (*METRICS, *TAX):
            ci = row[name]
            assert ci["n"] > 0, (label, name)
            assert ci["lo"] <= ci["mean"] <= ci["hi"] or math.isnan(ci["lo"]), (label, name, ci)
        assert row["likert"]["n"] == row["win_rate"]["n"] == n_test
        assert 1 <= row["likert"]["mean"] <= 7 and row["perplexity"]["mean"] > 1
    assert data["rows"]["SFT"]["win_rate"]["mean"] == 0.5  # SFT against itself: all ties
    for name in RM_METRICS:
        assert 0 <= data["rows"]["RM"][name]["mean"] <= 1 and data["rows"]["RM"][name]["n"] > 0
    curve = data["overoptimisation"]["PPO"]  # the fixed-batch probe of the PPO run
    assert [r["step"] for r in curve] == [1, 3] and abs(curve[0]["overopt/kl"]) < 1e-4
    assert "vega" in (out / "overoptimisation.html").read_text()
    md = (out / "results.md").read_text()
    assert md.splitlines()[0].startswith("| run | win_rate | likert")
    assert "| PPO | " in md and str(dirs[-1]) in md and "| PPO | " in printed
    # Where PPO's win rate comes from: only trained policies, the same win rate, every prompt
    where = data["win_breakdown"]
    assert list(where) == ["PPO"]
    assert where["PPO"]["all"]["win_rate"] == pytest.approx(data["rows"]["PPO"]["win_rate"]["mean"])
    assert sum(where["PPO"]["all"][k] for k in KINDS) == n_test
    assert (
        "## Where the win rate comes from" in md and "## Where the win rate comes from" in printed
    )


def test_eval_rejects_a_directory_that_is_not_a_finished_run(runs, tmp_path, capsys):
    cfg, _ = runs
    ws = ["--recipe", "micro", "--workspace", str(cfg.workspace_dir)]
    assert main(["eval", *ws, "--runs", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    other = ["--recipe", "tiny", "--workspace", str(cfg.workspace_dir)]  # micro runs, tiny world
    assert main(["eval", *other, "--runs", str(runs[1][0])]) == 2
    assert "made on another world than recipe 'tiny' builds" in capsys.readouterr().err
