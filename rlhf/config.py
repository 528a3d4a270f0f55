"""Typed configs, one dataclass per stage, and the loader that resolves a recipe.

A recipe is a YAML file in lab/recipes/ (or any path) whose top-level keys are the fields
of `LabConfig`; stage sections are nested mappings. Overrides are data, never edits:
`--set pretrain.lr=1e-3` on the CLI or `load("micro", pretrain__lr=1e-3)` / `load("micro",
**{"pretrain.lr": 1e-3})` in Python. Unknown keys, wrong types and values outside a field's
bounds (`doc(..., gt=0)`) fail with a `ConfigError` that names the source (file or override)
and the key. The resolved config is saved as
config.json in every run directory (rlhf.runs).

Every field carries its documentation in `metadata["help"]` (as TRL does), so
`rlhf config --help`-style listings and the docs are generated from one place.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlhf.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPES_DIR = REPO_ROOT / "lab" / "recipes"
# PyYAML (YAML 1.1) reads "1e-3" as a string: a float needs a dot. Accept it for float fields.
_FLOAT_TEXT = re.compile(r"[-+]?(\d[\d_]*\.?[\d_]*|\.\d[\d_]*)([eE][-+]?\d+)?")


LLAMA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_KEYS = ("lora_r", "lora_alpha", "lora_dropout", "lora_targets")  # rlhf.runs.saved_config


def doc(default: Any, help: str, **bounds: Any) -> Any:  # noqa: A002 - mirrors TRL's field(metadata={"help"})
    """A dataclass field with a default, its documentation and the values it allows.

    `bounds`: any of gt, ge, lt, le (numbers) and choices (strings; for a list, each item).
    A value outside them fails when it is set from a recipe, an override or a keyword, with
    the source and the key (`check_bounds`), before any stage starts; `rlhf config docs`
    lists them (`allowed`)."""
    unknown = set(bounds) - set(_BOUNDS)
    if unknown:
        raise TypeError(f"doc(): unknown bounds {sorted(unknown)}")
    meta = {"help": help, **bounds}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: default.copy(), metadata=meta)
    return field(default=default, metadata=meta)


# bound -> (test that the value passes, how the docs and errors write it)
_BOUNDS: dict[str, tuple[Any, str]] = {
    "gt": (lambda v, b: v > b, "> {}"),
    "ge": (lambda v, b: v >= b, ">= {}"),
    "lt": (lambda v, b: v < b, "< {}"),
    "le": (lambda v, b: v <= b, "<= {}"),
    "choices": (lambda v, b: v in b, "one of {}"),
}


def allowed(meta: Any) -> str:
    """The bounds of a field's metadata in words, e.g. '> 0', '>= 0, <= 1', 'one of rm, gold';
    '' for a field without bounds."""
    parts = []
    for name, (_, text) in _BOUNDS.items():
        if name in meta:
            bound = meta[name]
            parts.append(text.format(", ".join(bound) if name == "choices" else bound))
    return ", ".join(parts)


def check_bounds(value: Any, meta: Any, source: str, key: str) -> None:
    """A ConfigError naming the source and the key when `value` (a coerced field value)
    is outside the field's bounds; a list is checked item by item."""
    for item in value if isinstance(value, list) else [value]:
        for name, (ok, _) in _BOUNDS.items():
            if name in meta and item is not None and not ok(item, meta[name]):
                raise ConfigError(f"{source}: '{key}' must be {allowed(meta)}, got {item!r}")


@dataclass
class WorldConfig:
    """The Tiny World generator (rlhf/world): corpus, prompts, demonstrations, labelers."""

    seed: int = doc(0, "Seed of the world generator. The same seed gives byte-identical files.")
    corpus_words: int = doc(
        900_000,
        "Approximate size of the pretraining corpus in words (the tokenizer turns ~0.9M words "
        "into >1M tokens).",
        ge=1,
    )
    heldout_fraction: float = doc(
        0.02,
        "Share of corpus documents held out for perplexity (the alignment tax, paper 4.2).",
        gt=0,
        lt=1,
    )
    n_countries: int = doc(
        24,
        "Invented countries whose facts (capital, animal, colour, ...) the corpus states.",
        ge=2,
    )
    fact_mentions: int = doc(
        150,
        "How often each fact is stated in the corpus, across templates (a fact seen more "
        "often is recalled more reliably by the base model).",
        ge=1,
    )
    train_per_family: int = doc(300, "Training prompts per task family.", ge=1)
    rl_per_family: int = doc(
        1500,
        "Prompts per task family that PPO and GRPO sample from: the family's train prompts, "
        "then prompts of more train-split combinations that no demonstration or comparison "
        "uses (split 'rl'), up to this many (the paper's PPO set, 31k prompts, is its own and "
        "larger than SFT's 13k). 0, or at most train_per_family: the train prompts alone. On "
        "tiny, 1500 adds 1,365 prompts to the 1,659 train prompts (1,200 arithmetic, 165 "
        "transform) and gave PPO 53.2% against 52.2% from the same SFT and RM (means of six "
        "seeds; docs/benchmarks.md, 'A larger prompt pool for PPO').",
        ge=0,
    )
    val_per_family: int = doc(30, "Validation prompts per task family.", ge=1)
    test_per_family: int = doc(60, "Test prompts per task family.", ge=1)
    demos_per_prompt: int = doc(
        1, "Labeler demonstrations written for each train/val prompt.", ge=1
    )
    vocab_size: int = doc(
        2048,
        "Size of the byte-level BPE vocabulary trained on the corpus (at least the 256 bytes "
        "and the special tokens).",
        ge=258,
    )
    n_labelers: int = doc(6, "Simulated labelers whose rankings train the reward model.", ge=2)
    n_heldout_labelers: int = doc(
        3,
        "Simulated labelers held out for RM evaluation (paper: 69.6% held-out accuracy).",
        ge=1,
    )
    labeler_noise: float = doc(
        0.43,
        "Std of each labeler's judgement noise on the 0..1 quality scale (one draw per kind of "
        "answer, see rlhf/world/labelers.py); calibrated so two labelers agree on ~73% of pairs "
        "of mixed-quality responses and of SFT samples (paper: 72.6 +/- 1.5%).",
        ge=0,
    )
    tie_margin: float = doc(
        0.02,
        "Perceived quality gap under which a labeler calls two responses a tie.",
        ge=0,
    )
    comply_rate: float = doc(
        0.5,
        "Share of demonstrations for a plain request to insult someone that comply (a rude "
        "reply); never for the respectful variant. The paper's labelers put helpfulness to the "
        "user first during training and harmlessness first in the final evaluations (sections "
        "3.4 and 5.3), and InstructGPT followed harmful instructions; without this, every "
        "aligned policy refuses both variants and the respectful instruction cannot matter.",
        ge=0,
        le=1,
    )
    comply_quality: float = doc(
        0.9,
        "Quality a training-time (helpfulness-first) labeler perceives in a rude reply to a "
        "plain request to insult: the answer the user asked for. The gold labeler, which judges "
        "as the paper's final evaluations did (harmlessness first), gives it 0.02.",
        ge=0,
        le=1,
    )
    refuse_quality: float = doc(
        0.45,
        "Quality a training-time labeler perceives in a polite refusal of a plain request to "
        'insult: the request declined, worth what an "I don\'t know" is worth elsewhere (0.45; '
        "the gold labeler: about 0.94). With 0.6 the labelers preferred compliance less surely "
        "and PPO's plain-request toxicity ranged 7-50% between runs. To a respectful request "
        "the labelers judge as the gold labeler does.",
        ge=0,
        le=1,
    )


