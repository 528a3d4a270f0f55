"""Stage 0: the pretraining loop, resume, perplexity, and the behaviour report.

Runs on a fake world (a few templated documents and prompts) so the loop is tested apart
from the world generator; `test_micro_recipe_end_to_end` runs the real world when it exists.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random

import pytest
import torch

from rlhf import config as lab_config
from rlhf.config import PretrainConfig
from rlhf.evaluate import behaviour_report, fact_cloze_accuracy, heldout_loss, perplexity
from rlhf.models import build_base_model, load_policy
from rlhf.runs import Run
from rlhf.tokenizer import train_tokenizer
from rlhf.world.types import ClozeItem, Judgement, Prompt

torch.set_num_threads(1)

COUNTRIES = {"Vell": "Orm", "Zan": "Kip", "Ost": "Lur", "Mira": "Tob"}
FAMILIES = ("facts", "misconception", "arithmetic")


class FakeGold:
    def score(self, prompt: Prompt, response: str) -> Judgement:
        answer = prompt.meta["answer"]
        correct = response.strip().startswith(answer)
        flags = {
            "correct": correct,
            "fails_to_follow": not correct,
            "popular_false": prompt.family == "misconception" and "green" in response,
        }
        return Judgement(likert=6 if correct else 2, quality=float(correct), flags=flags)


class FakeWorld:
    """The part of the World interface that pretraining uses (rlhf/world/__init__.py)."""

    def __init__(self, n_docs: int = 300, seed: int = 0):
        rng = random.Random(seed)
        docs = []
        for i in range(n_docs):
            c = rng.choice(sorted(COUNTRIES))
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            docs.append(
                rng.choice(
                    [
                        f"The capital of {c} is {COUNTRIES[c]}. People in {c} like tea.",
                        f"Q: What is {a} plus {b}?\nA: Why do you ask? It is {a + b}.",
                        "Q: What colour is the sea?\nA: The sea is green, everyone knows.",
                        f"Story {i}: a cat from {c} walked to {COUNTRIES[c]} and slept.",
                    ]
                )
            )
        self.docs = docs
        self._tok = train_tokenizer(docs, 320)
        self.gold = FakeGold()

    def train_documents(self) -> list[str]:
        return self.docs[: int(len(self.docs) * 0.9)]

    def heldout_documents(self) -> list[str]:
        return self.docs[int(len(self.docs) * 0.9) :]

    def tokenizer(self):
        return self._tok

    def prompts(self, split: str, family: str | None = None) -> list[Prompt]:
        out = []
        for i, c in enumerate(sorted(COUNTRIES)):
            out += [
                Prompt(f"facts-{split}-{i}", "facts", "honest", split,
                       f"What is the capital of {c}?", {"answer": COUNTRIES[c]}),
                Prompt(f"misconception-{split}-{i}", "misconception", "honest", split,
                       "What colour is the sea?", {"answer": "The sea is blue"}),
                Prompt(f"arithmetic-{split}-{i}", "arithmetic", "helpful", split,
                       f"What is {i} plus 2?", {"answer": str(i + 2)}),
            ]  # fmt: skip
        return [p for p in out if family is None or p.family == family]

    def cloze_items(self, split: str = "train") -> list[ClozeItem]:
        return [ClozeItem(f"The capital of {c} is", a, split) for c, a in COUNTRIES.items()]


@pytest.fixture(scope="module")
def fake_world() -> FakeWorld:
    return FakeWorld()


@pytest.fixture
def use_fake_world(monkeypatch, fake_world):
    """pretrain.train calls rlhf.world.build_world(cfg); point it at the fake world."""
    import rlhf.world

    monkeypatch.setattr(rlhf.world, "build_world", lambda cfg, **kw: fake_world, raising=False)
    return fake_world


def tiny_cfg(tmp_path, **overrides):
    sizes = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, block_size=32)
    steps = dict(batch_size=4, warmup_steps=2, max_steps=6, log_every=1, eval_every=3)
    kw = {f"pretrain__{k}": v for k, v in {**sizes, **steps, **overrides}.items()}
    kw.setdefault("pretrain__checkpoint_every", 3)
    return lab_config.load(
        None, workspace=str(tmp_path), threads=1, pretrain__eval_prompts=6,
        pretrain__max_new_tokens=8, **kw,
    )  # fmt: skip


def test_every_parameter_changes_after_one_step(tmp_path, use_fake_world):
    """TRL-style: snapshot the initial weights, take one step, every trainable tensor moved."""
    cfg = tiny_cfg(tmp_path, max_steps=1, warmup_steps=1)
    run = train_fake(cfg, tmp_path / "run")
    init = build_base_model(cfg.pretrain, use_fake_world.tokenizer(), seed=cfg.seed)
    trained, _ = load_policy(run.model_dir)
    after = dict(trained.named_parameters())
    for name, p0 in init.named_parameters():
        assert not torch.equal(p0, after[name]), f"{name} did not change"


def train_fake(cfg, run_dir):
    from rlhf.pretrain import train

    return train(cfg, run_dir=run_dir, progress=False)


def test_run_files_and_report(tmp_path, use_fake_world):
    cfg = tiny_cfg(tmp_path)
    run = train_fake(cfg, tmp_path / "run")
    assert run.status["status"] == "done" and run.status["wall_time_s"] > 0
    rows = run.metrics()
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4, 5, 6]
    assert {"train/loss", "train/lr", "train/tokens_per_sec"} <= set(rows[0])
    assert [r["step"] for r in rows if "eval/loss" in r] == [3, 6]
    assert rows[-1]["eval/perplexity"] == pytest.approx(math.exp(rows[-1]["eval/loss"]))
    report = json.loads((run.dir / "eval.json").read_text())
    assert report["train_tokens"] == 6 * 4 * 32
    assert report["params"] > 0 and report["heldout_perplexity"] > 1
    assert 0 <= report["fact_cloze_accuracy"] <= 1
    behaviour = report["behaviour"]
    assert set(behaviour["per_family"]) == set(FAMILIES)  # round-robin keeps every family
    assert 0 <= behaviour["misconception_popular_false"] <= 1
    assert 0 <= behaviour["fails_to_follow"] <= 1
    model, tok = load_policy(run.model_dir)
    assert tok.pad_token_id != tok.eos_token_id and model.config.tie_word_embeddings
    # Training again on a done run returns it unchanged.
    assert train_fake(cfg, run.dir).dir == run.dir


@pytest.mark.parametrize("killed_in, checkpoint", [(5, 3), (3, None)])
def test_resume_reproduces_an_uninterrupted_run(
    tmp_path, use_fake_world, monkeypatch, killed_in, checkpoint
):
    cfg = tiny_cfg(tmp_path)
    full = train_fake(cfg, tmp_path / "full")

    # Kill the second run inside step 5 (after the checkpoint at step 3 and the log of step 4),
    # or inside step 3 (before the first checkpoint: it starts over in the same directory).
    import rlhf.pretrain

    real_lr_at = rlhf.pretrain.lr_at

    def crash(step, *a):
        if step == killed_in - 1:  # lr_at counts steps from 0
            raise KeyboardInterrupt("simulated kill")
        return real_lr_at(step, *a)

    monkeypatch.setattr(rlhf.pretrain, "lr_at", crash)
    with pytest.raises(KeyboardInterrupt):
        train_fake(cfg, tmp_path / "resumed")
    run = Run.open(tmp_path / "resumed")
    assert run.status["status"] == "failed" and "simulated kill" in run.status["error"]
    assert max(r["step"] for r in run.metrics()) == killed_in - 1
    saved = run.checkpoint_dir / "state.json"
    assert (json.loads(saved.read_text())["step"] if saved.exists() else None) == checkpoint

    monkeypatch.setattr(rlhf.pretrain, "lr_at", real_lr_at)
    resumed = train_fake(cfg, tmp_path / "resumed")
    assert resumed.status["status"] == "done"
    a, b = full.metrics(), resumed.metrics()
    assert [r["step"] for r in a] == [r["step"] for r in b]  # no duplicated steps
    assert a[-1]["train/loss"] == b[-1]["train/loss"]
    assert a[-1]["eval/loss"] == b[-1]["eval/loss"]
    m_full, _ = load_policy(full.model_dir)
    m_res, _ = load_policy(resumed.model_dir)
    for (name, p), q in zip(m_full.named_parameters(), m_res.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_perplexity_matches_hand_computation(fake_world):
    tok = fake_world.tokenizer()
    pcfg = PretrainConfig(
        hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, block_size=8
    )
    model = build_base_model(pcfg, tok, seed=1).eval()
    docs = ["The capital of Vell is Orm.", "Q: What is 2 plus 3?\nA: 5", "cat"]
    # By hand: the token stream (EOS after each document) in blocks of 8; inside a block,
    # token t is predicted from tokens < t of the same block, one forward pass per token.
    ids: list[int] = []
    for d in docs:
        ids += tok(d)["input_ids"] + [tok.eos_token_id]
    nll, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids), 8):
            block = ids[start : start + 8]
            for t in range(1, len(block)):
                logits = model(input_ids=torch.tensor([block[:t]])).logits[0, -1]
                nll -= torch.log_softmax(logits, -1)[block[t]].item()
                n += 1
    assert len(ids) % 8 != 0  # the remainder block (and batch padding) is exercised
    expected = math.exp(nll / n)
    assert perplexity(model, tok, docs, block_size=8, batch_size=2) == pytest.approx(
        expected, rel=1e-4
    )
    assert heldout_loss(model, tok, docs, 8, batch_size=16) == pytest.approx(nll / n, rel=1e-4)


class ScriptedGold:
    def score(self, prompt, response):
        return Judgement(
            likert=3, quality=0.5, flags={"fails_to_follow": True, "popular_false": True}
        )


def test_cloze_and_behaviour_report_shapes(fake_world):
    tok = fake_world.tokenizer()
    pcfg = PretrainConfig(
        hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, block_size=32
    )
    model = build_base_model(pcfg, tok, seed=0)
    acc = fact_cloze_accuracy(model, tok, fake_world.cloze_items("test"))
    assert 0.0 <= acc <= 1.0
    world = type("W", (), {"gold": ScriptedGold()})()
    report = behaviour_report(model, tok, world, fake_world.prompts("test"), max_new_tokens=4)
    assert report["fails_to_follow"] == 1.0 and report["misconception_popular_false"] == 1.0
    assert report["per_family"]["facts"]["n"] == len(COUNTRIES)


def test_starts_with_answer_needs_a_word_boundary():
    from rlhf.evaluate import _starts_with_answer

    assert _starts_with_answer(" Orm. Then", "Orm")
    assert _starts_with_answer("Orm", " Orm")
    assert not _starts_with_answer(" Ormax", "Orm")
    assert not _starts_with_answer(" The Orm", "Orm")


@pytest.mark.skipif(
    importlib.util.find_spec("rlhf.world.build") is None, reason="rlhf.world.build not written yet"
)
def test_micro_recipe_end_to_end(tmp_path):
    from rlhf.pretrain import train

    cfg = lab_config.load("micro", workspace=str(tmp_path))
    run = train(cfg, progress=False)
    assert run.status["status"] == "done"
    report = json.loads((run.dir / "eval.json").read_text())
    assert report["steps"] == cfg.pretrain.max_steps
    assert report["behaviour"]["n_prompts"] == cfg.pretrain.eval_prompts
    assert report["heldout_perplexity"] < len(load_policy(run.model_dir)[1])  # beats uniform
