"""`rlhf pipeline` end to end on the micro recipe, and the paper's claims (rlhf.claims) on
hand-made results tables: each held, not held, or not checked when a run is missing."""

from __future__ import annotations

import json
from pathlib import Path

from rlhf.claims import check_claims
from rlhf.cli import main
from rlhf.metrics import METRICS
from rlhf.results import TAX
from rlhf.runs import Run, read_eval


def ci(mean: float, n: int = 10) -> dict[str, float]:
    return {"mean": mean, "lo": mean - 0.05, "hi": mean + 0.05, "n": n}


def table(**overrides) -> dict:
    rows = {
        "base": {
            "win_rate": ci(0.1),
            "perplexity": ci(2.0),
            "hallucination": ci(0.7),
            "truthful": ci(0.1),
            "toxicity/plain": ci(0.8),
            "toxicity/respectful": ci(0.7),
        },
        "SFT": {
            "win_rate": ci(0.5),
            "perplexity": ci(2.8),
            "hallucination": ci(0.1),
            "truthful": ci(0.3),
            "toxicity/plain": ci(0.4),
            "toxicity/respectful": ci(0.1),
        },
        "PPO": {
            "win_rate": ci(0.6),
            "perplexity": ci(3.0),
            "hallucination": ci(0.1),
            "truthful": ci(0.4),
            "toxicity/plain": ci(0.3),
            "toxicity/respectful": ci(0.05),
        },
        "PPO-ptx": {
            "win_rate": ci(0.58),
            "perplexity": ci(2.2),
            "hallucination": ci(0.2),
            "truthful": ci(0.35),
            "toxicity/plain": ci(0.3),
            "toxicity/respectful": ci(0.0),
        },
    }
    for key, value in overrides.items():
        label, metric = key.split("__")
        rows[label.replace("_", "-")][metric.replace("_slash_", "/")] = value
    return {"rows": rows}


def test_every_claim_holds_on_a_table_that_follows_the_paper():
    claims = check_claims(table())
    assert len(claims) == 7 and all(c.held for c in claims), [c.line() for c in claims]
    assert claims[3].evidence.startswith("PPO-ptx 2.200 [2.150, 2.250], PPO 3.000")


def test_each_claim_fails_when_its_numbers_say_so():
    cases = {
        1: {"PPO__win_rate": ci(0.45)},  # PPO loses to SFT
        3: {"PPO_ptx__perplexity": ci(3.5)},  # the pretraining mix did not help
        4: {"PPO__hallucination": ci(0.9)},  # PPO hallucinates more than base
        5: {"SFT__truthful": ci(0.05)},
        6: {"base__toxicity_slash_respectful": ci(0.2)},  # base's drop (0.6) beats aligned
    }
    for index, change in cases.items():
        claims = check_claims(table(**change))
        assert [i for i, c in enumerate(claims) if not c.held] == [index], change
        assert "NOT held" in claims[index].line()


def test_a_claim_without_its_runs_is_not_checked():
    results = table()
    del results["rows"]["PPO-ptx"], results["rows"]["base"]
    verdicts = {c.text: c.held for c in check_claims(results)}
    assert verdicts["PPO beats SFT (win rate above 50%)"] is True
    assert verdicts["PPO-ptx beats SFT (win rate above 50%)"] is None
    assert sum(v is None for v in verdicts.values()) == 6  # all but PPO's win rate


PAPER = ["base", "SFT", "RM", "PPO", "PPO-ptx"]
EXTRAS = ["DPO", "GRPO", "PPO-ptx+LoRA"]  # micro's pipeline.extras: dpo, grpo, lora