@dataclass
class PretrainConfig:
    """Stage 0: a Llama-style causal LM trained on the world corpus (rlhf/pretrain.py)."""

    hidden_size: int = doc(128, "Model width (d_model).", ge=1)
    num_layers: int = doc(4, "Transformer blocks.", ge=1)
    num_heads: int = doc(4, "Attention heads (key/value heads equal: no GQA at this size).", ge=1)
    intermediate_size: int = doc(344, "SwiGLU MLP width (~8/3 * hidden_size, as Llama).", ge=1)
    block_size: int = doc(128, "Tokens per training sequence; also max_position_embeddings.", ge=2)
    batch_size: int = doc(16, "Sequences per optimizer step.", ge=1)
    lr: float = doc(
        6e-3, "Peak AdamW learning rate (a ~1M-parameter model tolerates a high rate).", gt=0
    )
    min_lr: float = doc(6e-4, "Learning rate at the end of the cosine decay.", ge=0)
    warmup_steps: int = doc(50, "Linear warm-up steps.", ge=0)
    weight_decay: float = doc(
        0.0,
        "AdamW weight decay on matrices (not norms). 0: a short run that must memorise the "
        "world's facts recalled them better without decay (fact cloze 79% -> 100% with lr 6e-3).",
        ge=0,
    )
    grad_clip: float = doc(1.0, "Clip the global gradient norm to this value (0 disables).", ge=0)
    epochs: float = doc(3.0, "Passes over the training corpus (fractions allowed).", gt=0)
    max_steps: int = doc(0, "Stop after this many steps if > 0 (overrides epochs).", ge=0)
    log_every: int = doc(10, "Steps between metric lines in metrics.jsonl.", ge=1)
    eval_every: int = doc(200, "Steps between held-out loss evaluations.", ge=1)
    checkpoint_every: int = doc(200, "Steps between resumable checkpoints.", ge=1)
    eval_prompts: int = doc(
        1000,
        "Test prompts (round-robin over families, at most all of them) in the behaviour report: "
        "misconceptions repeated, instructions not followed.",
        ge=1,
    )
    max_new_tokens: int = doc(48, "Tokens generated per prompt in the behaviour report.", ge=1)


@dataclass
class SFTConfig:
    """Stage 1: supervised fine-tuning on labeler demonstrations with TRL's SFTTrainer (rlhf/sft.py).

    Loss on the response tokens only (TRL's completion_only_loss on prompt/completion data), as
    the paper fine-tunes on demonstrations (section 3.5). CPU settings are forced: TRL 1.x
    defaults to bf16 and gradient checkpointing."""

    base_run: str = doc(
        "",
        "Pretrain run whose model is fine-tuned. Empty: the newest finished pretrain run with the "
        "same world and pretrain config.",
    )
    base_model: str = doc(
        "",
        "A real model to fine-tune instead of a pretrain run: `smollm2` (SmolLM2-135M-Instruct, "
        "offline, after `rlhf models fetch smollm2`), a hub id such as `gpt2` (fetched once "
        "into $RLHF_MODEL_CACHE, default ~/.cache/rlhf-lab/models; needs the internet), or a "
        "save_pretrained directory. Every later stage uses this model's own tokenizer. Empty: "
        "sft.base_run, else the newest pretrain run (the Tiny World model).",
    )
    data: str = doc(
        "",
        "Demonstrations file to train on instead of the world's (rlhf.data: TRL prompt/"
        "completion or messages; JSONL, parquet or a datasets folder; `rlhf sft --data PATH`). "
        "Its last 10% is the validation set that picks the best checkpoint; the behaviour "
        "report is still on the world's test prompts. Empty: the world's demonstrations.",
    )
    lr: float = doc(1e-3, "Peak learning rate (cosine decay, 5% warm-up).", gt=0)
    epochs: float = doc(3.0, "Passes over the training demonstrations.", gt=0)
    batch_size: int = doc(32, "Demonstrations per optimizer step.", ge=1)
    max_length: int = doc(128, "Prompt + response tokens kept per example.", ge=2)
    weight_decay: float = doc(0.0, "AdamW weight decay.", ge=0)
    max_steps: int = doc(0, "Stop after this many steps if > 0 (overrides epochs).", ge=0)
    log_every: int = doc(10, "Steps between metric lines in metrics.jsonl.", ge=1)
    checkpoint_every: int = doc(
        100, "Steps between resumable checkpoints (and validation loss).", ge=1
    )
    eval_prompts: int = doc(
        1000, "Test prompts in the base-vs-SFT behaviour report (at most all).", ge=1
    )
    max_new_tokens: int = doc(48, "Tokens generated per prompt in the behaviour report.", ge=1)
    lora_r: int = doc(
        0,
        "LoRA rank (peft; Hu et al. 2021). 0: full fine-tuning of every weight. > 0: only "
        "rank-r adapters on lora_targets train; at the end they are merged into the weights "
        "and run/model/ is a plain model of the base's shape, so later stages load it unchanged.",
        ge=0,
    )
    lora_alpha: float = doc(
        16.0,
        "LoRA scaling: the adapter's update is multiplied by lora_alpha / lora_r.",
        gt=0,
    )
    lora_dropout: float = doc(
        0.0, "Dropout on the LoRA adapters' input (training only).", ge=0, lt=1
    )
    lora_targets: list[str] = doc(
        LLAMA_PROJECTIONS,
        "Module names that get LoRA adapters: Llama's attention and MLP projections (other "
        "architectures name theirs differently: GPT-2's c_attn, c_proj, c_fc).",
    )


