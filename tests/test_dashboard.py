"""Every dashboard page driven with Streamlit's AppTest: on an empty workspace (each says what
to run), and on the micro pipeline's workspace (Compare generates, Rewards scores, KL drift
shows rollouts, Rank submits, undoes and exports, Runs lists every run)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_workspace, ppo_run_in_training
from datasets import load_from_disk
from streamlit.testing.v1 import AppTest

from rlhf import dashboard
from rlhf.catalog import results_of
from rlhf.labeling import Sample, submission, submit
from rlhf.store import Store
from rlhf.world import load_world

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
PAGES = ("compare", "rewards", "kl_drift", "rank", "runs")
pytestmark = pytest.mark.slow


def page(name: str, workspace: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("RLHF_WORKSPACE", str(workspace))
    at = AppTest.from_file(APP, default_timeout=300)
    return at.switch_page(f"pages/{name}.py").run()


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


@pytest.mark.parametrize("name", PAGES)
def test_each_page_says_what_to_run_on_an_empty_workspace(name, tmp_path, monkeypatch):
    at = page(name, tmp_path, monkeypatch)
    no_exception(at)
    assert "Run this first" in at.info[0].value
    command = at.code[0].value
    assert "rlhf " in command or "make demo" in command


@pytest.mark.parametrize("name", PAGES)
def test_each_page_renders_on_the_micro_pipeline(name, micro_pipeline, monkeypatch):
    at = page(name, micro_pipeline.workspace_dir, monkeypatch)
    no_exception(at)
    assert not [i for i in at.info if "Run this first" in i.value]


def test_compare_scores_each_output_and_loads_each_model_once(micro_pipeline, monkeypatch):
    at = page("compare", micro_pipeline.workspace_dir, monkeypatch)
    chosen = at.multiselect(key="compare_policies").value
    assert [label.split(" · ")[0] for label in chosen] == ["base", "SFT", "PPO", "PPO-ptx"]
    dashboard.LOADS.clear()
    at.button(key="compare_generate").click().run()
    no_exception(at)
    metrics = {}
    for m in at.metric:
        metrics.setdefault(m.label, []).append(m.value)
    assert len(metrics["RM score"]) == 4 and "—" not in metrics["RM score"]
    assert all(v.endswith("/ 7") for v in metrics["Gold Likert"])  # a test prompt: gold Likert
    assert "—" not in metrics["KL to SFT"]
    sft = chosen[1]
    assert metrics["KL to SFT"][1] == "0.00", f"{sft} is the reference itself"
    table = at.dataframe[0].value
    assert list(table["policy"]) == chosen
    # Again, with another seed: new samples, but no model is loaded a second time.
    at.number_input(key="compare_seed").set_value(7)
    at.button(key="compare_generate").click().run()
    no_exception(at)
    assert dashboard.LOADS and max(dashboard.LOADS.values()) == 1, dict(dashboard.LOADS)


def test_compare_lists_the_runs_beyond_the_paper_and_compares_them(micro_pipeline, monkeypatch):
    at = page("compare", micro_pipeline.workspace_dir, monkeypatch)
    box = at.multiselect(key="compare_policies")
    kinds = [label.split(" · ")[0] for label in box.options]
    assert kinds == ["base", "SFT", "PPO", "PPO-ptx", "DPO", "GRPO", "PPO-ptx+LoRA"]
    extras = [label for label in box.options if label.split(" · ")[0] in kinds[4:]]
    box.set_value(["SFT · " + box.options[1].split(" · ")[1], *extras]).run()
    at.button(key="compare_generate").click().run()
    no_exception(at)
    headers = [m.value for m in at.markdown if m.value.startswith("**")]
    assert headers == ["**SFT**", "**DPO**", "**GRPO**", "**PPO-ptx+LoRA**"]
    assert len([m for m in at.metric if m.label == "RM score"]) == 4
    assert list(at.dataframe[0].value["policy"]) == box.value


def test_compare_takes_a_typed_prompt(micro_pipeline, monkeypatch):
    at = page("compare", micro_pipeline.workspace_dir, monkeypatch)
    at.radio(key="compare_source").set_value("Type one").run()
    at.text_area(key="compare_typed").input("What is 2 plus 3?")
    at.button(key="compare_generate").click().run()
    no_exception(at)
    likert = [m.value for m in at.metric if m.label == "Gold Likert"]
    assert likert == ["—"] * 4  # a typed prompt has no gold answer


def test_rewards_scores_policies_and_shows_rm_accuracy(micro_pipeline, monkeypatch):
    at = page("rewards", micro_pipeline.workspace_dir, monkeypatch)
    at.slider(key="rewards_per_family").set_value(2)
    at.button(key="rewards_score").click().run()
    no_exception(at)
    means = at.dataframe[0].value
    assert len(means) == 4 and means["likert"].between(1, 7).all()


def recorded_heights(monkeypatch) -> dict[str, object]:
    """Chart title -> the height each st.altair_chart call asked for (None: Streamlit's
    default), recorded at the call: AppTest does not keep an element's height."""
    import streamlit as st

    heights, altair_chart = {}, st.altair_chart

    def recording(chart, **kwargs):
        spec = chart.to_dict()  # a layered chart may keep its title in a layer
        layers = [lay["title"] for lay in spec.get("layer", []) if "title" in lay]
        title = spec.get("title") or (layers[0] if layers else "")
        text = title.get("text", "") if isinstance(title, dict) else title  # or with a subtitle
        heights[text] = kwargs.get("height")
        return altair_chart(chart, **kwargs)

    monkeypatch.setattr(st, "altair_chart", recording)
    return heights