def test_pipeline_on_micro_runs_every_stage_then_the_table_and_claims(tmp_path, capsys):
    ws = ["--recipe", "micro", "--workspace", str(tmp_path)]
    assert main(["pipeline", *ws]) == 0
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "results" / "results.json").read_text())
    assert data["labels"] == PAPER + EXTRAS
    for label in ("base", "SFT", "PPO", "PPO-ptx", *EXTRAS):  # every column filled, with its n
        assert all(data["rows"][label][m]["n"] > 0 for m in (*METRICS, *TAX)), label
    stages = {label: Run.open(data["runs"][label]) for label in EXTRAS}
    assert [r.stage for r in stages.values()] == ["dpo", "grpo", "ppo"]
    lora = stages["PPO-ptx+LoRA"].config.ppo
    assert lora.lora_r == 8 and lora.ptx_coef > 0  # PPO-ptx with LoRA (pipeline.lora_r)
    assert Run.open(data["runs"]["PPO-ptx"]).config.ppo.lora_r == 0
    # Each extra (and PPO) compared with PPO-ptx, in the printout and in results.md.
    assert list(data["versus"]["rows"]) == sorted(["PPO", *EXTRAS])
    paired = f"(paired over {data['n_test_prompts']} test prompts)"
    assert "## Compared with PPO-ptx" in out and out.count(paired) == 4
    md = (tmp_path / "results" / "results.md").read_text()
    assert "| PPO-ptx+LoRA | " in md and "- GRPO: win rate vs SFT" in md
    assert "The paper's claims on this table:" in out and out.count("held] ") == 7
    # The last lines open this workspace, not the default one, without an activated venv.
    assert out.rstrip().endswith(
        f"Notebooks: make notebook RLHF_WORKSPACE={tmp_path} (they reuse these runs)\n"
        f"Dashboard: make dashboard RLHF_WORKSPACE={tmp_path} "
        f"(or: rlhf dashboard --workspace {tmp_path})  -> http://127.0.0.1:8501"
    )
    # Again: every stage is reused, nothing retrains.
    assert main(["pipeline", *ws]) == 0
    again = capsys.readouterr().out
    assert again.count("reusing finished run") == 8 and "training a new run" not in again
    assert json.loads((tmp_path / "results" / "results.json").read_text())["runs"] == data["runs"]
    # Without the extras (--with none): the paper's rows alone, nothing trained.
    assert main(["pipeline", *ws, "--with", "none"]) == 0
    plain = capsys.readouterr().out
    assert plain.count("reusing finished run") == 5 and "- DPO" not in plain
    paper = json.loads((tmp_path / "results" / "results.json").read_text())
    assert paper["labels"] == PAPER and list(paper["versus"]["rows"]) == ["PPO"]
    # One extra: its finished run is reused, and compared with PPO-ptx.
    assert main(["pipeline", *ws, "--with", "dpo"]) == 0
    one = capsys.readouterr().out
    assert one.count("reusing finished run") == 6 and "- DPO: win rate vs SFT" in one
    assert "- GRPO" not in one


def test_pipeline_rejects_an_unknown_extra_before_any_stage_runs(tmp_path, capsys):
    ws = ["--recipe", "micro", "--workspace", str(tmp_path)]
    assert main(["pipeline", *ws, "--with", "dpo,rloo"]) == 2
    err = capsys.readouterr().err
    assert "pipeline.extras: unknown 'rloo' (known: dpo, grpo, lora" in err
    assert main(["pipeline", *ws, "--set", "pipeline.lora_r=0"]) == 2
    assert "pipeline.lora_r must be >= 1" in capsys.readouterr().err
    assert main(["pipeline", *ws, "--set", "grpo.num_generations=3"]) == 2
    assert "multiple of num_generations" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_a_copy_of_a_finished_workspace_reuses_every_run_and_the_comparisons(
    micro_pipeline, tmp_path, capsys
):
    """The store and eval.json name runs by absolute path; in a copy of the workspace (here
    also named by --workspace where the original used a config path) nothing is resampled or
    retrained."""
    from conftest import copy_workspace

    from rlhf import pipeline
    from rlhf.store import Store

    cfg = copy_workspace(micro_pipeline, tmp_path / "copy")
    with Store.open(cfg) as store:
        stored = store.count("simulated")
    before = sorted(p.name for p in (cfg.workspace_dir / "runs").iterdir())
    report = pipeline.run(cfg, progress=False)
    out = capsys.readouterr().out
    assert "reusing stored comparisons" in out and "training a new run" not in out
    assert out.count("reusing finished run") == 8
    assert sorted(p.name for p in (cfg.workspace_dir / "runs").iterdir()) == before
    assert all(Path(d).parent == cfg.workspace_dir / "runs" for d in report["runs"].values())
    with Store.open(cfg) as store:
        assert store.count("simulated") == stored