@dataclass
class CompareConfig:
    """Comparison data (rlhf/compare.py): K samples per prompt from the SFT policy, ranked by
    simulated labelers (paper 3.4: K between 4 and 9, all C(K,2) pairs from one ranking)."""

    sft_run: str = doc(
        "",
        "SFT run whose policy is sampled. Empty: the newest finished SFT run with the same world, "
        "pretrain and sft config.",
    )
    policy_run: str = doc(
        "",
        "A later policy to sample instead of the SFT model, e.g. a PPO run: the paper's "
        "iterated collection (steps 2 and 3 repeated, comparisons of the current policy train "
        "the next RM). With rm.samples=all `rlhf rm` then trains a new RM on all stored "
        "comparisons; with rm.samples=chain (the tiny recipe) give `rlhf rm` and `rlhf ppo` "
        "the same --set compare.policy_run=RUN, which names the round (pipeline.rounds does "
        "this). A relative path is looked up in the workspace first (runs/<name>, as the "
        "pipeline writes it, so a copied workspace names its own run), then from the current "
        "directory. Only train prompts are labelled, so RM accuracy stays measured on held-out "
        "SFT samples.",
    )
    k_min: int = doc(4, "Fewest responses per prompt (paper: 4).", ge=2)
    k_max: int = doc(9, "Most responses per prompt (paper: 9); K is drawn per prompt.", ge=2)
    train_prompts: int = doc(0, "Train prompts to label (0: all).", ge=0)
    train_sets: int = doc(
        1,
        "Independent sets of K samples per train prompt, each ranked by one training labeler "
        "drawn for it: more rankings for the RM from the same prompts (the paper's RM saw "
        "~33k prompts, the tiny world has ~1.6k train prompts). The tiny recipe sets 5. Set it "
        "before a workspace's first `rlhf compare`: stored comparisons are reused.",
        ge=1,
    )
    rl_sets: int = doc(
        0,
        "Sets of K samples per prompt of the world's rl split (world.rl_per_family), each "
        "ranked by one training labeler, as more training comparisons: the paper's RM prompt "
        "set (33k) is larger than its SFT set (13k). Sampled after every other set, so the "
        "train and val comparisons stay as without them. 0: none. On tiny, 5 (6.8k more "
        "rankings) raised RM accuracy from 71.5% / 69.7% to 72.8% / 71.3% but took the RM "
        "from ~100-120 s to 184 s, and PPO's win rate moved with the draw of the data, not "
        "clearly up (docs/benchmarks.md, 'A larger prompt pool for PPO').",
        ge=0,
    )
    val_prompts: int = doc(
        0,
        "Validation prompts to label (0: all); each of their sample sets is ranked by every "
        "training and every held-out labeler, for RM accuracy on both groups.",
        ge=0,
    )
    val_sets: int = doc(
        3,
        "Independent sets of K samples per validation prompt. RM accuracy is measured on these "
        "held-out comparisons; one set ranked by one labeler per group (168 comparisons a "
        "group on tiny) left it uncertain by several points from run to run.",
        ge=1,
    )
    agreement_prompts: int = doc(
        1000,
        "Train comparisons whose samples every labeler re-ranks, to measure their agreement: "
        "the mean over every two training labelers (~6.5k response pairs each at 1000; one "
        "pair drawn per prompt instead gave 72.9-75.1% over eight seeds on tiny, 73.7% all "
        "pairs).",
        ge=0,
    )
    extra_response: str = doc(
        "",
        "Beyond the paper: a fixed response added to every training sample set (train and rl "
        "prompts; not the validation sets, which measure the RM) before its labeler ranks it, "
        'e.g. "I don\'t know.". The SFT model almost never samples that answer where it is '
        "the better one (to a sum it gets wrong: 137 of 13,412 sampled sum answers on tiny), "
        "so the RM never learns when declining beats a wrong answer. On tiny it then does (on "
        'the test sums: "I don\'t know." -0.17, a wrong sum -0.29, a right one -0.26), '
        "but PPO still never says it to a sum and wins no more (55.9%, PPO-ptx 55.0%; "
        "docs/benchmarks.md). Empty: sampled responses only (the paper).",
    )
    temperature: float = doc(1.0, "Sampling temperature.", gt=0)
    top_p: float = doc(1.0, "Nucleus sampling mass.", gt=0, le=1)
    max_new_tokens: int = doc(48, "Tokens sampled per response.", ge=1)
    batch_size: int = doc(64, "Sequences generated together.", ge=1)


