"""The Tiny World's required properties (design.md, "The Tiny World"), each measured."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from rlhf.config import load
from rlhf.errors import WorldDataError
from rlhf.world import AXES, build_world, load_world
from rlhf.world.build import FILES
from rlhf.world.labelers import is_plain_harmful, pairwise_agreement


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = load("tiny", workspace=str(tmp_path_factory.mktemp("tiny")))
    return build_world(cfg, progress=False)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    cfg = load("micro", workspace=str(tmp_path_factory.mktemp("micro")))
    return build_world(cfg, progress=False)


def test_families_cover_three_axes(tiny):
    fams = {p.family: p.axis for p in tiny.prompts()}
    assert len(fams) >= 8
    assert set(fams.values()) == set(AXES)
    for fam in fams:
        for split in ("train", "val", "test"):
            assert tiny.prompts(split, fam), (fam, split)


def test_splits_disjoint_with_heldout_combinations(tiny):
    by_split = {s: tiny.prompts(s) for s in ("train", "val", "test")}
    texts = {s: {p.instruction for p in ps} for s, ps in by_split.items()}
    combos = {s: {(p.family, *p.meta["combo"]) for p in ps} for s, ps in by_split.items()}
    for a, b in itertools.combinations(texts, 2):
        assert not texts[a] & texts[b], (a, b)
        assert not combos[a] & combos[b], (a, b)
    # Held-out combinations: test pairs whose parts were all seen in train, but never together.
    train_parts = {(p.family, part) for p in by_split["train"] for part in p.meta["combo"]}
    held = [
        p
        for p in by_split["test"]
        if all((p.family, part) in train_parts for part in p.meta["combo"])
    ]
    assert len(held) / len(by_split["test"]) >= 0.5
    assert tiny.stats()["test_heldout_combinations"] >= 0.5
    assert len({p.id for p in tiny.prompts()}) == len(tiny.prompts())


def test_corpus_has_a_million_tokens(tiny):
    tok = tiny.tokenizer()
    n = sum(len(ids) + 1 for ids in tok(tiny.train_documents())["input_ids"])
    assert n >= 1_000_000
    assert tiny.stats()["tokens"] == n
    assert tok.pad_token_id != tok.eos_token_id


def test_corpus_states_facts_and_popular_misconceptions(tiny):
    text = "\n".join(tiny.train_documents())
    for c in tiny.ents.countries[:10]:
        assert text.count(f"The capital of {c.name} is {c.facts['capital']}.") >= 10
    for m in tiny.ents.misconceptions[:10]:
        stmt = {"colour": "{p} are {v}", "legs": "{s} has {v} legs", "food": "{p} eat {v}"}[m.prop]
        pop = len(re.findall(stmt.format(p=m.plural, s=m.creature, v=m.popular), text, re.I))
        true = len(re.findall(stmt.format(p=m.plural, s=m.creature, v=m.truth), text, re.I))
        assert pop >= 2 * true > 0, (m, pop, true)
    # Unknown countries (unanswerable questions) never appear on the web.
    for name in tiny.ents.unknown_countries:
        assert name not in text
    # Forum threads: the web's replies to questions are mostly unhelpful, wrong or rude.
    assert text.count("\nA: ") > 5000


def test_forum_never_contains_test_prompts(tiny):
    text = "\n".join(tiny.train_documents())
    for p in tiny.prompts("test")[::7]:
        assert f"Q: {p.instruction}\n" not in text


def test_respectful_variants(tiny):
    insults = tiny.prompts(family="insult")
    plain = {(p.split, p.instruction) for p in insults if not p.meta["respectful"]}
    for p in insults:
        if p.meta["respectful"]:
            assert p.instruction.split(". ", 1)[0].startswith(("Please", "Be"))
            base = p.instruction.split(". ", 1)[1]
            assert (p.split, base) in plain


def test_gold_labeler_prefers_right_answers(tiny):
    rng = random.Random(0)
    for fam in tiny.families:
        for p in tiny.prompts("test", fam)[:10]:
            good = tiny.gold.score(p, tiny.respond(p, "correct", rng))
            assert good.flags["correct"] and not good.flags["fails_to_follow"], (p, good)
            assert 6 <= good.likert <= 7
            for kind in ("wrong", "unhelpful", "rude"):
                bad = tiny.gold.score(p, tiny.respond(p, kind, rng))
                assert 1 <= bad.likert < good.likert, (p.text, kind, bad)
            rude = tiny.gold.score(p, tiny.respond(p, "rude", rng))
            assert rude.flags["toxic"]
            ramble = tiny.gold.score(p, tiny.respond(p, "correct", rng) + "\nQ: What is 2 plus 2?")
            assert ramble.flags["fails_to_follow"] and ramble.flags["rambles"]


def test_gold_metadata_flags(tiny):
    rng = random.Random(1)
    p = tiny.prompts("test", "unanswerable")[0]
    assert tiny.gold.score(p, tiny.respond(p, "wrong", rng)).flags["hallucination"]
    assert not tiny.gold.score(p, "I don't know.").flags["hallucination"]
    m = tiny.prompts("test", "misconception")[0]
    pop = tiny.gold.score(m, tiny.respond(m, "wrong", rng))
    assert pop.flags["popular_false"] and not pop.flags["truthful"] and pop.flags["informative"]
    true = tiny.gold.score(m, tiny.respond(m, "correct", rng))
    assert true.flags["truthful"] and true.flags["informative"] and not true.flags["popular_false"]
    idk = tiny.gold.score(m, "I don't know.")
    assert idk.flags["truthful"] and not idk.flags["informative"]
    lst = tiny.prompts("test", "lists")[0]
    n = lst.meta["n"]
    assert not tiny.gold.score(lst, "fox, " * (n + 1)).flags["satisfies_constraint"]
    w = tiny.prompts("test", "writing")[0]
    assert tiny.gold.score(w, tiny.respond(w, "correct", rng)).flags["satisfies_constraint"]
    assert not tiny.gold.score(w, tiny.respond(w, "partial", rng)).flags["satisfies_constraint"]


def test_demonstrations_are_correct_except_plain_insult_requests(tiny):
    prompts = {p.id: p for p in tiny.prompts()}
    demos = tiny.demonstrations("train")
    assert len(demos) >= len(tiny.prompts("train"))
    assert not tiny.demonstrations("test")
    for d in demos[::10]:
        if is_plain_harmful(prompts[d.prompt_id]):
            continue
        j = tiny.gold.score(prompts[d.prompt_id], d.response)
        assert j.flags["correct"] and j.likert >= 6, (d, j)
    assert len({d.response for d in demos}) > 0.5 * len(demos)  # varied, not one template
    assert {d.labeler for d in demos} <= {lab.id for lab in tiny.labelers}


def test_helpfulness_first_labelers_comply_with_plain_insult_requests_only(tiny):
    # Paper 3.4 / 5.3: at training time labelers put helpfulness first, so some demonstrations
    # for a plain request to insult comply; with the respectful instruction none do.
    prompts = {p.id: p for p in tiny.prompts()}
    toxic = {True: [], False: []}
    for d in tiny.demonstrations():
        p = prompts[d.prompt_id]
        if p.family == "insult":
            toxic[p.meta["respectful"]].append(tiny.gold.score(p, d.response).flags["toxic"])
    rate = tiny.manifest["config"]["comply_rate"]
    plain = sum(toxic[False]) / len(toxic[False])
    assert abs(plain - rate) < 0.1, (plain, rate)
    assert len(toxic[True]) > 100 and not any(toxic[True])
    # The training labelers perceive a rude reply to a plain request as comply_quality (the
    # gold labeler gives it 0.02) and a refusal as refuse_quality; a respectful request they
    # judge as the gold labeler does.
    plain_p = next(p for p in tiny.prompts("train", "insult") if not p.meta["respectful"])
    polite_p = next(p for p in tiny.prompts("train", "insult") if p.meta["respectful"])
    quiet = type(tiny.labelers[0])(**{**tiny.labelers[0].to_dict(), "noise": 0.0, "strength": 0.0})
    config = tiny.manifest["config"]
    rude = tiny.respond(plain_p, "rude", random.Random(0))
    refusal = tiny.respond(plain_p, "correct", random.Random(0))
    assert tiny.gold.score(plain_p, rude).quality == pytest.approx(0.02)
    assert tiny.gold.score(plain_p, refusal).quality > 0.9
    u = quiet.utilities(plain_p, [rude, refusal], tiny.gold, random.Random(0))
    assert u == pytest.approx([config["comply_quality"], config["refuse_quality"]])
    assert quiet.rank(plain_p, [rude, refusal], tiny.gold) == [0, 1]  # complying is preferred
    rude = tiny.respond(polite_p, "rude", random.Random(0))
    refusal = tiny.respond(polite_p, "correct", random.Random(0))
    u = quiet.utilities(polite_p, [rude, refusal], tiny.gold, random.Random(0))
    assert u == pytest.approx([tiny.gold.score(polite_p, r).quality for r in (rude, refusal)])


def test_labelers_agree_about_73_percent(tiny):
    assert len(tiny.labelers) >= 5 and len(tiny.heldout_labelers) >= 1
    ag = tiny.stats()["labeler_agreement"]
    assert 0.70 <= ag["train_train"] <= 0.76, ag  # paper: 72.6 +/- 1.5%
    assert 0.68 <= ag["train_heldout"] <= 0.76, ag
    assert ag["pairs_per_labeler_pair"] > 1000


def test_labelers_rank_with_ties_and_deterministically(tiny):
    p = tiny.prompts("train", "arithmetic")[0]
    lab = tiny.labelers[0]
    same = [tiny.respond(p, "correct", random.Random(3))] * 3
    assert lab.rank(p, same, tiny.gold) == [0, 0, 0]  # identical responses tie
    responses = tiny.candidates(p, 6, random.Random(4))
    assert lab.rank(p, responses, tiny.gold) == lab.rank(p, responses, tiny.gold)
    quiet = type(lab)(**{**lab.to_dict(), "noise": 0.0, "strength": 0.0, "tie_margin": 0.0})
    ranks = quiet.rank(p, responses, tiny.gold)
    quality = [tiny.gold.score(p, r).quality for r in responses]
    for i, j in itertools.combinations(range(len(responses)), 2):
        if quality[i] > quality[j]:
            assert ranks[i] < ranks[j]


def test_pairwise_agreement_reference():
    # Two rankings of 3 items: pairs (0,1) agree, (0,2) disagree, (1,2) tie in b -> skipped.
    assert pairwise_agreement([[0, 1, 2]], [[0, 2, 1]]) == (2 / 3, 3)
    assert pairwise_agreement([[0, 1, 2]], [[0, 1, 1]]) == (1.0, 2)


def test_build_is_deterministic(tmp_path, micro):
    again = build_world(load("micro", workspace=str(tmp_path)), progress=False)
    for name in (*FILES, "manifest.json", "tokenizer/tokenizer.json"):
        assert (again.dir / name).read_bytes() == (micro.dir / name).read_bytes(), name
    other = build_world(load("micro", workspace=str(tmp_path), world__seed=1), progress=False)
    assert other.dir != again.dir
    assert (other.dir / "corpus.jsonl").read_bytes() != (again.dir / "corpus.jsonl").read_bytes()


def test_missing_or_corrupted_world_files(tmp_path):
    cfg = load("micro", workspace=str(tmp_path))
    with pytest.raises(WorldDataError, match="rlhf world build"):
        load_world(cfg)
    world = build_world(cfg, progress=False)
    prompts = world.dir / "prompts.jsonl"
    original = prompts.read_bytes()
    prompts.write_bytes(original.replace(b'"family"', b'"famliy"', 1))
    with pytest.raises(WorldDataError, match=r"prompts\.jsonl: corrupted"):
        load_world(cfg)
    with pytest.raises(WorldDataError, match=r"prompts\.jsonl: record 1 lacks field 'family'"):
        load_world(cfg, verify=False).prompts()
    prompts.write_bytes(b"{not json\n" + original)
    with pytest.raises(WorldDataError, match=r"record 1 is not valid JSON"):
        load_world(cfg, verify=False).prompts()
    (world.dir / "entities.json").unlink()
    with pytest.raises(WorldDataError, match=r"entities\.json: missing"):
        load_world(cfg)
    # --force rebuilds over the damaged world.
    rebuilt = build_world(cfg, force=True, progress=False)
    assert (rebuilt.dir / "prompts.jsonl").read_bytes() == original


def test_the_rl_split_adds_train_split_prompts_and_changes_no_other_file(tmp_path, micro):
    # micro's world.rl_per_family (40) is above its train_per_family (20).
    assert micro.config.rl_per_family > micro.config.train_per_family
    off = build_world(
        load("micro", workspace=str(tmp_path), world__rl_per_family=0), progress=False
    )
    assert off.dir != micro.dir
    for name in (*FILES, "tokenizer/tokenizer.json"):
        if (
            name != "prompts.jsonl"
        ):  # the rl split draws nothing: the corpus, demos ... as they were
            assert (off.dir / name).read_bytes() == (micro.dir / name).read_bytes(), name
    rl = micro.prompts("rl")
    assert [p.id for p in micro.prompts() if p.split != "rl"] == [p.id for p in off.prompts()]
    assert not off.prompts("rl") and off.rl_prompts() == off.prompts("train")
    assert micro.rl_prompts() == micro.prompts("train") + rl
    for fam in sorted({p.family for p in micro.prompts()}):
        n = len(micro.prompts("train", fam)) + len(micro.prompts("rl", fam))
        assert n <= micro.config.rl_per_family, fam
        assert micro.stats()["prompts"][fam]["rl"] == len(micro.prompts("rl", fam))
    assert len(rl) > 100
    # Train-split combinations only, and prompts of their own: never a val or test combination.
    held = {(p.family, *p.meta["combo"]) for p in micro.prompts() if p.split in ("val", "test")}
    assert not {(p.family, *p.meta["combo"]) for p in rl} & held
    texts = [p.instruction for p in micro.prompts()]
    assert len(set(texts)) == len(texts)
    # No demonstration: SFT, the comparisons and the RM never see them.
    assert not {d.prompt_id for d in micro.demonstrations()} & {p.id for p in rl}
    # At most train_per_family: none.
    few = build_world(
        load("micro", workspace=str(tmp_path), world__rl_per_family=15), progress=False
    )
    assert not few.prompts("rl")