def test_charts_side_by_side_get_room_for_their_plots(micro_pipeline, monkeypatch):
    """Streamlit fits an Altair chart's title, axes and legend into the chart's own height
    (autosize "fit"): in a column, the RM-vs-gold scatter with its legend was left a strip of
    about 30 pixels, the Runs page's bars about 80 (seen in the browser). The pages give the
    charts of those rows a height of their own."""
    heights = recorded_heights(monkeypatch)
    at = page("rewards", micro_pipeline.workspace_dir, monkeypatch)
    at.slider(key="rewards_per_family").set_value(2)
    at.button(key="rewards_score").click().run()
    no_exception(at)
    scatter = heights["RM score vs gold quality"]
    [boxes] = [h for title, h in heights.items() if title.startswith("RM score vs gold Likert")]
    assert isinstance(scatter, int) and scatter >= 400 and boxes == scatter
    no_exception(page("runs", micro_pipeline.workspace_dir, monkeypatch))
    bars = [heights["Gold win rate against SFT"], heights["Gold Likert (1-7)"]]
    assert all(isinstance(h, int) and h >= 300 for h in bars)


def test_rewards_shows_right_vs_wrong_answer_checking(micro_pipeline, tmp_path, monkeypatch):
    import json

    from rlhf.outputs import reward_runs

    cfg = copy_workspace(micro_pipeline, tmp_path / "ws")
    run = reward_runs(cfg.workspace_dir)[0]  # the page's default choice
    report = json.loads((run.dir / "eval.json").read_text())
    report["answer_checking"] = {
        "transform": {"rm": 0.52, "labelers": 0.84, "pairs": 30},
        "all": {"rm": 0.6, "labelers": 0.8, "pairs": 50},
    }
    (run.dir / "eval.json").write_text(json.dumps(report))
    at = page("rewards", cfg.workspace_dir, monkeypatch)
    no_exception(at)
    [checking] = [f for f in chart_frames(at) if "who" in f.columns]
    got = {(r.family, r.who): r.share for r in checking.itertuples()}
    assert got[("transform", "reward model")] == 0.52 and got[("all", "labelers")] == 0.8