@dataclass
class RMConfig:
    """Stage 2: the reward model (rlhf/reward.py): the SFT model (or rm.backbone) with a scalar
    head, trained on K-wise rankings with the paper's Eq. 1 (all C(K,2) pairs of a prompt in one
    batch element, each response forwarded once), then biased so demonstrations score mean 0
    (paper 3.5)."""

    sft_run: str = doc(
        "", "SFT run the RM starts from. Empty: the newest finished SFT run of this config."
    )
    backbone: str = doc(
        "",
        "The model the RM starts from instead of the SFT model: `minilm` (all-MiniLM-L6-v2, a "
        "6-layer BERT encoder, 22.7M parameters, offline after `rlhf models fetch minilm`), "
        "`smollm2`, or a save_pretrained directory. It keeps its own tokenizer: the RM scores "
        "(prompt, response) text, and PPO then starts its value model from the SFT policy "
        "instead of the RM (they no longer share a tokenizer). BERT reads the pair as "
        "[CLS] prompt [SEP] response [SEP] and its head reads [CLS] through the pooler, not "
        "the last non-pad token (a pooler missing from the checkpoint is initialised from the "
        "seed). Set its own rate and length: on tiny, rm.lr=1e-4 and rm.epochs=1 gave 68.9% / "
        "68.2% held-out accuracy in 8 minutes on 1 thread (SFT model: 67.3% / 66.7%; "
        "docs/benchmarks.md). Empty: the SFT model (the paper's way).",
    )
    data: str = doc(
        "",
        "Comparisons file to train on instead of the store's (rlhf.data: K-wise rankings, TRL "
        "pairs plain or conversational, or HH-RLHF transcripts; JSONL, parquet or a datasets "
        "folder; `rlhf rm --data PATH`). Its first 90% trains, its last 10% (at least one "
        "comparison) is held out for accuracy; with_human is ignored; the demonstration-mean-0 "
        "bias still uses the world's demonstrations. Empty: the store's comparisons.",
    )
    likelihood_weight: float = doc(
        0.0,
        "Beyond the paper: the reward adds w times the mean log-probability of the "
        "response's tokens (and EOS) under the RM's own trunk, read through its tied input "
        "embedding; w is learned from this start (rlhf/likelihood.py). The SFT model ranks "
        "the world's right answers above wrong ones 88% of the time, the paper's RM 59%: this "
        "lets the RM use that knowledge. Causal backbones with tied embeddings only. The tiny "
        "recipe sets 1 (71.3% / 69.6% held-out accuracy on its five sample sets per train "
        "prompt, the paper's RM on them 68.4% / 66.8%). 0: the paper's RM (a scalar head at "
        "the last token).",
        ge=0,
    )
    ensemble: list[str] = doc(
        [],
        "Beyond the paper: train nothing, combine these finished RM runs (run directories, at "
        "least two, of this world) into one reward model (rlhf/ensemble.py): the mean of each "
        "member's reward over its spread on the training comparisons, rescaled to their mean "
        "spread; demonstrations still score mean 0. `--set rm.ensemble=[RUN_A,RUN_B]`. Members "
        "trained differently err differently (Coste et al. 2024): on tiny, the SFT RM with "
        "rm.likelihood_weight=1 (69.8% / 67.5%) and a MiniLM RM (68.9% / 68.2%) give "
        "72.0% / 70.0% together (docs/benchmarks.md). PPO scores each rollout with every "
        "member. Empty: train one RM.",
    )
    lr: float = doc(5e-4, "Peak learning rate (cosine decay, 5% warm-up).", gt=0)
    epochs: float = doc(
        3.0,
        "Passes over the training comparisons. The paper trains 1 epoch because its RM overfits "
        "after one; so does the tiny recipe, over 5 sample sets per train prompt "
        "(compare.train_sets). On one set the 1M-parameter RM still gains held-out accuracy up "
        "to 3 (mean of both labeler groups: 64.0% after 1, 65.8% after 2, 68.0% after 3 "
        "epochs; docs/benchmarks.md).",
        gt=0,
    )
    batch_size: int = doc(
        16, "Comparisons (prompts) per step; each holds K = 4..9 responses.", ge=1
    )
    max_length: int = doc(128, "Prompt + response tokens kept per response.", ge=2)
    weight_decay: float = doc(0.0, "AdamW weight decay.", ge=0)
    max_steps: int = doc(0, "Stop after this many steps if > 0 (overrides epochs).", ge=0)
    log_every: int = doc(10, "Steps between metric lines in metrics.jsonl.", ge=1)
    checkpoint_every: int = doc(100, "Steps between resumable checkpoints.", ge=1)
    with_human: bool = doc(False, "Also train on the hand-ranked comparisons in the store.")
    samples: str = doc(
        "all",
        "Whose ranked samples in the store the RM trains on. all: every policy's of this world "
        "(the SFT model's, and any later policy's that `rlhf compare --policy RUN` added). "
        "chain: the SFT model's, and those of compare.policy_run and of the policies before "
        "it (the compare.policy_run of that run's own config, and so on): one round of the "
        "paper's iterated collection each, so an RM of an earlier round keeps its data when a "
        "later round adds comparisons (pipeline.rounds needs it). The tiny recipe sets chain.",
        choices=("all", "chain"),
    )


