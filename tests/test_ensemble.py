"""An ensemble of reward models (rm.ensemble, rlhf/ensemble.py): its score against its members'
scores combined by hand, the demonstration bias, its report, bad member lists refused before a
run directory exists, PPO starting its value model from a member, and a copied workspace."""

from __future__ import annotations

import shutil
import statistics

import pytest
import torch

from rlhf import ensemble, ppo, reward
from rlhf.config import load
from rlhf.errors import ConfigError, RunError
from rlhf.runs import Run, read_eval, saved_config, upstream
from rlhf.world import build_world

PROMPTS = ["Q: What is 2 plus 3?\nA:", "Q: Reverse the word boat.\nA:", "Q: Hi\nA:"]
RESPONSES = ["5.", "The answer is taob.", "Here it is: boat boat boat boat"]


@pytest.fixture(scope="module")
def members(rm_ready):
    """Two trained micro RMs of one workspace: the paper's, and one with the likelihood term."""
    first = upstream(rm_ready, "rm")  # the rm_ready fixture's own
    cfg = load("micro", workspace=rm_ready.workspace, **{"rm.likelihood_weight": 1.0})
    second = reward.train(cfg, progress=False)
    return rm_ready, first, second


def ensemble_cfg(cfg, *runs):
    return load("micro", workspace=cfg.workspace, **{"rm.ensemble": [str(r) for r in runs]})


def test_the_ensemble_is_the_scale_matched_mean_of_its_members(members):
    cfg, a, b = members
    ecfg = ensemble_cfg(cfg, a.dir, b.dir.name)  # a directory, or a run's name
    assert saved_config(ecfg, "rm")["rm"]["ensemble"] == [str(a.dir), b.dir.name]
    assert "ensemble" not in saved_config(cfg, "rm")["rm"]  # runs made before it still match
    run = reward.train(ecfg, progress=False)
    rm = reward.load_reward_model(run.model_dir)
    assert isinstance(rm, ensemble.EnsembleRM)

    # By hand: each member's spread over the training comparisons' distinct responses
    world = build_world(cfg, progress=False)
    held = {lab.id for lab in world.heldout_labelers}
    train = reward.split_comparisons(reward.training_comparisons(cfg)[0], held)["train"]
    seen = list(dict.fromkeys((c.prompt, x) for c in train for x in c.responses))
    ra, rb = (reward.load_reward_model(r.model_dir) for r in (a, b))
    sa, sb = (float(m.score([p for p, _ in seen], [x for _, x in seen]).std()) for m in (ra, rb))
    assert rm.scales == pytest.approx([sa, sb], rel=1e-5)
    mean_scale = statistics.fmean([sa, sb])
    by_hand = (ra.score(PROMPTS, RESPONSES) / sa + rb.score(PROMPTS, RESPONSES) / sb) / 2
    expected = by_hand * mean_scale + rm.bias
    assert rm.score(PROMPTS, RESPONSES).tolist() == pytest.approx(expected.tolist(), abs=1e-5)

    # paper 3.5: demonstrations score mean 0, as each member's do
    demos = world.demonstrations("train")
    assert (
        abs(float(rm.score([d.prompt for d in demos], [d.response for d in demos]).mean())) < 1e-3
    )

    # the report: the ensemble's accuracy by explicit pairs, and each member alone
    report = read_eval(run)
    hits = []
    for c in train:
        r = rm.score([c.prompt] * len(c.responses), c.responses)
        for i in range(len(r)):
            for j in range(len(r)):
                if c.ranking[i] < c.ranking[j]:
                    hits.append(1.0 if r[i] > r[j] else 0.5 if r[i] == r[j] else 0.0)
    assert report["accuracy/train"] == pytest.approx(sum(hits) / len(hits), abs=1e-6)
    assert [m["run"] for m in report["ensemble"]] == [str(a.dir), str(b.dir)]
    own = read_eval(a)["accuracy/val_heldout_labelers"]
    assert report["ensemble"][0]["accuracy/val_heldout_labelers"] == own
    assert report["steps"] == 0 and 0 <= report["accuracy/val_heldout_labelers"] <= 1
    assert "ensemble member" in reward.summary(report)


@pytest.mark.parametrize(
    "names, overrides, message",
    [
        (["A"], {}, "at least two RM runs"),
        (["A", "A"], {}, "names a run twice"),
        (["A", "/nonexistent/rm__x"], {}, "no such run directory"),
        (["A", "SFT"], {}, "not a finished RM run"),
        (["A", "B"], {"rm.likelihood_weight": 1.0}, "on its members' runs"),
        (["A", "B"], {"world.seed": 5}, "another world"),
    ],
)
def test_a_bad_member_list_is_refused_before_a_run_exists(members, names, overrides, message):
    cfg, a, b = members
    sft = reward.sft_model_dir(cfg).parent
    paths = [str({"A": a.dir, "B": b.dir, "SFT": sft}.get(n, n)) for n in names]
    bad = load("micro", workspace=cfg.workspace, **{"rm.ensemble": paths, **overrides})
    before = sorted((cfg.workspace_dir / "runs").iterdir())
    with pytest.raises(ConfigError, match=message) as e:
        reward.train(bad, progress=False)
    assert "rm.ensemble" in str(e.value)
    assert sorted((cfg.workspace_dir / "runs").iterdir()) == before