def test_kl_drift_shows_rollouts_of_a_chosen_step(micro_pipeline, monkeypatch):
    at = page("kl_drift", micro_pipeline.workspace_dir, monkeypatch)
    steps = at.select_slider(key="kl_step")
    samples = at.dataframe[0].value
    assert len(samples) > 0 and samples["KL"].notna().all()
    first = min(steps.options, key=int)
    steps.set_value(int(first)).run()
    no_exception(at)


def test_kl_drift_shows_the_gold_losses_the_rm_paid_for(micro_pipeline, tmp_path, monkeypatch):
    """Each chosen finished run's `rm_vs_gold` (eval.json): its counts in a line, its examples
    in a table; a run whose report has none says so."""
    from rlhf.runs import list_runs

    cfg = copy_workspace(micro_pipeline, tmp_path / "ws")
    example = {
        "prompt": "Q: Reverse the word boat.\nA:",
        "family": "transform",
        "policy": " The answer is BOAT.",
        "sft": " taob.",
        "gold_policy": 0.36,
        "gold_sft": 0.88,
        "rm_policy": 0.6626,  # the table shows 2 decimals
        "rm_sft": -1.5796,
    }
    paid = {"losses": 3, "losses_rm_prefers_policy": 2, "wins": 5, "wins_rm_prefers_policy": 4}
    at = page("kl_drift", cfg.workspace_dir, monkeypatch)
    chosen = at.multiselect(key="kl_runs").value
    assert len(chosen) == 2  # the micro pipeline's PPO and PPO-ptx
    runs = {r.dir.name.rsplit("__", 1)[-1]: r for r in list_runs(cfg.workspace_dir, "ppo")}
    [with_it] = [r for stamp, r in runs.items() if chosen[0].endswith(stamp)]
    [without] = [r for stamp, r in runs.items() if chosen[1].endswith(stamp)]
    for run, value in ((with_it, {**paid, "examples": [example]}), (without, None)):
        report = json.loads((run.dir / "eval.json").read_text())
        report.pop("rm_vs_gold")  # the micro runs' own: written by their reports
        if value:
            report["rm_vs_gold"] = value
        (run.dir / "eval.json").write_text(json.dumps(report))
    at = page("kl_drift", cfg.workspace_dir, monkeypatch)
    no_exception(at)
    assert (
        f"**{chosen[0]}**: the RM scored 2 of its 3 losses to SFT above SFT's answer (and 4 "
        "of its 5 wins)" in [m.value for m in at.markdown]
    )
    [table] = [d.value for d in at.dataframe if "question" in d.value.columns]  # one: with_it's
    assert table.to_dict("records") == [
        {
            "family": "transform",
            "question": "Q: Reverse the word boat.",
            "policy": "The answer is BOAT.",
            "SFT": "taob.",
            "RM: policy": 0.66,
            "RM: SFT": -1.58,
            "gold: policy": 0.36,
            "gold: SFT": 0.88,
        }
    ]
    assert any(c.value.startswith(f"{chosen[1]}: none yet") for c in at.caption)
    # An oracle arm paid by gold itself: its report's counts are never shown (always 0).
    report = json.loads((with_it.dir / "eval.json").read_text())
    (with_it.dir / "eval.json").write_text(json.dumps({**report, "reward": "gold"}))
    at = page("kl_drift", cfg.workspace_dir, monkeypatch)
    no_exception(at)
    assert not any(m.value.startswith(f"**{chosen[0]}**") for m in at.markdown)
    assert f"{chosen[0]}: trained against the gold labeler itself, which pays for no gold loss" in [
        c.value for c in at.caption
    ]
    report["reward"] = "labelers"  # the other oracle, a model of the labelers, can pay for one
    (with_it.dir / "eval.json").write_text(json.dumps(report))
    at = page("kl_drift", cfg.workspace_dir, monkeypatch)
    want = f"**{chosen[0]}**: the labelers reward scored 2 of its 3 losses"
    assert any(m.value.startswith(want) for m in at.markdown)
    [table] = [d.value for d in at.dataframe if "question" in d.value.columns]
    assert list(table.columns[4:]) == [
        "labelers reward: policy",
        "labelers reward: SFT",
        "gold: policy",
        "gold: SFT",
    ]