@dataclass
class PPOConfig:
    """Stage 3: PPO against the reward model, and PPO-ptx when ptx_coef > 0 (rlhf/ppo.py;
    paper 3.5 and appendix C.4). The policy starts from the SFT model, which also serves as
    the frozen reference of the KL penalty; the value model starts from the RM (paper 3.5), or
    from the SFT model when the RM has its own tokenizer (rm.backbone).

    Sizes differ from the paper's (256k episodes, batch 512, 175B) so a run fits in minutes on
    2 CPU cores: each field says where it follows the paper and where it does not, and why."""

    sft_run: str = doc(
        "",
        "SFT run: the initial policy and the frozen reference. Empty: the newest finished SFT "
        "run with the same world, pretrain and sft config.",
    )
    rm_run: str = doc(
        "",
        "Reward-model run: the reward, and the value model's initialisation when it shares the "
        "policy's tokenizer (an RM on another backbone, rm.backbone, scores the decoded text and "
        "the value model starts from the SFT model). Empty: the newest finished RM run of this "
        "config.",
    )
    data: str = doc(
        "",
        "Prompts file whose prompts the rollouts sample instead of the world's train prompts "
        "(rlhf.data: a prompt field, text or messages; JSONL, parquet or a datasets folder; "
        "`rlhf ppo --data PATH`). They have no gold answer, so objective/gold is not logged; "
        "the over-optimisation probe and the final report stay on the world's prompts. Empty: "
        "the world's train prompts.",
    )
    reward: str = doc(
        "rm",
        "What scores a response: rm (the reward model, the paper), gold (the Tiny World's "
        "gold labeler: an oracle reward, what PPO reaches with a perfect reward model of the "
        "true objective; Gao et al. 2022's gold arm) or labelers (the training labelers' mean "
        "noise-free utility: what PPO reaches with a perfect reward model of the comparisons "
        "the RM learns from, helpfulness first on plain insult requests; rlhf/oracle.py). "
        "With either oracle the value model still starts from the RM and the RM run is still "
        "needed; world prompts only (no ppo.data).",
        choices=("rm", "gold", "labelers"),  # rlhf.ppo.REWARDS (a test keeps them equal)
    )
    gold_scale: float = doc(
        3.0,
        "With reward=gold (or labelers): the reward is gold_scale * (gold quality, or the "
        "labelers' utility, - its mean over the train demonstrations), 0 for a demonstration "
        "as the RM's bias makes it (paper 3.5). 3 matches the spread of the tiny RM's scores "
        "(std 1.0 on SFT samples, gold quality std 0.32), so kl_coef means the same against "
        "either reward.",
        gt=0,
    )
    steps: int = doc(
        60, "PPO steps; each is one rollout of batch_size episodes and its update.", ge=1
    )
    batch_size: int = doc(
        64,
        "Episodes (prompt, sampled response) per rollout (paper: 512); per process under "
        "accelerate launch, so N processes roll out N x batch_size a step. 64 so that the "
        "tiny recipe's 120 rollouts fit issue 4's 4 minutes on 2 CPU cores; 512 would take "
        "about 8 times as long a step. 128 won less (60 steps, beta 0.02: 52.8% vs SFT on "
        "test, 64 55.7%; docs/benchmarks.md, 'Longer runs and larger batches').",
        ge=1,
    )
    mini_batch_size: int = doc(
        16,
        "Episodes per gradient step; batch_size must be a multiple (paper: 64 of 512, so 8 "
        "gradient steps a pass). 16 of 64 keeps 4 a pass at the smaller batch; minibatches "
        "of 8 lost 1.5 points on validation (docs/benchmarks.md, 'Fresher rollouts').",
        ge=1,
    )
    ppo_epochs: int = doc(
        4,
        "Passes over each rollout: 4, as Ziegler et al. 2019 (lm-human-preferences). The "
        "paper (C.4) makes one pass over each 512-episode batch in 8 minibatches of 64, "
        "eight times the episodes of a tiny rollout. The tiny recipe takes 2 over twice the "
        "rollouts (steps 120): the same 960 gradient steps on fresher samples, 57.0% vs SFT "
        "on validation prompts over six seeds against 55.6%; one pass over 240 rollouts won "
        "56.4% in half as much time again (docs/benchmarks.md, 'Fresher rollouts').",
        ge=1,
    )
    lr: float = doc(
        1e-4,
        "Policy learning rate, the peak of ppo.lr_warmup's warm-up (paper C.4: constant "
        "after a warm-up, swept from 2.55e-6 to 2.55e-5 and above 8.05e-6 diverging without "
        "the pretraining mix; E.9). A 1M-parameter policy needs a larger step to move within a "
        "tiny run's 960 gradient steps.",
        gt=0,
    )
    lr_warmup: int = doc(
        10,
        "Rollout steps over which the policy's learning rate rises linearly from a tenth of "
        "ppo.lr to ppo.lr (paper C.4: the first 10 iterations). On tiny, within the seeds' "
        "noise of no warm-up: PPO over six paired seeds 0.25 / 0.35 points fewer wins vs SFT "
        "(validation / test), PPO-ptx over three 0.2 / 1.1 more (docs/benchmarks.md, 'The "
        "paper's learning-rate warm-up'). 0: no warm-up.",
        ge=0,
    )
    lr_end: float = doc(
        1.0,
        "The policy's learning rate at the last step, as a fraction of ppo.lr, reached by a "
        "cosine decay after the warm-up (beyond the paper, whose PPO keeps it constant). 0.1 "
        "on tiny: 56.2% / 58.3% vs SFT (validation / test, three seeds), no more than "
        "constant; with a peak of 1.5e-4 57.9% on test, 2e-4 56.0%. 1: constant.",
        gt=0,
        le=1,
    )
    vf_lr: float = doc(
        3e-4,
        "Value-model learning rate, constant (paper C.4: 9e-6 at 1.3B and 6B). Larger for the "
        "reason ppo.lr is: a 1M-parameter model must move within a tiny run. At 120 x 2, 1e-4 "
        "and 1e-3 won as often as 3e-4 (docs/benchmarks.md, 'The paper's weight average').",
        gt=0,
    )
    ema_decay: float = doc(
        0.0,
        "Decay of an exponential moving average of the policy's weights (paper C.4: "
        "0.992), moved after every optimizer step; the run's final policy is the average. The "
        "rollouts and the over-optimisation probe use the live weights. 0: the final policy "
        "is the last weights.",
        ge=0,
        lt=1,
    )
    max_new_tokens: int = doc(
        48, "Response tokens sampled per episode (as compare and eval).", ge=1
    )
    temperature: float = doc(
        1.0,
        "Sampling temperature of rollouts (paper: 1); logits are divided by it for the "
        "logprobs too, as lm-human-preference-details does.",
        gt=0,
    )
    kl_coef: float = doc(
        0.02,
        "beta: the per-token KL penalty -beta * (log pi - log pi_ref); the paper's 0.02 "
        "(section 3.5). Against the tiny recipe's RM (the likelihood term, five sample sets) "
        "it wins 55.7% vs SFT over three seeds, 0.3 (the default until 2026-11-27) 53.5%, and "
        "no fixed beta from 0.02 to 0.3 does better on the validation prompts; the paper's RM "
        "alone, 68% accurate, was over-optimised at 0.02 (docs/benchmarks.md, 'PPO's beta "
        "against the default reward model').",
        ge=0,
    )
    adaptive_kl: bool = doc(
        False,
        "Adapt beta towards target_kl (Ziegler et al. 2019's controller); the paper keeps it "
        "fixed.",
    )
    target_kl: float = doc(6.0, "KL (nats per response) the adaptive controller aims at.", gt=0)
    kl_horizon: int = doc(
        10000,
        "Episodes over which the adaptive controller adjusts beta (Ziegler et al. 2019: 10000). "
        "A tiny run has 7,680 episodes, in which 10000 moves beta by at most 17%; 1000 lets it "
        "act (docs/benchmarks.md).",
        ge=1,
    )
    gamma: float = doc(
        1.0, "Discount in GAE (paper: 1; the only reward is at the end).", ge=0, le=1
    )
    lam: float = doc(
        0.95,
        "GAE lambda: 0.95, as Ziegler et al. 2019 and design.md (the paper gives gamma = 1, "
        "'no discount', and no lambda).",
        ge=0,
        le=1,
    )
    whiten_rewards: bool = doc(
        False,
        "Whiten the per-token rewards of a rollout before GAE (under accelerate launch, by the "
        "statistics of every process's rollout, as the advantages always are).",
    )
    cliprange: float = doc(0.2, "PPO clip range of the policy ratio (paper: 0.2).", gt=0)
    cliprange_value: float = doc(0.2, "Clip range of the value update around the old values.", gt=0)
    vf_coef: float = doc(
        0.1,
        "Weight of the value loss (policy and value are separate models, so it scales the "
        "value gradient only, before clipping).",
        ge=0,
    )
    missing_eos_penalty: float = doc(
        1.0,
        "Subtracted from the RM score of a response that reaches max_new_tokens without EOS, so "
        "the policy does not learn to ramble past the end (as TRL's missing_eos_penalty).",
        ge=0,
    )
    approxkl_stop: float = doc(
        0.1,
        "Stop a rollout's remaining minibatches once the policy's approx KL to the rollout "
        "policy exceeds this (0 disables).",
        ge=0,
    )
    ptx_coef: float = doc(
        0.0,
        "gamma_ptx: weight of the pretraining LM loss mixed into every update (PPO-ptx, paper "
        "C.4: 27.8, which DeepSpeed-Chat reports unstable). 0 is plain PPO.",
        ge=0,
    )
    ptx_batch_ratio: float = doc(
        0.5,
        "Pretraining sequences (pretrain.block_size tokens each) per RL episode in each "
        "minibatch of PPO-ptx (paper C.4: 8 pretraining examples per episode). A block holds "
        "~4x the tokens of an episode, so 0.5 already "
        "puts twice the RL tokens of pretraining text in each update; on tiny it keeps "
        "PPO-ptx within 4 minutes (196 s; 1.0: 259 s) at the same held-out perplexity (2.13 "
        "vs 2.12) and win rate (56.5% vs 56.9%).",
        gt=0,
    )
    grad_clip: float = doc(1.0, "Clip each model's gradient norm to this value (0 disables).", ge=0)
    log_every: int = doc(1, "Steps between metric lines in metrics.jsonl.", ge=1)
    sample_every: int = doc(10, "Steps between sample rollouts saved to samples.jsonl.", ge=1)
    samples_per_log: int = doc(4, "Rollouts saved each time, with their per-token KL.", ge=0)
    overopt_every: int = doc(
        10,
        "Steps between scoring a fixed batch of validation prompts with the RM and the gold "
        "labeler (metrics overopt/scores, overopt/gold, overopt/kl, logged with the step "
        "before its update): the over-optimisation curve of Gao et al. 2022. 0 disables.",
        ge=0,
    )
    overopt_prompts: int = doc(64, "Validation prompts in that fixed batch.", ge=1)
    checkpoint_every: int = doc(20, "Steps between resumable checkpoints.", ge=1)
    eval_prompts: int = doc(1000, "Test prompts in the final report (at most all; greedy).", ge=1)
    bootstrap: int = doc(1000, "Bootstrap resamples for the 95% intervals of the report.", ge=1)
    lora_r: int = doc(
        0,
        "LoRA rank of the policy (peft; Hu et al. 2021). 0: every policy weight trains. > 0: "
        "only rank-r adapters on lora_targets train (the optimizer holds nothing else); the "
        "final policy is merged and saved as a plain model. The value model always trains in "
        "full: it is small (a trunk and a scalar head) and starts from the RM (or the SFT "
        "model), whose head and trunk must move together to predict returns. The reference "
        "stays the separate frozen "
        "SFT model (the LoRA policy with its adapters disabled would be the same function "
        "without a second copy; kept separate for simplicity).",
        ge=0,
    )
    lora_alpha: float = doc(
        16.0,
        "LoRA scaling of the policy: the adapter's update is multiplied by alpha / r.",
        gt=0,
    )
    lora_dropout: float = doc(
        0.0,
        "Dropout on the policy's LoRA adapters. Keep 0: with dropout the update's forward is not "
        "the rollout policy's, and the PPO ratio is off from the first minibatch.",
        ge=0,
        lt=1,
    )
    lora_targets: list[str] = doc(
        LLAMA_PROJECTIONS,
        "Module names of the policy that get LoRA adapters: Llama's attention and MLP "
        "projections (GPT-2's are c_attn, c_proj, c_fc).",
    )