def test_combine_keeps_the_training_rewards_so_the_stage_scores_them_once(members, monkeypatch):
    cfg, a, b = members
    held = {lab.id for lab in build_world(cfg, progress=False).heldout_labelers}
    train = reward.split_comparisons(reward.training_comparisons(cfg)[0], held)["train"]
    seen = list(dict.fromkeys((c.prompt, x) for c in train for x in c.responses))
    prompts, responses = [p for p, _ in seen] + PROMPTS, [x for _, x in seen] + RESPONSES
    rm = ensemble.combine([a, b], prompts[: len(seen)], responses[: len(seen)])
    rm.bias = 0.25
    fresh = ensemble.EnsembleRM(list(rm.members), rm.scales, rm.runs, bias=0.25)  # knows nothing
    expected = fresh.score(prompts, responses)
    calls = []
    for m in rm.members:  # count the texts that reach each member
        monkeypatch.setattr(
            m, "score", lambda p, r, n=64, f=m.score: calls.append(len(p)) or f(p, r, n)
        )
    assert rm.score(prompts, responses).tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    assert calls == [len(PROMPTS), len(PROMPTS)]  # the training responses came from combine


def test_an_ensemble_is_no_member(members):
    cfg, a, b = members
    run = reward.train(ensemble_cfg(cfg, a.dir, b.dir), progress=False)
    with pytest.raises(ConfigError, match="an ensemble itself"):
        reward.train(ensemble_cfg(cfg, a.dir, run.dir), progress=False)


def test_ppo_starts_its_value_model_from_a_member_and_trains_against_the_ensemble(members):
    cfg, a, b = members
    run = reward.train(ensemble_cfg(cfg, a.dir, b.dir), progress=False)
    m = ppo.load_models(reward.sft_model_dir(cfg), run.model_dir)
    assert m.value_init == "rm" and isinstance(m.reward, ensemble.EnsembleRM)
    first = reward.load_reward_model(a.model_dir).model.state_dict()
    assert all(torch.equal(v, first[k]) for k, v in m.value.state_dict().items())
    assert not any(q.requires_grad for q in m.reward.parameters())  # frozen
    pcfg = load("micro", workspace=cfg.workspace, **{"ppo.rm_run": str(run.dir), "ppo.steps": 2})
    trained = ppo.train(pcfg, progress=False)
    scores = [row["objective/scores"] for row in trained.metrics() if "objective/scores" in row]
    assert len(scores) == 2 and all(s == s for s in scores)  # finite, from the ensemble


def test_a_copied_workspace_finds_its_members_by_name(members, tmp_path):
    cfg, a, b = members
    run = reward.train(ensemble_cfg(cfg, a.dir, b.dir), progress=False)
    expected = reward.load_reward_model(run.model_dir).score(PROMPTS, RESPONSES)
    shutil.copytree(cfg.workspace_dir, tmp_path / "copy")
    copied = tmp_path / "copy" / "runs" / run.dir.name / "model"
    moved = tmp_path / "moved"
    moved.mkdir()
    for r in (a, b):  # the recorded member directories are gone
        shutil.move(r.dir, moved / r.dir.name)
    try:
        rm = reward.load_reward_model(copied)
        assert rm.score(PROMPTS, RESPONSES).tolist() == pytest.approx(expected.tolist())
        assert all(str(tmp_path / "copy") in str(m.model_dir) for m in rm.members)
        with pytest.raises(RunError, match=f"member {a.dir} is gone"):
            reward.load_reward_model(run.model_dir)  # the original workspace lost its members
    finally:
        for r in (a, b):
            shutil.move(moved / r.dir.name, r.dir)
    assert Run.open(a.dir).done


@pytest.mark.slow
def test_the_rewards_page_shows_the_members_and_scores_with_the_ensemble(members, monkeypatch):
    from test_dashboard import no_exception, page

    cfg, a, b = members
    run = reward.train(ensemble_cfg(cfg, a.dir, b.dir), progress=False)
    at = page("rewards", cfg.workspace_dir, monkeypatch)
    at.selectbox(key="rewards_rm").set_value(run.dir.name).run()
    no_exception(at)
    assert [s.value for s in at.subheader][0] == "Ensemble members"
    table = at.dataframe[0].value
    assert list(table["reward model"]) == [a.dir.name, b.dir.name, "the ensemble"]
    report = read_eval(run)
    assert table["held-out labelers"].iloc[-1] == report["accuracy/val_heldout_labelers"]
    at.slider(key="rewards_per_family").set_value(2)
    at.button(key="rewards_score").click().run()
    no_exception(at)
    means = at.dataframe[-1].value  # the members' table, then the policies' mean scores
    assert len(means) >= 1 and means["rm_score"].notna().all()


def test_a_damaged_ensemble_file_is_named(members, tmp_path):
    cfg, a, b = members
    run = reward.train(ensemble_cfg(cfg, a.dir, b.dir), progress=False)
    shutil.copytree(run.dir, tmp_path / "runs" / run.dir.name)
    saved = tmp_path / "runs" / run.dir.name / "model" / ensemble.ENSEMBLE_FILE
    saved.write_text('{"members": ["x"]}')  # no scales
    with pytest.raises(RunError, match=f"{saved}: cannot read the ensemble .KeyError"):
        reward.load_reward_model(saved.parent)
    assert reward.load_reward_model(run.model_dir).scales  # the run's own file is untouched