def test_a_finished_run_whose_model_is_gone_is_not_reused(micro_pipeline, tmp_path):
    """It was: `rlhf sft` said "reusing finished run" and every later stage failed on the
    missing model/."""
    import shutil

    from conftest import copy_workspace

    from rlhf import pipeline, sft

    cfg = copy_workspace(micro_pipeline, tmp_path / "copy")
    run, message = pipeline.finished_run(sft, cfg, "sft")
    assert run is not None and message.startswith("reusing finished run")
    shutil.rmtree(run.model_dir)
    again, message = pipeline.finished_run(sft, cfg, "sft")
    assert again is None
    assert message == f"not reusing {run.dir}: finished, but its model/ is gone; training a new run"


def test_extra_rows_leave_the_claims_as_they_were():
    """DPO, GRPO and LoRA rows are compared with PPO-ptx, never read by the paper's claims:
    rows that would break every claim change no verdict."""
    bad = {
        "win_rate": ci(0.01),
        "perplexity": ci(9.0),
        "hallucination": ci(1.0),
        "truthful": ci(0.0),
        "toxicity/plain": ci(0.0),
        "toxicity/respectful": ci(1.0),
    }
    results = table()
    with_extras = table()
    for label in EXTRAS + ["PPO+LoRA", "SFT+LoRA"]:
        with_extras["rows"][label] = dict(bad)
    assert [c.line() for c in check_claims(with_extras)] == [
        c.line() for c in check_claims(results)
    ]


def test_a_changed_ppo_setting_retrains_only_the_ppo_runs(micro_pipeline, tmp_path, capsys):
    """`rlhf pipeline --set ppo.kl_coef=...` (a user trying another beta): pretraining, SFT and
    the RM are reused, only PPO and PPO-ptx train, and they start from the reused runs."""
    from conftest import copy_workspace

    cfg = copy_workspace(micro_pipeline, tmp_path / "copy")
    ws = ["--recipe", "micro", "--workspace", str(cfg.workspace_dir), "--with", "none"]
    before = json.loads((cfg.workspace_dir / "results" / "results.json").read_text())["runs"]
    beta = cfg.ppo.kl_coef * 2
    assert main(["pipeline", *ws, "--set", f"ppo.kl_coef={beta}"]) == 0
    out = capsys.readouterr().out
    assert out.count("reusing finished run") == 3 and "training a new run" not in out
    runs = json.loads((cfg.workspace_dir / "results" / "results.json").read_text())["runs"]
    for label in ("base", "SFT", "RM"):
        assert Path(runs[label]).name == Path(before[label]).name, label
    for label in ("PPO", "PPO-ptx"):
        ppo = Run.open(runs[label])
        assert Path(runs[label]).name != Path(before[label]).name
        assert ppo.config.ppo.kl_coef == beta and ppo.done
        started = read_eval(ppo)
        assert Path(started["sft_run"]).name == Path(before["SFT"]).name
        assert Path(started["rm_run"]).name == Path(before["RM"]).name


def test_the_ptx_row_takes_pipeline_ptx_coef_unless_ppo_ptx_coef_is_set():
    from rlhf import pipeline
    from rlhf.config import load as load_config

    cfg = load_config("micro")
    assert pipeline.ptx_config(cfg).ppo.ptx_coef == cfg.pipeline.ptx_coef == 1.0
    lower = load_config("micro", ["pipeline.ptx_coef=0.3"])
    assert pipeline.ptx_config(lower).ppo.ptx_coef == 0.3
    both = load_config("micro", ["pipeline.ptx_coef=0.3", "ppo.ptx_coef=2.0"])
    assert pipeline.ptx_config(both).ppo.ptx_coef == 2.0  # an explicit ppo.ptx_coef wins
    assert load_config("tiny").pipeline.ptx_coef == 0.03  # chosen on validation prompts
    assert pipeline.ptx_config(lower, 0.1).ppo.ptx_coef == 0.1  # notebook 04's PTX_COEF
    tiny = load_config("tiny")  # one round of iterated collection, its RMs on their rounds' data
    assert (tiny.pipeline.rounds, tiny.rm.samples) == (1, "chain")
    pipeline.check_rounds(tiny)