def test_kl_drift_follows_a_run_still_training(micro_pipeline, tmp_path, monkeypatch):
    """A PPO run still training (this process, as the runs in a notebook) is listed first and
    chosen, with how far it is; its curves grow as it logs steps. Once its process is gone
    it reads stopped and is listed after the finished runs."""
    from rlhf.runs import write_json

    cfg = copy_workspace(micro_pipeline, tmp_path / "ws")
    run, finished = ppo_run_in_training(cfg)
    logged = finished.metrics()
    at = page("kl_drift", cfg.workspace_dir, monkeypatch)
    no_exception(at)
    assert at.multiselect(key="kl_runs").value[0].endswith(run.dir.name)
    assert any(c.value.endswith(": running, before its first step") for c in at.caption)
    for row in logged[:2]:
        run.log(row["step"], row)
    at = page("kl_drift", cfg.workspace_dir, monkeypatch)
    no_exception(at)
    runs = at.multiselect(key="kl_runs")
    assert runs.options[0].endswith(run.dir.name) and runs.value[0] == runs.options[0]
    steps = cfg.ppo.steps
    per_step = statistics.median(r["time/rollout"] + r["time/update"] for r in logged[:2])
    assert [c.value for c in at.caption if "running, step 2 of" in c.value] == [
        f"PPO {run.dir.name.rsplit('__', 1)[-1]}: running, step 2 of {steps} "
        f"({per_step:.1f} s a step, about {per_step * (steps - 2):.0f} s left)"
    ]
    [curves] = [f for f in chart_frames(at) if "metric" in f.columns]
    assert curves[curves["run"].str.endswith(run.dir.name.rsplit("__", 1)[-1])]["step"].max() == 2

    run.log(logged[2]["step"], logged[2])
    at.run()
    assert any("running, step 3 of" in c.value for c in at.caption)

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a process that has ended: the run's recorded process is gone
    write_json(run.dir / "status.json", {**run.status, "pid": child.pid})
    at = page("kl_drift", cfg.workspace_dir, monkeypatch)
    no_exception(at)
    options = at.multiselect(key="kl_runs").options
    assert options[-1].endswith(run.dir.name) and run.dir.name not in " ".join(options[:-1])
    at.multiselect(key="kl_runs").set_value([options[-1]]).run()
    assert [c.value for c in at.caption if "stopped" in c.value] == [
        f"PPO {run.dir.name.rsplit('__', 1)[-1]}: stopped at step 3 of {steps} (its process "
        f"is gone; no checkpoint to resume from: {run.dir})"
    ]
    runs_page = page("runs", cfg.workspace_dir, monkeypatch)
    table = runs_page.dataframe[0].value
    assert table.loc[table["run"] == run.dir.name, "status"].tolist() == ["stopped"]


