"""benchmarks/rm_kwise_vs_pairs.py on the micro recipe: the table, and the forward counts."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from rlhf import pretrain, sft
from rlhf.config import load
from rlhf.runs import list_runs
from rlhf.store import Comparison

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "rm_kwise_vs_pairs.py"


def _script(name: str):
    """benchmarks/<name>.py as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPT.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pipeline_copy(micro_pipeline, dest):
    """(config, policy runs in policy_runs order, SFT run) of a copy of the micro pipeline's
    workspace at `dest`, for a benchmark that writes runs or files into it."""
    from conftest import copy_workspace

    from rlhf.outputs import policy_runs

    cfg = copy_workspace(micro_pipeline, dest)
    runs = policy_runs(cfg.workspace_dir)
    return cfg, runs, next(p.run for p in runs if p.kind == "SFT")


def test_kwise_vs_pairs_forwards_each_response_once_vs_k_minus_1_times(tmp_path, capsys):
    torch.set_num_threads(1)
    cfg = load("micro", workspace=str(tmp_path))
    pretrain.train(cfg, progress=False)
    sft.train(cfg, progress=False)
    argv = ["--recipe", "micro", "--workspace", str(tmp_path), "--ks", "4", "--quiet"]
    result = _script("rm_kwise_vs_pairs").main(
        argv + ["--train-prompts", "8", "--val-prompts", "4", "--threads", "1"]
    )

    out = capsys.readouterr().out
    assert "| K-wise | " in out and "| pairs | " in out
    assert "ratio (pairs / K-wise wall time) at K=4:" in out
    cached = json.loads((tmp_path / "cache" / "bench_rm_K4_train.json").read_text())
    rows = [Comparison(**r) for r in cached["rows"]]
    n_pairs = sum(1 for c in rows for _ in c.pairs())  # ties give no pair
    assert rows and all(len(c.responses) == 4 for c in rows)
    assert 0 < n_pairs <= math.comb(4, 2) * len(rows)
    kwise, pairs = result["K=4"]["K-wise"], result["K=4"]["pairs"]
    assert kwise["sequences"] == sum(len(c.responses) for c in rows)  # each response once
    assert pairs["sequences"] == 2 * n_pairs  # chosen and rejected of every pair
    assert kwise["steps"] == pairs["steps"] == math.ceil(len(rows) / cfg.rm.batch_size)
    for m in (kwise, pairs):
        assert 0 <= m["heldout_acc"] <= 1 and m["heldout_pairs"] > 0 and m["wall_s"] > 0


def test_without_an_sft_run_it_names_the_command_and_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _script("rm_kwise_vs_pairs").main(["--recipe", "micro", "--workspace", str(tmp_path)])
    assert e.value.code == 2
    assert "rlhf sft --recipe micro" in capsys.readouterr().err


def test_dashboard_latency_times_four_full_length_scored_outputs(micro_pipeline, capsys):
    spec = importlib.util.spec_from_file_location(
        "dashboard_latency", SCRIPT.parent / "dashboard_latency.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--workspace", str(micro_pipeline.workspace_dir), "--repeats", "1"]
    result = module.main([*argv, "--new-tokens", "16"])
    out = capsys.readouterr().out
    assert "| ours | " in out and "| naive | " in out and "ratio naive / ours" in out
    assert result["lengths"] == [16] * 4  # four policies, one full-length output each
    assert result["median"]["ours"] > 0 and result["ratio"] > 0