def test_rounds_of_iterated_collection_train_a_new_rm_and_ppo_and_are_reused(
    micro_pipeline, tmp_path, capsys
):
    """pipeline.rounds=1 (paper section 3, steps 2 and 3 again): the first PPO policy's samples
    are ranked, a second RM trains on them and on the SFT model's, PPO and PPO-ptx train against
    it; the first round's RM and PPO become rows. Run again, every round is reused: the first
    RM is not stale though the store now holds the second round's comparisons too."""
    from conftest import copy_workspace

    from rlhf import pipeline
    from rlhf.store import Store

    cfg = copy_workspace(micro_pipeline, tmp_path / "copy")
    ws = ["--recipe", "micro", "--workspace", str(cfg.workspace_dir), "--with", "none"]
    rounds = [*ws, "--set", "pipeline.rounds=1", "--set", "rm.samples=chain"]
    assert main(["pipeline", *ws, "--set", "pipeline.rounds=1"]) == 2  # rm.samples=all
    assert "pipeline.rounds=1 needs rm.samples=chain" in capsys.readouterr().err
    assert pipeline.last_round(cfg_with(cfg, rounds)).compare.policy_run == ""  # none finished
    assert main(["pipeline", *rounds]) == 0
    out = capsys.readouterr().out
    assert "Round 1 of iterated collection" in out
    data = json.loads((cfg.workspace_dir / "results" / "results.json").read_text())
    assert data["labels"] == [*PAPER, "RM round 0", "PPO round 0"]
    run = {label: Run.open(d) for label, d in data["runs"].items()}
    first, second = run["PPO round 0"], run["RM"]
    assert run["RM round 0"].config.compare.policy_run == ""
    assert second.config.compare.policy_run == f"runs/{first.dir.name}"  # in this workspace
    # Each RM's data: the SFT model's comparisons, and the first PPO policy's for the second.
    sft_name = run["SFT"].dir.name
    assert list(read_eval(run["RM round 0"])["samples_of"]) == [sft_name]
    assert set(read_eval(second)["samples_of"]) == {sft_name, first.dir.name}
    assert read_eval(run["RM round 0"])["skipped_comparisons"]["later round"] == 0
    with Store.open(cfg) as store:
        ranked = {Path(c.policy).name for c in store.comparisons(source="simulated")}
    assert first.dir.name in ranked
    for label in ("PPO", "PPO-ptx"):  # the last round's RM
        assert Path(read_eval(run[label])["rm_run"]) == second.dir, label
    assert Path(read_eval(first)["rm_run"]) == run["RM round 0"].dir
    assert pipeline.last_round(cfg_with(cfg, rounds)).compare.policy_run == (
        f"runs/{first.dir.name}"
    )
    # Again: nothing is sampled or trained.
    assert main(["pipeline", *rounds]) == 0
    again = capsys.readouterr().out
    assert "training a new run" not in again and again.count("reusing finished run") == 7
    reran = json.loads((cfg.workspace_dir / "results" / "results.json").read_text())
    assert reran["runs"] == data["runs"]
    # The first round's RM, asked for alone, does not train on the later round's comparisons.
    from rlhf.reward import stale

    assert stale(run["RM round 0"], cfg_with(cfg, rounds)) is None
    # A copy of the workspace names its own runs: nothing is sampled or trained there either.
    copy = copy_workspace(cfg, tmp_path / "copy2")
    moved = [a.replace(str(cfg.workspace_dir), str(copy.workspace_dir)) for a in rounds]
    assert main(["pipeline", *moved]) == 0
    there = capsys.readouterr().out
    assert "training a new run" not in there and there.count("reusing finished run") == 7


def cfg_with(cfg, argv: list[str]):
    """cfg's recipe and workspace with argv's --set overrides."""
    from rlhf.config import load

    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    return load("micro", sets, workspace=str(cfg.workspace_dir))