def test_runs_of_an_earlier_round_are_named_as_in_the_results_table(
    micro_pipeline, tmp_path, monkeypatch
):
    """After a round of iterated collection (pipeline.rounds=1, as `make demo` makes one) the
    workspace holds two PPO runs against two RMs. Every page and `rlhf eval` call the first
    round's "PPO round 0" and "RM round 0", as the pipeline's results table does, and KL drift
    opens on the last round's PPO and PPO-ptx, not on the two PPO runs."""
    from rlhf.cli import main
    from rlhf.outputs import policy_runs
    from rlhf.results import evaluate_runs, round_labels
    from rlhf.runs import Run

    cfg = copy_workspace(micro_pipeline, tmp_path / "ws")
    ws = ["--recipe", "micro", "--workspace", str(cfg.workspace_dir), "--with", "none"]
    assert main(["pipeline", *ws, "--set", "pipeline.rounds=1", "--set", "rm.samples=chain"]) == 0
    table = json.loads((cfg.workspace_dir / "results" / "results.json").read_text())["runs"]
    run = {label: Run.open(d) for label, d in table.items()}
    assert round_labels(cfg.workspace_dir) == {
        run[label].dir.resolve(): label for label in ("PPO round 0", "RM round 0")
    }
    assert round_labels(micro_pipeline.workspace_dir) == {}  # no round: every run as before

    policies = policy_runs(cfg.workspace_dir)  # the copied pipeline's PPO runs are there too
    kinds = [p.kind for p in policies]
    assert [p.run.dir for p in policies if p.kind == "PPO"][0] == run["PPO"].dir  # newest
    assert [p.run.dir for p in policies if p.kind == "PPO round 0"] == [run["PPO round 0"].dir]
    assert kinds.index("PPO-ptx") < kinds.index("PPO round 0") < kinds.index("DPO")
    runs_table = page("runs", cfg.workspace_dir, monkeypatch).dataframe[0].value
    kind = dict(zip(runs_table["run"], runs_table["kind"], strict=True))
    for label in ("RM round 0", "PPO round 0", "RM", "PPO"):
        assert kind[run[label].dir.name] == label

    at = page("kl_drift", cfg.workspace_dir, monkeypatch)
    no_exception(at)
    assert at.multiselect(key="kl_runs").value == [
        f"{label} · {run[label].dir.name}" for label in ("PPO", "PPO-ptx")
    ]
    at = page("compare", cfg.workspace_dir, monkeypatch)
    chosen = at.multiselect(key="compare_policies").value
    assert f"PPO · {run['PPO'].dir.name}" in chosen and "PPO round 0" not in " ".join(chosen)

    both = evaluate_runs(cfg, [run["PPO round 0"].dir, run["PPO"].dir], progress=False)
    assert both["labels"] == ["PPO round 0", "PPO"]

    # A second round: each earlier round's runs by their number, as the table has them.
    assert main(["pipeline", *ws, "--set", "pipeline.rounds=2", "--set", "rm.samples=chain"]) == 0
    table = json.loads((cfg.workspace_dir / "results" / "results.json").read_text())["runs"]
    assert {"PPO round 0", "PPO round 1", "RM round 1"} <= set(table)
    assert round_labels(cfg.workspace_dir) == {
        Path(d).resolve(): label for label, d in table.items() if " round " in label
    }