def test_rm_correct_vs_wrong_scores_every_family_and_gold_is_the_ceiling(rm_ready, capsys):
    from rlhf import ppo
    from rlhf.world import build_world

    spec = importlib.util.spec_from_file_location(
        "rm_correct_vs_wrong", SCRIPT.parent / "rm_correct_vs_wrong.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sft_run, rm_run = ppo.source_runs(rm_ready)
    result = module.main(
        ["--runs", str(rm_run.dir), "--draws", "2", "--likelihood", str(sft_run.dir)]
    )
    out = capsys.readouterr().out
    likelihood = f"likelihood of {sft_run.dir.name}"
    assert f"| family | pairs | gold labeler | {rm_run.dir.name} | {likelihood} |" in out
    assert result[likelihood]["all"]["n"] == result[rm_run.dir.name]["all"]["n"]
    world = build_world(rm_ready, progress=False)
    families = {p.family for p in world.prompts("val")}
    gold, rm = result["gold labeler"], result[rm_run.dir.name]
    assert set(gold) == set(rm) and set(gold) - {"all"} <= families
    assert gold["all"]["n"] == rm["all"]["n"] == sum(v["n"] for f, v in rm.items() if f != "all")
    assert gold["all"]["mean"] == 1.0  # the world's right answer is always gold's choice
    assert all(0 <= v["lo"] <= v["mean"] <= v["hi"] <= 1 for v in rm.values())


def test_rm_correct_vs_wrong_takes_the_prompts_ppo_samples(rm_ready, capsys, monkeypatch):
    """--split train and rl: the pairs are of that split's prompts only (rl: the prompts only
    PPO and GRPO sample, world.rl_per_family); a split with no prompts is a clear error."""
    from rlhf import ppo
    from rlhf.world import build_world

    spec = importlib.util.spec_from_file_location(
        "rm_correct_vs_wrong", SCRIPT.parent / "rm_correct_vs_wrong.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rm_run = ppo.source_runs(rm_ready)[1]
    world = build_world(rm_ready, progress=False)
    for split in ("train", "rl"):
        prompts = world.prompts(split)
        assert prompts, f"the micro world has no {split} prompts to test with"
        result = module.main(["--runs", str(rm_run.dir), "--draws", "2", "--split", split])
        assert f" {split} prompts; 95% intervals" in capsys.readouterr().out
        rm = result[rm_run.dir.name]
        assert set(rm) - {"all"} <= {p.family for p in prompts}
        rows = module.pairs(world, split, 2, 0)
        assert {p.id for p, _, _ in rows} <= {p.id for p in prompts}
        assert rm["all"]["n"] == len(rows) > 0
    assert len(module.pairs(world, "val", 2, 0)) not in (
        len(module.pairs(world, "train", 2, 0)),
        len(module.pairs(world, "rl", 2, 0)),
    )  # so the counts above tell the splits apart
    monkeypatch.setattr(module, "pairs", lambda *args: [])  # a world without rl prompts
    with pytest.raises(SystemExit) as stop:
        module.main(["--runs", str(rm_run.dir), "--split", "rl"])
    assert stop.value.code == 2 and "this world has no rl prompts" in capsys.readouterr().err


def test_mean_logprob_is_the_lm_loss_on_the_response_tokens(rm_ready):
    """The benchmark's likelihood column against transformers' own loss with the prompt's
    labels masked (-100): the mean NLL of the response tokens and EOS."""
    from rlhf import ppo
    from rlhf.models import load_policy
    from rlhf.reward import encode_ids

    spec = importlib.util.spec_from_file_location(
        "rm_correct_vs_wrong", SCRIPT.parent / "rm_correct_vs_wrong.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model, tokenizer = load_policy(ppo.source_runs(rm_ready)[0].model_dir)
    prompts, responses = (
        ["Q: What is 2 plus 3?\nA:", "Q: Reverse the word boat.\nA:"],
        ["5.", "taob"],
    )
    got = module.mean_logprob(model, tokenizer, prompts, responses)
    for prompt, response, value in zip(prompts, responses, got, strict=True):
        ids = torch.tensor(encode_ids(tokenizer, [prompt], [response], 10_000))
        labels = ids.clone()
        labels[0, : len(tokenizer(prompt, add_special_tokens=False)["input_ids"])] = -100
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss
        assert value == pytest.approx(-float(loss), abs=1e-5)


def _best_of_n():
    spec = importlib.util.spec_from_file_location("best_of_n", SCRIPT.parent / "best_of_n.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_best_of_n_picks_each_groups_best_and_bounds_its_kl():
    from rlhf import best_of_n as bon

    assert bon.best_of([0.1, 0.5, 0.5, 0.2, 0.9, 0.0], 2, [0.1, 0.5, 0.5, 0.2, 0.9, 0.0]) == [
        1,
        2,
        4,
    ]
    assert bon.best_of([0.1, 0.5, 0.5, 0.2], 4, [3.0, 1.0, 2.0, 3.0]) == [0]  # first on a tie
    # expert iteration's use: two prompts of three samples, one pick each
    assert bon.best_of([0.1, 0.9, 0.5, 0.3, 0.3, 0.2], 3, [0.1, 0.9, 0.5, 0.3, 0.3, 0.2]) == [1, 3]
    assert bon.best_of([0.1, 0.9, 0.5, 0.3, 0.3, 0.2], 3, [2.0, 1.0, 0.0, 0.0, 0.0, 5.0]) == [0, 5]
    assert bon.kl_bound(1) == 0.0
    assert bon.kl_bound(4) == pytest.approx(math.log(4) - 0.75)
    # Against SFT's greedy quality 0.5: groups (0.1, 0.5) tie, (0.5, 0.2) tie, (0.9, 0.0) win.
    assert bon.bon_wins([0.1, 0.5, 0.5, 0.2, 0.9, 0.0], [0.1, 0.5, 0.5, 0.2, 0.9, 0.0], 2, 0.5) == (
        pytest.approx(2 / 3)
    )


def test_best_of_n_on_micro_gold_picks_beat_rm_picks_and_grow_with_n(rm_ready, capsys):
    from rlhf import ppo

    torch.set_num_threads(1)
    sft_run, rm_run = ppo.source_runs(rm_ready)
    argv = ["--sft", str(sft_run.dir), "--rm", str(rm_run.dir), "--n", "8", "--threads", "1"]
    result = _best_of_n().main(argv + ["--policies", str(sft_run.dir), "--max-new-tokens", "16"])
    out = capsys.readouterr().out
    assert "| n | KL bound (nats) | best of n by gold | by the labelers | by the RM |" in out
    rows = result["n"]
    assert list(rows) == [1, 2, 4, 8]
    one = rows[1]  # one sample: nothing to choose
    assert one["gold"]["mean"] == one["labelers"]["mean"] == one["rm"]["mean"]
    for small, large in zip(list(rows.values()), list(rows.values())[1:], strict=False):
        # a group of 2n holds two groups of n: its best is at least as good as either's
        assert large["gold"]["mean"] >= small["gold"]["mean"]
        assert large["any_better"] >= small["any_better"]
    for row in rows.values():
        # gold picks the best quality there is
        assert row["gold"]["mean"] >= max(row["rm"]["mean"], row["labelers"]["mean"])
        assert row["gold"]["mean"] >= row["any_better"]  # a win counts 1, a tie 0.5
    assert rows[8]["gold"]["mean"] > rows[1]["gold"]["mean"]  # choosing helps on micro too
    families = result["family"]  # best of 8 (--family-n 16 is more than --n)
    assert "Per family, best of 8 " in out
    for name in ("gold", "labelers", "rm"):
        weighted = sum(f[name] * f["prompts"] for f in families.values())
        assert weighted / sum(f["prompts"] for f in families.values()) == pytest.approx(
            rows[8][name]["mean"]
        )
    sft = result["policies"][sft_run.dir.name]
    assert sft["win_rate"]["mean"] == 0.5  # SFT's greedy answers tie with themselves
    assert f"| {sft_run.dir.name} | 50.0% " in out


def test_expert_iteration_on_micro_trains_on_the_best_samples_and_judges_both_splits(
    rm_ready, tmp_path, capsys
):
    from conftest import copy_workspace

    from rlhf import ppo
    from rlhf.models import load_policy
    from rlhf.runs import Run, upstream
    from rlhf.world import build_world

    torch.set_num_threads(1)
    cfg = copy_workspace(rm_ready, tmp_path / "ws")
    sft_run, rm_run = ppo.source_runs(cfg)
    ei = _script("expert_iteration")
    argv = ["--sft", str(sft_run.dir), "--n", "4", "--threads", "1", "--quiet"]
    argv += ["--train-per-family", "3", "--max-new-tokens", "16"]
    gold = ei.main(argv + ["--policies", str(sft_run.dir)])
    by_rm = ei.main(argv + ["--pick", "rm", "--rm", str(rm_run.dir)])
    out = capsys.readouterr().out
    assert "| run | test prompts | made right / wrong | train prompts | made right / wrong |" in out

    # The picks file: one row per train prompt, in the SFT demonstrations' form, and the mean
    # gold quality it reports is that of the rows written.
    world = build_world(cfg, progress=False)
    train = {p.text: p for p in world.prompts("train")}
    rows = [json.loads(line) for line in Path(gold["data"]).read_text().splitlines()]
    assert gold["empty_picks"] == 0  # gold never prefers an empty answer to all others here
    assert [r["prompt"] for r in rows] == list(train)
    kept = [json.loads(line)["prompt"] for line in Path(by_rm["data"]).read_text().splitlines()]
    assert len(kept) == len(train) - by_rm["empty_picks"] and set(kept) <= set(train)
    assert all(r["completion"].startswith(" ") and r["completion"][1:2] != " " for r in rows)
    quality = [world.gold.score(train[r["prompt"]], r["completion"][1:]).quality for r in rows]
    assert sum(quality) / len(quality) == pytest.approx(gold["gold_picked"])
    # Gold picks the best of each prompt's samples; the RM's picks (the same seeded samples)
    # can be no better by gold, and both beat the mean sample.
    assert gold["gold_all"] == pytest.approx(by_rm["gold_all"])
    assert gold["gold_picked"] >= by_rm["gold_picked"]
    assert gold["gold_picked"] > gold["gold_all"]

    # The run: the lab's SFT stage from the SFT run on the picks; trained, not copied.
    run = Run.open(gold["run"])
    saved = run.raw_config()["sft"]
    assert saved["base_run"] == str(sft_run.dir.resolve()) and saved["data"] == gold["data"]
    assert run.done
    before = load_policy(sft_run.model_dir)[0].state_dict()
    after = load_policy(run.model_dir)[0].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # It is not taken for the workspace's SFT run by the stages that follow.
    assert upstream(cfg, "sft").dir == sft_run.dir
    # A second round starts from it and judges against the first SFT run; it writes its own
    # picks and leaves the file the first round's run records as its data untouched.
    first = Path(gold["data"]).read_bytes()
    again = ei.main(argv[2:] + ["--sft", gold["run"], "--baseline", str(sft_run.dir)])
    assert again["data"] != gold["data"] and Path(gold["data"]).read_bytes() == first
    assert Run.open(again["run"]).raw_config()["sft"]["base_run"] == gold["run"]
    assert f"against {sft_run.dir.name}'s greedy answers" in capsys.readouterr().out

    # Rows: SFT judged against itself ties every prompt on both splits.
    itself = gold["rows"][sft_run.dir.name]
    for split in ("test", "train"):
        assert itself[split]["mean"] == 0.5 and itself[split]["fixed"] == 0
    n_fam = len({p.family for p in world.prompts("train")})
    assert f"train: {3 * n_fam} (3 a family)" in out


def test_expert_iteration_refuses_rm_without_pick_rm(rm_ready, capsys):
    from rlhf import ppo

    sft_run, rm_run = ppo.source_runs(rm_ready)
    with pytest.raises(SystemExit) as e:
        _script("expert_iteration").main(["--sft", str(sft_run.dir), "--rm", str(rm_run.dir)])
    assert e.value.code == 2
    assert "--rm RM_RUN goes with --pick rm" in capsys.readouterr().err


def test_policy_average_saves_the_mean_of_the_weights_and_judges_it_beside_its_members(
    micro_pipeline, tmp_path, capsys
):
    from rlhf.models import load_policy

    torch.set_num_threads(1)
    _, runs, sft_run = _pipeline_copy(micro_pipeline, tmp_path / "ws")
    ppo_runs = [p.run for p in runs if p.run.stage == "ppo"][:2]  # PPO, PPO-ptx: one SFT
    assert len(ppo_runs) == 2
    pa = _script("policy_average")
    argv = ["--sft", str(sft_run.dir), "--threads", "1", "--max-new-tokens", "16"]
    out = pa.main(argv + ["--runs", *map(str, (r.dir for r in ppo_runs))])

    # The saved policy is the mean of the two policies' weights, tensor by tensor.
    avg = load_policy(Path(out["model"]))[0].state_dict()
    a, b = (load_policy(r.model_dir)[0].state_dict() for r in ppo_runs)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # two different policies
    for k in a:
        assert torch.allclose(avg[k], (a[k] + b[k]) / 2, atol=1e-6), k
    # eta 2: SFT + 2 x (mean - SFT); it writes a folder of its own.
    sft = load_policy(sft_run.model_dir)[0].state_dict()
    far = pa.main(argv + ["--eta", "2", "--runs", *map(str, (r.dir for r in ppo_runs))])
    assert far["model"] != out["model"]
    moved = load_policy(Path(far["model"]))[0].state_dict()
    for k in a:
        assert torch.allclose(moved[k], sft[k] + 2 * ((a[k] + b[k]) / 2 - sft[k]), atol=1e-5), k

    # A run averaged with itself is that run: the same answers, so the same row.
    same = pa.main(argv + ["--runs", str(ppo_runs[0].dir), str(ppo_runs[0].dir)])
    assert same["rows"]["average"] == same["rows"][ppo_runs[0].dir.name]
    text = capsys.readouterr().out
    assert "| policy | validation | made right / wrong | test | made right / wrong |" in text
    assert "average - members' mean: validation +0.0%, test +0.0%" in text
    for split in ("validation", "test"):
        row = out["rows"]["average"][split]
        assert 0 <= row["lo"] <= row["mean"] <= row["hi"] <= 1


def test_policy_average_refuses_runs_not_trained_from_the_sft_run(micro_pipeline, tmp_path, capsys):
    _, runs, sft_run = _pipeline_copy(micro_pipeline, tmp_path / "ws")
    ppo_run = next(p.run for p in runs if p.run.stage == "ppo")
    pa = _script("policy_average")
    sft, ppo = str(sft_run.dir), str(ppo_run.dir)
    for given, says in [
        ([ppo, sft], f"{sft}: not a finished PPO run"),
        ([ppo], "--runs needs at least 2 PPO runs to average, got 1"),
    ]:
        with pytest.raises(SystemExit) as e:
            pa.main(["--sft", sft, "--runs", *given])
        assert e.value.code == 2
        assert says in capsys.readouterr().err
    # A PPO run whose recorded SFT run is another one.
    report = ppo_run.dir / "eval.json"
    data = json.loads(report.read_text())
    data["sft_run"] = str(tmp_path / "elsewhere" / "runs" / "sft__micro__0__x")
    report.write_text(json.dumps(data))
    with pytest.raises(SystemExit) as e:
        pa.main(["--sft", sft, "--runs", ppo, ppo])
    assert e.value.code == 2
    assert "only policies from the same SFT weights can be averaged" in capsys.readouterr().err


def test_reward_arms_trains_ppo_against_each_reward_and_judges_each_arm(
    micro_pipeline, tmp_path, capsys
):
    from rlhf.runs import Run, read_eval

    torch.set_num_threads(1)
    cfg, _, sft_run = _pipeline_copy(micro_pipeline, tmp_path / "ws")
    rm_run = next(iter(list_runs(cfg.workspace_dir, "rm")))
    arms = _script("reward_arms")
    common = ["--sft", str(sft_run.dir), "--max-new-tokens", "16"]
    trained = arms.main(
        common
        + ["--rm", str(rm_run.dir), "--recipe", "micro", "--seeds", "0"]
        + ["--set", "ppo.steps=2"]  # no --steps: one arm of the recipe's steps, as --set makes them
        + ["--parallel", "2", "--threads", "1"]
    )
    assert sorted(trained) == ["gold/2", "labelers/2", "rm/2"]
    for name, arm in trained.items():
        (row,) = arm["rows"]  # one seed
        run = Run.open(row["run"])
        saved = run.raw_config()["ppo"]
        assert (saved.get("reward", "rm"), saved["steps"]) == (name.split("/")[0], 2)
        assert read_eval(run)["sft_run"] == str(sft_run.dir.resolve())
        for split in ("validation", "test"):
            assert 0 <= row[split]["lo"] <= row[split]["mean"] <= row[split]["hi"] <= 1
            assert arm["mean"][split] == row[split]["mean"]
    out = capsys.readouterr().out
    assert "| reward | steps | validation, by seed | mean | test, by seed |" in out
    assert "| labelers | 2 |" in out and "Test win rate by family" in out

    # The answers table: right and declined answers per family, counted from the gold
    # labeler's judgements of each policy's greedy test answers, SFT's and each arm's.
    from rlhf.evaluate import greedy_judgements
    from rlhf.outputs import world_of_run
    from rlhf.pretrain import pick_eval_prompts

    world = world_of_run(sft_run.dir)
    prompts = pick_eval_prompts(world, 10_000)

    def counted(model_dir):
        pairs = list(zip(prompts, greedy_judgements(model_dir, world, prompts, 16), strict=True))
        return {
            f: {
                "right": sum(j.flags["correct"] for p, j in pairs if p.family == f),
                "declines": sum(j.flags["refuses"] for p, j in pairs if p.family == f),
            }
            for f in {p.family for p in prompts}
        }

    sft_counts = counted(sft_run.dir / "model")  # micro's SFT gets none right: zeros here
    for arm in trained.values():
        assert arm["sft_answers"] == {
            f: {**c, "n": sum(p.family == f for p in prompts)} for f, c in sft_counts.items()
        }
        assert arm["answers"] == counted(Path(arm["rows"][0]["run"]) / "model")
    assert "Test answers by family: right / declined" in out
    sft_row = next(line for line in out.splitlines() if line.startswith("| SFT | |"))
    arithmetic = sorted(sft_counts).index("arithmetic")
    cell = [c.strip() for c in sft_row.strip("|").split("|")][2 + arithmetic]
    assert cell == f"{sft_counts['arithmetic']['right']} / {sft_counts['arithmetic']['declines']}"

    # --runs judges the same runs again, trains none: the same figures.
    paths = [arm["rows"][0]["run"] for arm in trained.values()]
    before = len(list_runs(cfg.workspace_dir, "ppo"))
    judged = arms.main(common + ["--runs", *paths])
    assert len(list_runs(cfg.workspace_dir, "ppo")) == before
    assert {k: v["mean"] for k, v in judged.items()} == {k: v["mean"] for k, v in trained.items()}


def test_reward_arms_counts_right_and_declined_answers_per_family(micro_pipeline):
    """The answers table's counts, on answers of known outcome: to each sum its right answer,
    "I don't know." and a wrong answer; to each fact question "I don't know."."""
    from rlhf.world import build_world

    world = build_world(micro_pipeline, progress=False)
    sums = [p for p in world.prompts("test") if p.family == "arithmetic"][:4]
    facts = [p for p in world.prompts("test") if p.family == "facts"][:3]
    assert sums and facts
    prompts, answers = [], []
    for p in sums:
        a = p.meta["answer"]
        prompts += [p, p, p]
        answers += [f"It is {a}.", "I don't know.", f"It is {a + 3}."]
    prompts += facts
    answers += ["I don't know."] * len(facts)
    judged = [world.gold.score(p, r) for p, r in zip(prompts, answers, strict=True)]
    counts = _script("reward_arms").outcomes(prompts, judged)
    assert counts == {
        "arithmetic": {"right": len(sums), "declines": len(sums), "n": 3 * len(sums)},
        "facts": {"right": 0, "declines": len(facts), "n": len(facts)},
    }


def test_reward_arms_refuses_what_it_cannot_compare(micro_pipeline, tmp_path, capsys):
    _, runs, sft_run = _pipeline_copy(micro_pipeline, tmp_path / "ws")
    sft = str(sft_run.dir)
    ppo = str(next(p.run for p in runs if p.kind == "PPO").dir)
    ptx = str(next(p.run for p in runs if p.kind == "PPO-ptx").dir)
    arms = _script("reward_arms")
    for argv, says in [
        (["--sft", sft], "give --rm RM_RUN to train the arms, or --runs"),
        (["--sft", sft, "--runs", ppo, sft], f"{sft}: not a finished PPO run"),
        # PPO and PPO-ptx are both PPO against the RM for the same steps: one arm, two settings.
        (["--sft", sft, "--runs", ppo, ptx], "their ppo.ptx_coef differ"),
        (["--sft", sft, "--rm", sft, "--rewards", "judge"], "invalid choice: 'judge'"),
    ]:
        with pytest.raises(SystemExit) as e:
            arms.main(argv)
        assert e.value.code == 2
        assert says in capsys.readouterr().err