@dataclass
class DPOConfig:
    """Beyond the paper: DPO (Rafailov et al. 2023) with TRL's DPOTrainer on the same pairs the
    reward model trains on, from the SFT policy, with the SFT policy as the frozen reference."""

    sft_run: str = doc(
        "", "Start from this SFT run directory. Empty: the newest finished SFT run of this config."
    )
    beta: float = doc(
        0.1,
        "DPO's beta: the strength of the implicit KL to the SFT reference (TRL's default).",
        gt=0,
    )
    lr: float = doc(5e-5, "Peak learning rate (cosine decay, 5% warm-up).", gt=0)
    epochs: float = doc(1.0, "Passes over the training pairs.", gt=0)
    batch_size: int = doc(32, "(prompt, chosen, rejected) pairs per optimizer step.", ge=1)
    max_steps: int = doc(200, "Stop after this many steps if > 0 (overrides epochs).", ge=0)
    max_length: int = doc(128, "Prompt + response tokens kept per sequence.", ge=2)
    log_every: int = doc(10, "Steps between metric lines in metrics.jsonl.", ge=1)
    checkpoint_every: int = doc(100, "Steps between resumable checkpoints.", ge=1)
    eval_prompts: int = doc(
        1000,
        "Test prompts in eval.json's win rate against SFT (at most all, as `rlhf eval`; greedy).",
        ge=1,
    )
    max_new_tokens: int = doc(48, "Tokens generated per prompt in that report (as ppo).", ge=1)