def test_kl_drift_rollouts_follow_the_newest_step_unless_an_earlier_one_is_picked(
    micro_pipeline, tmp_path, monkeypatch
):
    import json

    cfg = copy_workspace(micro_pipeline, tmp_path / "ws")
    run, finished = ppo_run_in_training(cfg)
    by_step = {}
    for row in finished.samples():
        by_step.setdefault(row["step"], []).append(row)

    def log_samples(step):
        with open(run.dir / "samples.jsonl", "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in by_step[step])

    at = page("kl_drift", cfg.workspace_dir, monkeypatch)
    assert any("no samples yet" in c.value for c in at.caption)
    first, second, third = sorted(by_step)
    log_samples(first)
    at.run()
    assert at.select_slider(key="kl_step").value == first
    log_samples(second)
    at.run()  # as the fragment's timer does
    no_exception(at)
    assert at.select_slider(key="kl_step").value == second  # followed
    at.select_slider(key="kl_step").set_value(first).run()
    log_samples(third)
    at.run()
    slider = at.select_slider(key="kl_step")
    assert slider.value == first and list(slider.options) == [str(s) for s in by_step]


def test_progress_line_says_where_a_run_is_and_how_it_resumes(tmp_path):
    from rlhf.config import load
    from rlhf.outputs import PolicyRun
    from rlhf.runs import Run

    cfg = load("micro", workspace=str(tmp_path), **{"ppo.steps": 100})
    run = Run.create(cfg, "ppo")
    p = PolicyRun("PPO", run)
    stamp = run.dir.name.rsplit("__", 1)[-1]
    for step in range(1, 4):
        run.log(step, {"time/rollout": 1.5, "time/update": 0.5})
    assert dashboard.progress_line(p) == (
        f"PPO {stamp}: running, step 3 of 100 (2.0 s a step, about 3 min left)"
    )
    run.checkpoint_dir.mkdir()
    (run.checkpoint_dir / "state.json").write_text('{"step": 2}')
    run.set_status("failed", error="KeyboardInterrupt: ")
    assert dashboard.progress_line(p) == (
        f"PPO {stamp}: failed at step 3 of 100 (interrupted; resumable from step 2: run its "
        f"command again, or pass --run-dir {run.dir})"
    )
    run.set_status("running")
    for step in range(4, 101):
        run.log(step, {"time/rollout": 1.5, "time/update": 0.5})
    assert dashboard.progress_line(p) == (
        f"PPO {stamp}: running, step 100 of 100: training done, writing its report"
    )


def test_rank_validates_submits_undoes_and_exports(micro_pipeline, tmp_path, monkeypatch):
    cfg = copy_workspace(micro_pipeline, tmp_path / "ws")
    at = page("rank", cfg.workspace_dir, monkeypatch)
    at.text_input(key="rank_labeler").input("ann").run()
    at.selectbox(key="rank_split").set_value("val").run()
    at.button(key="rank_draw_button").click().run()
    no_exception(at)
    draw = at.session_state["rank_draw"]
    n = len(draw["samples"])
    assert n >= 2 and draw["prompt_id"].split("-")[1] == "val"

    at.button(key="rank_submit").click().run()  # nothing ranked yet
    assert "response 1 has no rank" in at.error[0].value
    with Store.open(cfg) as store:
        assert store.count(source="human") == 0

    ranks = [1] + [2] * (n - 1)  # the first best, the rest tied
    for i, r in enumerate(ranks):
        at.number_input(key=f"rank_r_rank_{i}").set_value(r)
    at.slider(key="rank_r_likert_0").set_value(7)
    at.checkbox(key="rank_r_flag_1_toxic").check()
    at.button(key="rank_submit").click().run()
    no_exception(at)
    assert at.success[0].value.startswith("Saved comparison #")
    with Store.open(cfg) as store:
        [saved] = store.comparisons(source="human")
    assert saved.labeler == "ann" and saved.prompt_id == draw["prompt_id"]
    assert saved.responses == [s.text for s in draw["samples"]]
    assert saved.ranking == [0] + [1] * (n - 1)
    assert saved.likert[0] == 7 and saved.flags[1]["toxic"] and not saved.flags[0]["toxic"]
    table = at.dataframe[0].value
    assert table.loc[0, "labeler"] == "ann" and table.loc[0, "comparisons"] == 1

    out = tmp_path / "human.jsonl"
    at.text_input(key="rank_export_path").input(str(out))
    at.button(key="rank_export").click().run()
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["ranking"] == saved.ranking and row["labeler"] == "ann"
    at.selectbox(key="rank_export_format").set_value("HF datasets folder, chosen/rejected")
    at.text_input(key="rank_export_path").input(str(tmp_path / "hf"))
    at.button(key="rank_export").click().run()
    no_exception(at)
    assert len(load_from_disk(str(tmp_path / "hf"))) == n - 1  # best over each of the rest

    at.button(key="rank_undo").click().run()
    assert "Removed your last submission" in at.success[0].value
    with Store.open(cfg) as store:
        assert store.count(source="human") == 0
    with Store.open(cfg) as store:
        assert store.count(source="simulated") > 0  # the simulated rankings are untouched


def chart_frames(at: AppTest) -> list:
    """The data of every Altair chart on the page (Streamlit ships it as Arrow tables)."""
    import pyarrow as pa

    frames = []
    for chart in at.get("vega_lite_chart"):
        for ds in chart.proto.datasets:
            frames.append(pa.ipc.open_stream(ds.data.data).read_pandas())
    return frames


def test_rewards_shows_the_rm_on_hand_rankings_of_held_out_and_train_prompts(
    micro_pipeline, tmp_path, monkeypatch
):
    cfg = copy_workspace(micro_pipeline, tmp_path / "ws")
    world = load_world(cfg)
    samples = [Sample(f" It is {n}.", "SFT") for n in (3, 4, 5)]
    with Store.open(cfg) as store:
        for split in ("val", "train"):
            p = world.prompts(split)[0]
            submit(store, submission(p.text, samples, [1, 2, 3], "ann", prompt_id=p.id))
    at = page("rewards", cfg.workspace_dir, monkeypatch)
    no_exception(at)
    [acc] = [f for f in chart_frames(at) if "name" in f.columns]
    names = list(acc["name"])
    assert names[:2] == ["RM · training labelers", "gold · training labelers"]
    assert "hand · val/test prompts" in names and "hand · train/typed prompts" in names
    held = acc[acc["name"] == "hand · val/test prompts"].iloc[0]
    assert held["pairs"] == 3 and 0 <= held["value"] <= 1


def test_runs_lists_the_runs_beyond_the_paper_and_their_comparison_with_ppo_ptx(
    micro_pipeline, monkeypatch
):
    at = page("runs", micro_pipeline.workspace_dir, monkeypatch)
    no_exception(at)
    runs = at.dataframe[0].value
    kinds = dict(zip(runs["run"], runs["kind"], strict=True))
    assert {k for r, k in kinds.items() if r.startswith(("dpo__", "grpo__"))} == {"DPO", "GRPO"}
    assert "PPO-ptx+LoRA" in kinds.values()
    table = at.dataframe[1].value
    assert list(table.index) == [
        "base",
        "SFT",
        "RM",
        "PPO",
        "PPO-ptx",
        "DPO",
        "GRPO",
        "PPO-ptx+LoRA",
    ]
    assert "Compared with PPO-ptx" in [h.value for h in at.subheader]
    versus = at.dataframe[2].value
    assert list(versus.index) == ["PPO-ptx", "PPO", "DPO", "GRPO", "PPO-ptx+LoRA"]
    assert versus.loc["DPO", "win rate minus PPO-ptx's"].endswith(" points")
    assert any(m.value.startswith("- PPO: win rate vs SFT") for m in at.markdown)
    assert "Where the win rate comes from" in [h.value for h in at.subheader]
    where = at.dataframe[3].value  # every trained policy against SFT, kind by kind
    assert list(where.index) == ["PPO", "PPO-ptx", "DPO", "GRPO", "PPO-ptx+LoRA"]
    n_test = results_of(micro_pipeline.workspace_dir)["n_test_prompts"]
    assert set(where["prompts"]) == {n_test}
    assert list(at.dataframe[4].value.columns) == list(where.index)  # per family


def test_a_ppo_run_against_an_oracle_is_its_own_kind(micro_pipeline, tmp_path, monkeypatch):
    """ppo.reward=gold or labelers (rlhf.oracle): listed as PPO+gold and PPO+labelers after
    the paper's PPO runs, which stay the default choices; the pages that list PPO runs render
    with them."""
    from rlhf import ppo
    from rlhf.config import load

    cfg = copy_workspace(micro_pipeline, tmp_path / "ws")
    ppo.train(load("micro", workspace=cfg.workspace, **{"ppo.reward": "gold"}), progress=False)
    labelers = {"ppo.reward": "labelers", "ppo.steps": 2}
    ppo.train(load("micro", workspace=cfg.workspace, **labelers), progress=False)
    at = page("kl_drift", cfg.workspace_dir, monkeypatch)
    no_exception(at)
    runs = at.multiselect(key="kl_runs")
    oracles = [o for o in runs.options if o.startswith(("PPO+gold", "PPO+labelers"))]
    assert [o.split(" ")[0] for o in oracles] == ["PPO+gold", "PPO+labelers"]
    assert runs.options[-2:] == oracles
    assert not set(oracles) & set(runs.value)
    for name in ("runs", "compare"):
        no_exception(page(name, cfg.workspace_dir, monkeypatch))