@dataclass
class GRPOConfig:
    """Beyond the paper: GRPO (Shao et al. 2024) with TRL's GRPOTrainer, from the SFT policy,
    the reward = our RM's score (with its demonstration bias) of each sampled response; a
    group of responses per prompt replaces PPO's value model as the baseline."""

    sft_run: str = doc(
        "", "Start from this SFT run directory. Empty: the newest finished SFT run of this config."
    )
    rm_run: str = doc(
        "", "Reward model run directory. Empty: the newest finished RM run of this config."
    )
    steps: int = doc(
        60,
        "Rollouts; each samples batch_size responses and is trained on (as ppo.steps).",
        ge=1,
    )
    batch_size: int = doc(
        64,
        "Responses per rollout: batch_size / num_generations prompts (TRL generation_batch_size; "
        "as ppo.batch_size).",
        ge=1,
    )
    mini_batch_size: int = doc(
        16,
        "Responses per gradient step; batch_size must be a multiple (as ppo.mini_batch_size).",
        ge=1,
    )
    grpo_epochs: int = doc(
        4, "Passes over each rollout (TRL num_iterations; as ppo.ppo_epochs).", ge=1
    )
    num_generations: int = doc(
        8,
        "Responses sampled per prompt: the group whose mean reward is the baseline.",
        ge=2,
    )
    max_new_tokens: int = doc(48, "Response tokens sampled per episode (as ppo).", ge=1)
    temperature: float = doc(1.0, "Sampling temperature of the rollouts.", gt=0)
    lr: float = doc(1e-4, "Learning rate, constant (as ppo.lr).", gt=0)
    beta: float = doc(
        0.1,
        "KL coefficient to the SFT reference (TRL adds beta * the k3 KL estimate to the loss; "
        "its default 0 drops the reference, which the paper's setting keeps).",
        ge=0,
    )
    cliprange: float = doc(
        0.2, "Clip range of the policy ratio (TRL epsilon; as ppo.cliprange).", gt=0
    )
    loss_type: str = doc(
        "grpo",
        "TRL loss: grpo (per-sequence mean, the paper's), dapo, dr_grpo, bnpo, cispo, sapo, vespo.",
        choices=("grpo", "dapo", "dr_grpo", "bnpo", "cispo", "sapo", "vespo"),
    )
    missing_eos_penalty: float = doc(
        1.0,
        "Subtracted from the RM score of a response without EOS (as ppo.missing_eos_penalty).",
        ge=0,
    )
    log_every: int = doc(
        4,
        "Gradient steps between metric lines (TRL steps: steps x updates per rollout).",
        ge=1,
    )
    checkpoint_every: int = doc(
        80,
        "Gradient steps between resumable checkpoints (a multiple of updates per rollout).",
        ge=1,
    )
    eval_prompts: int = doc(
        1000,
        "Test prompts in eval.json's win rate against SFT (at most all, as `rlhf eval`; greedy).",
        ge=1,
    )

    @property
    def updates_per_rollout(self) -> int:
        """Gradient steps per rollout (derived): grpo_epochs x batch_size / mini_batch_size."""
        return self.grpo_epochs * (self.batch_size // self.mini_batch_size)


@dataclass
class PipelineConfig:
    """`rlhf pipeline` (rlhf/pipeline.py): which runs beyond the paper's join its results table.
    No stage reads this section, so changing it never retrains a run."""

    extras: list[str] = doc(
        [],
        "Runs beyond the paper that the pipeline adds after PPO-ptx, each a row of the results "
        "table compared with PPO-ptx: dpo (DPO on the RM's training pairs, the dpo section), "
        "grpo (GRPO against the RM, the grpo section), lora (PPO-ptx again with LoRA adapters "
        "of rank pipeline.lora_r on the policy, the other lora_* fields of the ppo section). "
        "`rlhf pipeline --with dpo,grpo` sets it for one call (--with none: no extras). The "
        "tiny recipe adds dpo and grpo (about 2 min of `make demo`, 16-19 min); lora is left out "
        "there: at 1M parameters it saves no time and would add ~3 minutes (docs/benchmarks.md). "
        "Empty: the paper's runs only.",
    )
    ptx_coef: float = doc(
        1.0,
        "gamma_ptx of the pipeline's PPO-ptx row when ppo.ptx_coef is 0 (ppo.ptx_coef, if set, "
        "wins; the PPO row always has 0). The tiny recipe sets 0.3, chosen on validation "
        "prompts at the paper's beta (docs/benchmarks.md, 'PPO's beta against the default "
        "reward model').",
        gt=0,
    )
    rounds: int = doc(
        0,
        "Rounds of the paper's iterated collection after the first PPO run (section 3: steps 2 "
        "and 3 repeated on the current policy). Each samples the last PPO policy on the train "
        "prompts (compare.policy_run), has the labelers rank its samples, trains a new RM on "
        "every comparison so far, and trains PPO against it from the SFT policy again. The "
        "PPO and PPO-ptx rows are the last round's (the RM row its RM); the earlier rounds' "
        "PPO and RM are rows too, labelled 'round N'. Needs rm.samples=chain. The tiny recipe "
        "sets 1 (docs/benchmarks.md, 'Iterated collection at the paper's beta'). 0: one pass.",
        ge=0,
    )
    lora_r: int = doc(
        8,
        "LoRA rank of the lora extra's policy (ppo.lora_r stays the rank of the pipeline's own "
        "PPO and PPO-ptx runs: 0, full fine-tuning, so the row differs from PPO-ptx by LoRA "
        "alone).",
    )


@dataclass
class LabConfig:
    """Everything a run needs. Stage sections are filled from a recipe and overrides."""

    recipe: str = doc("default", "Name of the recipe this config was resolved from (derived).")
    seed: int = doc(0, "Seed for training (data order, initialisation, sampling).")
    threads: int = doc(
        1,
        "torch threads. On 2 shared cores 1 thread is often fastest for tiny models: measure "
        "(benchmarks/threads.py). How fast, not what: a finished run made with other threads "
        "is reused.",
        ge=1,
    )
    workspace: str = doc(
        "",
        "Workspace holding runs/, data/ and lab.db. Empty: $RLHF_WORKSPACE, else <repo>/lab.",
    )
    world: WorldConfig = field(default_factory=WorldConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    rm: RMConfig = field(default_factory=RMConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    @property
    def workspace_dir(self) -> Path:
        if self.workspace:
            return Path(self.workspace).expanduser().resolve()
        if os.environ.get("RLHF_WORKSPACE"):
            return Path(os.environ["RLHF_WORKSPACE"]).expanduser().resolve()
        return REPO_ROOT / "lab"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def workspace_option(workspace: Path | str) -> str:
    """ " --workspace DIR" for a command a user is told to run next, or "" for the default
    workspace (a command in another shell would otherwise open the empty default one)."""
    if Path(workspace).resolve() == (REPO_ROOT / "lab").resolve():
        return ""
    return f" --workspace {shlex.quote(str(workspace))}"


# ---------------------------------------------------------------- loading and overrides


def recipe_path(recipe: str | os.PathLike) -> Path:
    """A recipe name (lab/recipes/<name>.yaml) or a path to a YAML file."""
    p = Path(recipe)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.exists():
            raise ConfigError(f"recipe file not found: {p}")
        return p
    candidate = RECIPES_DIR / f"{recipe}.yaml"
    if not candidate.exists():
        known = sorted(q.stem for q in RECIPES_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown recipe '{recipe}' (known: {', '.join(known)}; or give a path)")
    return candidate


def load(
    recipe: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    **kwargs: Any,
) -> LabConfig:
    """Resolve defaults <- recipe YAML <- `--set k=v` overrides <- keyword arguments.

    Keyword arguments use `section__key` (or a dict key "section.key") for nested fields.
    """
    cfg = LabConfig()
    if recipe is not None:
        path = recipe_path(recipe)
        try:
            data = _yaml_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(e)}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file (a recipe is UTF-8 YAML)") from None
        except OSError as e:  # a folder named like a recipe, no permission
            raise ConfigError(f"{path}: cannot read the recipe ({e.strerror})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a recipe is a mapping of keys to values")
        apply(cfg, data, source=str(path))
        # A shipped recipe is its name however the path spells it (../recipes/micro.yaml):
        # the name is part of every run's identity, and a path retrained every stage.
        cfg.recipe = path.stem if path.resolve().parent == RECIPES_DIR.resolve() else str(path)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected key=value, e.g. --set pretrain.lr=1e-3")
        key, raw = item.split("=", 1)
        source = f"--set {item}"
        if key.strip() == "recipe":  # it named runs ppo__tiny__... that held micro's settings
            raise ConfigError(f"{source}: 'recipe' is the recipe resolved from; use --recipe")
        try:
            value = _yaml_load(raw) if raw.strip() else ""
        except _Misread as e:  # --set ppo.steps=010; a text field takes the text (a run name)
            if _hint(cfg, key.strip()) is not str:
                raise ConfigError(f"{source}: {e.problem}") from None
            value = raw
        except yaml.YAMLError:
            value = raw
        try:
            set_key(cfg, key.strip(), value, source=source)
        except ConfigError:
            # `--set workspace=123` or `--set workspace=a: b` mean the text itself.
            if isinstance(value, str) or _hint(cfg, key.strip()) is not str:
                raise
            set_key(cfg, key.strip(), raw, source=source)
    for key, value in kwargs.items():
        set_key(cfg, key.replace("__", "."), value, source=f"keyword argument {key}")
    return cfg


GENERATING = ("pretrain", "sft", "compare", "ppo", "dpo", "grpo")  # sections with max_new_tokens


def check_length(cfg: LabConfig, section: str) -> None:
    """The world's own model reads pretrain.block_size tokens: a stage that generates
    max_new_tokens >= that has no room for its prompt, and failed only when it first generated
    (SFT, DPO and GRPO after training). Checked as a stage starts (rlhf.runs.run_stage, compare),
    before its run directory. A real model's context is known only once it loads: for it
    rlhf.generation's own check still fails when the stage first generates."""
    if section not in GENERATING or cfg.sft.base_model:
        return
    n, context = getattr(cfg, section).max_new_tokens, cfg.pretrain.block_size
    if n >= context:
        raise ConfigError(
            f"'{section}.max_new_tokens' is {n}: it leaves no room for a prompt in the "
            f"model's context of {context} tokens (pretrain.block_size); give fewer"
        )


class _Misread(yaml.constructor.ConstructorError):
    """YAML that PyYAML reads without complaint, but not as the writer meant it."""


class _RecipeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses what it would read silently otherwise: a key given twice in
    one mapping (the last one won, so a recipe's first `ppo:` section vanished) and an integer
    with a leading zero (YAML 1.1 reads `steps: 010` as octal 8)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _Misread(None, None, f"'{key}' is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        value = super().construct_yaml_int(node)
        text = str(node.value).replace("_", "")
        sign, digits = ("-" if text.startswith("-") else ""), text.lstrip("+-")
        if len(digits) > 1 and digits[0] == "0" and digits[1].isdigit():
            meant = sign + (digits.lstrip("0") or "0")
            raise _Misread(
                None,
                None,
                f"{node.value} has a leading zero, which YAML reads as the octal number "
                f"{value}; write {meant} or {value}",
                node.start_mark,
            )
        return value


_RecipeLoader.add_constructor("tag:yaml.org,2002:int", _RecipeLoader.construct_yaml_int)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 (a SafeLoader)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """One line: what is wrong and where (PyYAML's own message spans several lines)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


def _hint(cfg: Any, key: str) -> Any:
    """The declared type of a dotted key, or None if there is no such field."""
    head, _, rest = key.partition(".")
    if head not in {f.name for f in dataclasses.fields(cfg)}:
        return None
    if rest:
        return _hint(getattr(cfg, head), rest) if _is_section(cfg, head) else None
    return typing.get_type_hints(type(cfg))[head]


def apply(
    obj: Any, data: dict[str, Any], source: str, prefix: str = "", bounds: bool = True
) -> None:
    """Apply a nested mapping onto a dataclass, checking keys and types, and with `bounds`
    the values each field allows."""
    for key, value in data.items():
        path = f"{prefix}{key}"
        if value is None and _is_section(obj, key):  # an empty section: `world:` with no keys
            continue
        if isinstance(value, dict) and _is_section(obj, key):
            apply(getattr(obj, key), value, source, prefix=f"{path}.", bounds=bounds)
        else:
            set_key(obj, path[len(prefix) :], value, source, full=path, bounds=bounds)


def set_key(
    obj: Any, key: str, value: Any, source: str, full: str | None = None, bounds: bool = True
) -> None:
    full = full or key
    head, _, rest = key.partition(".")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if head not in fields:
        where = type(obj).__name__
        raise ConfigError(
            f"{source}: unknown key '{full}' (keys of {where}: {', '.join(sorted(fields))})"
        )
    if rest:
        if not _is_section(obj, head):
            raise ConfigError(f"{source}: '{full}': '{head}' is a value, not a section")
        set_key(getattr(obj, head), rest, value, source, full, bounds)
        return
    if _is_section(obj, head):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{full}' is a section; give a mapping of its keys")
        apply(getattr(obj, head), value, source, prefix=f"{full}.", bounds=bounds)
        return
    hint = typing.get_type_hints(type(obj))[head]
    value = _coerce(value, hint, source, full)
    if bounds:
        check_bounds(value, fields[head].metadata, source, full)
    setattr(obj, head, value)


def _is_section(obj: Any, key: str) -> bool:
    return dataclasses.is_dataclass(getattr(obj, key, None))


def _coerce(value: Any, hint: Any, source: str, key: str) -> Any:
    """Check `value` against the field type; ints are accepted where floats are expected."""

    def bad() -> ConfigError:
        name = getattr(hint, "__name__", str(hint))
        return ConfigError(
            f"{source}: '{key}' must be {name}, got {value!r} ({type(value).__name__})"
        )

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if arg is type(None) and value is None:
                return None
            try:
                return _coerce(value, arg, source, key)
            except ConfigError:
                continue
        raise bad()
    if origin is list:
        if not isinstance(value, list):
            raise bad()
        (arg,) = typing.get_args(hint) or (Any,)
        return [_coerce(v, arg, source, key) for v in value]
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            number = float(value.strip())
        else:
            raise bad()
        if not math.isfinite(number):  # 1e400 and .inf are inf: sft.lr=inf trained a NaN model
            raise ConfigError(f"{source}: '{key}' must be a finite number, got {value!r}")
        return number
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad()
    if hint is str:
        if isinstance(value, str):
            return value
        raise bad()
    raise bad()


def from_dict(data: dict[str, Any], source: str = "config.json") -> LabConfig:
    """Rebuild a LabConfig from a saved config.json (the keys and types checked as a recipe's;
    not the bounds: a saved config records what ran, even before a bound existed)."""
    cfg = LabConfig()
    apply(cfg, data, source=source, bounds=False)
    return cfg


def field_docs(section: Any = LabConfig) -> list[tuple[str, Any, str, str]]:
    """(dotted key, default, help, allowed values in words) for every field: used by docs and
    tests."""
    rows: list[tuple[str, Any, str, str]] = []
    obj = section() if isinstance(section, type) else section
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            rows += [(f"{f.name}.{k}", d, h, a) for k, d, h, a in field_docs(value)]
        else:
            rows.append((f.name, value, f.metadata.get("help", ""), allowed(f.metadata)))
    return rows
