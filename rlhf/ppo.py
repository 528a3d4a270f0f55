"""Stage 3: PPO against the reward model, and PPO-ptx (paper 3.5, appendix C.4).

TRL 1.16 has no PPO, so this is ours, on accelerate, in cleanrl's order (../shared/style.md).
Models (`load_models`):

    policy     the SFT model, trained (ppo.lora_r > 0: only     pi
               LoRA adapters, merged into it at the end)
    ref        the SFT model, frozen                         pi_ref (the KL penalty's anchor)
    value      the RM's trunk and scalar head, trained       V (paper 3.5: value from the RM)
               or, when the RM has its own tokenizer
               (rm.backbone: MiniLM), the SFT model's trunk
               with a new scalar head
    reward     the RM with its demonstration bias, frozen    r(x, y), of the decoded text
               (ppo.reward=gold or labelers: the world's gold
               labeler or its training labelers' mean
               utility, rlhf/oracle.py, oracle rewards)

One step (`ppo_step`), numbered as lm-human-preference-details numbers its rollout:

    1. rollout   batch_size train prompts (with world.rl_per_family's, or ppo.data's); sample
                 at temperature T, logprobs of logits / T
    2. score     the RM scores each (prompt, response) text; no EOS -> minus missing_eos_penalty
    3. forward   logprobs under ref, values under V, for every response token
    4. reward    -beta * (log pi - log pi_ref) per token, the score at the last token
    5. GAE       gamma = 1, lambda = 0.95 -> advantages (whitened) and returns
    6. update    the policy's rate from `policy_lr` (a warm-up over lr_warmup rollouts, paper
                 C.4); ppo_epochs x minibatches: clipped surrogate + vf_coef * clipped value loss
                 (+ ptx_coef * LM loss on pretraining blocks: PPO-ptx); stop early when the
                 approx KL to the rollout policy passes approxkl_stop; ema_decay > 0: an
                 average of the policy's weights follows each optimizer step and is the
                 final policy (paper C.4)
    7. log       metrics.jsonl (design.md's names), samples.jsonl with per-token KL,
                 checkpoint/; beta adapts if adaptive_kl (Ziegler et al. 2019)

Tensor names follow TRL and cleanrl: `b_` for the whole rollout, `mb_` for a minibatch.
`train(cfg)` returns the Run; `rlhf ppo --recipe R` calls it.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors.torch import load_model as load_safetensors_model
from safetensors.torch import save_model as save_safetensors_model
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, PreTrainedModel
from transformers.utils import logging as hf_logging

from rlhf import distributed as dist
from rlhf.config import LabConfig, PPOConfig, check_length, workspace_option
from rlhf.data import data_changed, fingerprint, load_prompts
from rlhf.errors import RunError
from rlhf.evaluate import blocks
from rlhf.files import atomic_dir
from rlhf.generation import Generation, generate
from rlhf.losses import gae, kl_shaped_rewards, masked_mean, policy_loss, value_loss, whiten
from rlhf.models import (
    add_lora,
    check_lora_targets,
    ensure_pad_token,
    load_policy,
    lora_config,
    merge_lora,
    quiet_progress,
    save_model,
)
from rlhf.oracle import JUDGES, GoldReward
from rlhf.packing import PackedRows, last_hidden, pack_rows, packable, pad_rows
from rlhf.ppo_report import VALUE_INIT, final_report, summary  # noqa: F401 - `rlhf ppo` prints summary
from rlhf.reward import RewardModel, load_reward_model
from rlhf.runs import Run, moved_source, read_eval, run_stage, upstream
from rlhf.tokenizer import encode_documents


@dataclass(frozen=True)
class DataPrompt:
    """A prompt of ppo.data: its text only, no gold answer to judge a response by."""

    id: str  # "data-<index>", the index in the file's (deduplicated) prompts
    text: str


# ppo.reward: the reward model (the paper), or an oracle: the gold labeler, the training labelers
REWARDS = ("rm", *JUDGES)


def train(cfg: LabConfig, run_dir: str | os.PathLike | None = None, progress: bool = True) -> Run:
    """Train (or resume, or return if already done) the PPO run in `run_dir`."""
    if cfg.ppo.reward not in REWARDS:  # checked first: a bad config leaves no run directory
        raise RunError(f"ppo.reward={cfg.ppo.reward!r}: expected one of {', '.join(REWARDS)}")
    if cfg.ppo.reward in JUDGES and cfg.ppo.data:
        raise RunError(
            f"ppo.reward={cfg.ppo.reward}: the prompts of ppo.data ({cfg.ppo.data}) have no "
            "gold answer; use ppo.reward=rm with them"
        )
    check_sizes(cfg)  # checked first: bad sizes leave no run directory behind
    check_length(cfg, "ppo")
    sources = source_runs(cfg)  # nor does a missing SFT or RM run
    data = None
    if cfg.ppo.data:  # read first: bad data leaves no run directory behind
        digest = fingerprint(cfg.ppo.data)
        prompts = [DataPrompt(f"data-{i}", t) for i, t in enumerate(load_prompts(cfg.ppo.data))]
        data = (prompts, digest)
    return run_stage(cfg, "ppo", run_dir, lambda run: _train(cfg, run, progress, sources, data))


def check_sizes(cfg: LabConfig) -> None:
    """A clear error for sizes that cannot split a rollout into minibatches (config.load checks
    each field's own bounds; this is what no single field knows)."""
    p = cfg.ppo
    if p.ppo_epochs < 1 or p.mini_batch_size < 1 or p.steps < 1:
        raise RunError(
            "ppo.steps, ppo.ppo_epochs and ppo.mini_batch_size must be >= 1 "
            f"(got {p.steps}, {p.ppo_epochs}, {p.mini_batch_size})"
        )
    if p.batch_size % p.mini_batch_size:
        raise RunError(
            f"ppo.batch_size={p.batch_size} is not a multiple of "
            f"ppo.mini_batch_size={p.mini_batch_size}"
        )


# ----------------------------------------------------------------------------- models


@dataclass
class Models:
    policy: PreTrainedModel  # causal LM, trained
    ref: PreTrainedModel  # causal LM, frozen
    value: PreTrainedModel  # sequence classifier (trunk + scalar head), trained
    reward: RewardModel | GoldReward  # frozen, with its bias (GoldReward: an oracle, ppo.reward)
    tokenizer: Any
    value_init: str = "rm"  # what the value model started from: "rm" or "policy" (VALUE_INIT)


def source_runs(cfg: LabConfig) -> tuple[Run, Run]:
    """(SFT run, RM run) this PPO run starts from: the configured ones, else the newest
    finished runs of this config."""
    p = cfg.ppo
    return upstream(cfg, "sft", p.sft_run, "ppo.sft_run"), upstream(
        cfg, "rm", p.rm_run, "ppo.rm_run"
    )


def stale(run: Run, cfg: LabConfig) -> str | None:
    """Why a finished PPO run of this config should not be reused: it started from another SFT
    or RM run than the ones this config now resolves to (a new RM after another collection
    round, say), else None."""
    try:
        report = read_eval(run)
        sft, rm = source_runs(cfg)
    except RunError:
        return None
    moved = moved_source(run, {"rm_run": rm, "sft_run": sft})
    return moved or (data_changed(report, cfg.ppo.data) if cfg.ppo.data else None)


def policy_lora(p: PPOConfig):
    """peft's LoraConfig of the policy, or None (ppo.lora_r 0: full fine-tuning)."""
    return lora_config(p.lora_r, p.lora_alpha, p.lora_dropout, p.lora_targets) if p.lora_r else None


def load_models(sft_dir: Path, rm_dir: Path, lora=None, seed: int = 0) -> Models:
    """`lora` (a peft LoraConfig, `policy_lora`): adapters injected into the policy, the only
    parameters of it that train; it stays a causal LM whose `base_model` is the trunk the
    packed forwards read. The reference is a second frozen copy of the SFT model even then.

    The value model starts from the RM when the RM shares the policy's tokenizer (paper 3.5:
    it reads the policy's tokens at every position), else from the SFT model with a new scalar
    head, initialised from `seed` (value_init "policy"); the RM then scores decoded text."""
    policy, tokenizer = load_policy(sft_dir)
    ref, _ = load_policy(sft_dir)
    reward = load_reward_model(rm_dir)
    value_dir = reward.value_init_dir(tokenizer)  # an ensemble's: a member's that reads ours
    value_init = "rm" if value_dir is not None else "policy"
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # from the SFT model: its report names the new head only
    try:
        with quiet_progress(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            value = AutoModelForSequenceClassification.from_pretrained(
                str(value_dir or sft_dir),
                num_labels=1,
                local_files_only=True,
                dtype=torch.float32,
            )
    finally:
        hf_logging.set_verbosity(verbosity)
    # A no-op for SFT models of this lab; a value model from the policy shares its tokenizer.
    ensure_pad_token(tokenizer, policy, ref, *([value] if value_init == "policy" else []))
    if lora is not None:
        check_lora_targets(policy, sorted(lora.target_modules), "ppo.lora_targets")
        policy = add_lora(policy, lora)
    for frozen in (ref, reward):  # the RM: its model, or an ensemble's members
        frozen.requires_grad_(False)
        frozen.eval()
    # Dropout off (eval mode; gradients still flow): the rollout samples and scores with it
    # off (generate runs in eval mode), so the update's forwards must compute the same function
    # or the ratio is not 1 before the first step (TRL disables dropout the same way). The tiny
    # Llama has none; GPT-2 has 0.1.
    policy.eval()
    value.eval()
    return Models(policy, ref, value, reward, tokenizer, value_init)


# ----------------------------------------------------------------------------- forwards


@dataclass
class Packed:
    """A batch of (prompt, response) sequences packed into rows (rlhf.packing), or one
    right-padded sequence a row for models that cannot be packed, with where to read each
    response token's prediction."""

    rows_: PackedRows  # the packed (or padded) (prompt + response) sequences
    predict_at: torch.Tensor  # (n,) flat index into rows x L of the position that predicts
    #                           (or values) response token j: the position just before it
    rows: torch.Tensor  # (n,) that token's row in the (B, R) response layout
    cols: torch.Tensor  # (n,) and its column
    shape: tuple[int, int]  # (B, R)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(n,) values per response token -> (B, R), 0 off the response mask."""
        return x.new_zeros(self.shape).index_put((self.rows, self.cols), x)


def pack(g: Generation, filler_id: int = 0, padded: bool = False) -> Packed:
    """Pack g's prompt + response sequences end to end. On the tiny world's rollouts real
    tokens are ~45% of a padded (B, P + R) batch. `padded`: one right-padded sequence a row
    instead (rlhf.packing.pad_rows), for models that cannot be packed; the same numbers."""
    prompts, responses = [], []
    for i in range(g.prompt_ids.shape[0]):
        prompts.append(g.prompt_ids[i][g.prompt_mask[i].bool()])
        responses.append(g.response_ids[i][g.response_mask[i].bool()])
    # Each sequence without its last token: no position reads its output (the position before
    # each response token predicts and values it) and, attention being causal, no earlier
    # position sees it; ~1 token in 22 on the tiny world.
    seqs = [
        torch.cat((pr, rs[:-1])) if len(rs) else pr
        for pr, rs in zip(prompts, responses, strict=True)
    ]
    rows_ = pad_rows(seqs, filler_id) if padded else pack_rows(seqs, filler_id)
    at, rows, cols = [], [], []
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        r = len(response)
        at.append(rows_.starts[i] + len(prompt) - 1 + torch.arange(r))
        rows.append(torch.full((r,), i))
        cols.append(torch.arange(r))
    return Packed(
        rows_, torch.cat(at), torch.cat(rows), torch.cat(cols), tuple(g.response_ids.shape)
    )


def _hidden(trunk: PreTrainedModel, pk: Packed) -> torch.Tensor:
    """(n, H): the trunk's last hidden state at each predict_at position."""
    return last_hidden(trunk, pk.rows_)[pk.predict_at]  # (rows x L, H) -> (n, H)


def forward_logprobs(
    model: PreTrainedModel,
    g: Generation,
    temperature: float,
    pk: Packed | None = None,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logprobs, entropy), each (B, R), 0 off the response mask: log pi(y_t | x, y_<t) of the
    response tokens under logits / temperature, and (with_entropy) the entropy of that
    distribution; else None: PPO reads the rollout's entropy from the sampler, so the update's
    forwards skip a (tokens x vocabulary) exp and product.

    The LM head runs only where it predicts a response token: on the tiny model the head is
    ~40% of a forward, and prompts are longer than responses."""
    pk = pk or pack(g, padded=not packable(model))
    logits = model.get_output_embeddings()(_hidden(model.base_model, pk))  # (n, V)
    logits = logits.float() if temperature == 1.0 else logits.float() / temperature
    tokens = g.response_ids[pk.rows, pk.cols]  # (n,)
    # log p(token) as one fused op: its backward is softmax - onehot, with no (n, V) gather
    # gradient and log-softmax backward in between.
    logprobs = -F.cross_entropy(logits, tokens, reduction="none")  # (n,)
    if not with_entropy:
        return pk.unpack(logprobs), None
    logp_all = torch.log_softmax(logits, dim=-1)  # (n, V)
    entropy = -(logp_all.exp() * logp_all).sum(-1)  # (n,)
    return pk.unpack(logprobs), pk.unpack(entropy)


def forward_values(
    value_model: PreTrainedModel, g: Generation, pk: Packed | None = None
) -> torch.Tensor:
    """(B, R) V(x, y_<t): the value head on the trunk's state before each response token, 0 off
    the response mask.

    AutoModelForSequenceClassification pools one position; the trunk (`base_model`) and the
    head (`score`) give every position."""
    pk = pk or pack(g, padded=not packable(value_model))
    return pk.unpack(value_model.score(_hidden(value_model.base_model, pk)).squeeze(-1).float())


class AdaptiveKL:
    """Ziegler et al. 2019's proportional controller: beta grows when the KL of a rollout is
    above target and shrinks when below, by at most 20% of n_steps / horizon per update."""

    def __init__(self, beta: float, target: float, horizon: int):
        self.value, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n_steps: int) -> None:
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


class WeightAverage:
    """An exponential moving average of the policy's trainable weights, moved towards them
    after every optimizer step: average <- decay * average + (1 - decay) * weights (paper C.4
    averages the weights so, with a decay of 0.992). It is the run's final policy; the
    rollouts sample the live weights, since PPO's ratio needs the policy that sampled them."""

    def __init__(self, policy: torch.nn.Module, decay: float):
        self.decay = decay
        live = [(n, q) for n, q in policy.named_parameters() if q.requires_grad]
        self.names = [n for n, _ in live]
        self.live = [q for _, q in live]  # the optimizer's tensors, updated in place
        self.average = [q.detach().clone() for q in self.live]

    @torch.no_grad()
    def update(self) -> None:
        for a, q in zip(self.average, self.live, strict=True):
            a.lerp_(q, 1.0 - self.decay)

    @torch.no_grad()
    def copy_to_policy(self) -> None:
        for a, q in zip(self.average, self.live, strict=True):
            q.copy_(a)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.average, strict=True))

    @torch.no_grad()
    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, a in zip(self.names, self.average, strict=True):
            a.copy_(tensors[name])  # KeyError for a tensor the file lacks


def policy_lr(p: PPOConfig, step: int) -> float:
    """The policy's learning rate for rollout step `step` (0-based): a linear warm-up from
    lr / 10 over lr_warmup steps (paper C.4), then a cosine from lr down to lr * lr_end at the
    last step. A function of the step alone, so a resumed run continues the schedule."""
    if step < p.lr_warmup:
        return p.lr * (0.1 + 0.9 * step / p.lr_warmup)
    span = p.steps - 1 - p.lr_warmup
    done = (step - p.lr_warmup) / span if span > 0 else 1.0
    return p.lr * (p.lr_end + (1 - p.lr_end) * 0.5 * (1 + math.cos(math.pi * min(done, 1.0))))


def make_optimizer(m: Models, p: PPOConfig) -> torch.optim.AdamW:
    """One AdamW, two groups: the policy's trainable parameters (all of them, or its LoRA
    adapters alone) at ppo.lr, which `policy_lr` schedules each step, and the value model at
    ppo.vf_lr (constant)."""
    return torch.optim.AdamW(
        [
            {"params": [q for q in m.policy.parameters() if q.requires_grad], "lr": p.lr},
            {"params": list(m.value.parameters()), "lr": p.vf_lr},
        ],
        betas=(0.9, 0.95),
        eps=1e-5,  # as lm-human-preference-details / cleanrl's PPO
        weight_decay=0.0,
        # One fused kernel for all tensors; torch's CPU default loops over them in Python.
        fused=True,
    )


def pretraining_blocks(world: Any, tokenizer: Any, block_size: int) -> torch.Tensor:
    """(N, block_size) token blocks of the pretraining corpus, for PPO-ptx (paper C.4)."""
    ids = encode_documents(tokenizer, world.train_documents())
    return torch.stack(blocks(ids, block_size, keep_remainder=False))


def step_generator(seed: int, step: int, salt: int) -> torch.Generator:
    """A generator that depends only on (seed, step, salt): a resumed run draws the same
    prompts, samples and pretraining blocks at each step as an uninterrupted one."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 101 + salt)


def check_finite(
    step: int, metrics: dict[str, float], run: Run, models: tuple[torch.nn.Module, ...] = ()
) -> None:
    """Stop the run, before this step's checkpoint, when a figure or a weight is not finite.
    The weights too: the losses are computed before the update, so a gradient that overflows
    leaves finite losses this step and NaN weights for the next (2.7 ms a step for tiny's two
    models, against ~1 s a PPO step)."""
    bad = [
        f"{k} = {metrics[k]}"
        for k in ("objective/kl", "objective/scores", "loss/total")
        if not math.isfinite(metrics.get(k, 0.0))
    ]
    for model in models:
        names = [n for n, w in model.named_parameters() if not bool(torch.isfinite(w).all())]
        if names:
            bad.append(f"{len(names)} weight tensors not finite after the update ({names[0]}, ...)")
    if bad:
        ckpt = run.checkpoint_dir / "state.json"
        last = json.loads(ckpt.read_text())["step"] if ckpt.exists() else None
        raise RunError(
            f"PPO step {step}: {'; '.join(bad)}; the run stopped. "
            + (
                f"The last good checkpoint (step {last}) is in {run.checkpoint_dir}"
                if last is not None
                else "No checkpoint was written yet"
            )
            + "; lower ppo.lr or raise ppo.kl_coef and start a new run"
        )


# ----------------------------------------------------------------------------- one step


def rollout_samples(
    policy: PreTrainedModel, tokenizer: Any, prompts: list[str], p: PPOConfig, seed: int
) -> Generation:
    """One response per prompt at temperature p.temperature, all in one batch, with the
    logprobs (logits / T) and entropies of the sampled tokens."""
    return generate(
        policy,
        tokenizer,
        prompts,
        max_new_tokens=p.max_new_tokens,
        temperature=p.temperature,
        seed=seed,
        batch_size=len(prompts),
        return_logprobs=True,
    )


def ppo_step(
    m: Models,
    optimizer: torch.optim.Optimizer,
    accelerator: Accelerator,
    p: PPOConfig,
    prompts: list[str],
    kl_coef: float,
    seed: int,
    ptx_data: torch.Tensor | None,
    shuffle_gen: torch.Generator,
    ptx_gen: torch.Generator,
    average: WeightAverage | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """One rollout and its update. `shuffle_gen` orders the minibatches, `ptx_gen` draws the
    pretraining blocks, `average` (ppo.ema_decay) follows every optimizer step. Returns
    (metrics, rollout); rollout holds what samples.jsonl needs."""
    t0 = time.perf_counter()
    policy = accelerator.unwrap_model(m.policy)
    value_model = accelerator.unwrap_model(m.value)
    # The forwards pack sequences into rows, or pad them for models that cannot be packed.
    padded = not (packable(policy) and packable(value_model))

    # 1. Rollout: sample at temperature T (paper: 1). The sampler also returns the logprobs of
    # the sampled tokens under logits / T and the entropies: the rollout policy's, with no
    # second forward (a test checks they equal a full forward's).
    g = rollout_samples(policy, m.tokenizer, prompts, p, seed)
    b_mask = g.response_mask  # (B, R)
    b_logprobs, b_entropy = g.logprobs * b_mask, g.entropy * b_mask  # (B, R)
    with torch.no_grad():
        # 2. Score the response text with the RM (its bias included); penalise no EOS.
        raw_scores = m.reward.score(prompts, g.texts)  # (B,)
        scores = raw_scores - p.missing_eos_penalty * (~g.ended).float()
        # 3. Logprobs of the reference; values before each response token.
        b_packed = pack(g, padded=padded)  # one packing for both forwards
        ref_logprobs, _ = forward_logprobs(m.ref, g, p.temperature, b_packed)  # (B, R)
        b_values = forward_values(value_model, g, b_packed) * b_mask  # (B, R)
        # 4. The KL-shaped reward: -beta * kl per token, the score at the last token.
        rewards, kl, non_score_reward = kl_shaped_rewards(
            scores, b_logprobs, ref_logprobs, b_mask, kl_coef
        )
        # Whitening reads the mean and variance over every process's rollout (None: this one).
        if p.whiten_rewards:
            moments = dist.masked_moments(rewards, b_mask)
            rewards = whiten(rewards, b_mask, shift_mean=False, moments=moments)
        # 5. GAE, then whiten the advantages over the response tokens of the rollout.
        b_advantages, b_returns = gae(rewards, b_values, b_mask, p.gamma, p.lam)
        b_advantages = whiten(
            b_advantages, b_mask, moments=dist.masked_moments(b_advantages, b_mask)
        )
    t_rollout = time.perf_counter() - t0

    # 6. Update: epochs x minibatches over the rollout, stopping early past approxkl_stop.
    B = len(prompts)
    stats: dict[str, list[float]] = {k: [] for k in ("pg", "vf", "clip", "vclip", "akl", "ptx")}
    early_stop = False
    for _epoch in range(p.ppo_epochs):
        order = torch.randperm(B, generator=shuffle_gen)
        for start in range(0, B, p.mini_batch_size):
            idx = order[start : start + p.mini_batch_size]
            mb, r = _slice(g, idx)
            mb_mask = mb.response_mask  # (mb, R'): the rollout's tensors are cut to [:, :r]
            mb_packed = pack(mb, padded=padded)
            new_logprobs, _ = forward_logprobs(m.policy, mb, p.temperature, mb_packed)  # (mb, R')
            pg_loss, clipfrac, approxkl = policy_loss(
                new_logprobs, b_logprobs[idx, :r], b_advantages[idx, :r], mb_mask, p.cliprange
            )
            new_values = forward_values(m.value, mb, mb_packed)  # (mb, R')
            vf_loss, vf_clipfrac = value_loss(
                new_values, b_values[idx, :r], b_returns[idx, :r], mb_mask, p.cliprange_value
            )
            loss = pg_loss + p.vf_coef * vf_loss
            if ptx_data is not None and p.ptx_coef > 0:
                n = max(1, round(len(idx) * p.ptx_batch_ratio))
                x = ptx_data[torch.randint(len(ptx_data), (n,), generator=ptx_gen)]  # (n, T)
                ptx_loss = m.policy(input_ids=x, labels=x).loss
                loss = loss + p.ptx_coef * ptx_loss
                stats["ptx"].append(ptx_loss.item())
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            dist.average_gradients(m.policy, m.value)  # accelerate launch: each its own rollout
            if p.grad_clip > 0:
                accelerator.clip_grad_norm_(m.policy.parameters(), p.grad_clip)
                accelerator.clip_grad_norm_(m.value.parameters(), p.grad_clip)
            optimizer.step()
            if average is not None:
                average.update()
            for k, v in zip(
                ("pg", "vf", "clip", "vclip", "akl"),
                (pg_loss, vf_loss, clipfrac, vf_clipfrac, approxkl),
                strict=True,
            ):
                stats[k].append(float(v.detach()))
            akl = dist.mean_over_processes({"akl": float(approxkl)})["akl"]  # all stop together
            if p.approxkl_stop > 0 and akl > p.approxkl_stop:
                early_stop = True
                break
        if early_stop:
            break
    if ptx_data is not None and not stats["ptx"]:
        # Plain PPO: the same pretraining loss, measured (no gradient), so the curves of PPO
        # and PPO-ptx show the alignment tax side by side.
        x = ptx_data[torch.randint(len(ptx_data), (p.mini_batch_size,), generator=ptx_gen)]
        with torch.no_grad():
            stats["ptx"].append(policy(input_ids=x, labels=x).loss.item())
    t_update = time.perf_counter() - t0 - t_rollout

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")

    lengths = b_mask.sum(1).float()
    metrics = {
        "objective/rlhf_reward": float((scores + non_score_reward.sum(1)).mean()),
        "objective/scores": float(raw_scores.mean()),
        "objective/kl": float(kl.sum(1).mean()),
        "objective/non_score_reward": float(non_score_reward.sum(1).mean()),
        "objective/entropy": float(masked_mean(b_entropy, b_mask)),
        "objective/kl_coef": kl_coef,
        "policy/approxkl": mean(stats["akl"]),
        "policy/clipfrac": mean(stats["clip"]),
        "policy/pg_loss": mean(stats["pg"]),
        "policy/minibatches": float(len(stats["pg"])),
        "policy/lr": float(optimizer.param_groups[0]["lr"]),
        "val/vf_loss": mean(stats["vf"]),
        "val/clipfrac": mean(stats["vclip"]),
        "val/mean": float(masked_mean(b_values, b_mask)),
        "ptx/loss": mean(stats["ptx"]),
        "response/length": float(lengths.mean()),
        "response/eos_rate": float(g.ended.float().mean()),
        "loss/total": float(loss.detach()),
        "time/rollout": t_rollout,
        "time/update": t_update,
    }
    rollout = {"g": g, "kl": kl, "scores": raw_scores}
    return metrics, rollout


@torch.no_grad()
def overoptimisation_probe(
    m: Models, policy: PreTrainedModel, world: Any, prompts: list[Any], p: PPOConfig, seed: int
) -> dict[str, float]:
    """The policy as it is now, on a fixed batch of prompts (the same ones and the same
    sampling seed every time): mean RM score, mean gold quality and mean KL to the reference
    of its samples. Over training, the RM score rising while gold stalls or falls is
    over-optimisation of the proxy (Gao et al. 2022)."""
    texts = [q.text for q in prompts]
    g = rollout_samples(policy, m.tokenizer, texts, p, seed)
    ref_logprobs, _ = forward_logprobs(m.ref, g, p.temperature)  # (N, R)
    kl = ((g.logprobs - ref_logprobs) * g.response_mask).sum(1)  # (N,)
    gold = [world.gold.score(q, t).quality for q, t in zip(prompts, g.texts, strict=True)]
    return {
        "overopt/scores": float(m.reward.score(texts, g.texts).mean()),
        "overopt/gold": sum(gold) / len(gold),
        "overopt/kl": float(kl.mean()),
    }


def _slice(g: Generation, idx: torch.Tensor) -> tuple[Generation, int]:
    """(minibatch, R'): rows idx of the rollout without the padding columns no row of the
    minibatch uses: leading prompt padding (prompts are left-padded) and trailing response
    padding beyond its longest response, R' <= R tokens. The forwards pack sequences anyway;
    this keeps the minibatch's (mb, R') loss tensors as small as its longest response."""
    prompt_mask = g.prompt_mask[idx]
    response_mask = g.response_mask[idx]
    first = int(prompt_mask.any(0).long().argmax())  # first prompt column any row uses
    r = max(1, int(response_mask.sum(1).max()))
    mb = Generation(
        g.prompt_ids[idx, first:],
        prompt_mask[:, first:],
        g.response_ids[idx, :r],
        response_mask[:, :r],
        [g.texts[i] for i in idx.tolist()],
        g.ended[idx],
    )
    return mb, r


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    ckpt_dir: Path,
    m: Models,
    optimizer,
    state: dict[str, Any],
    average: WeightAverage | None = None,
) -> None:
    """policy + value weights (safetensors), the policy's weight average if any, optimizer and
    trainer state, swapped in atomically."""
    with atomic_dir(ckpt_dir) as tmp:
        save_safetensors_model(m.policy, str(tmp / "policy.safetensors"))
        save_safetensors_model(m.value, str(tmp / "value.safetensors"))
        if average is not None:
            save_file(average.state_dict(), str(tmp / "policy_average.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")


def load_checkpoint(
    ckpt_dir: Path, m: Models, optimizer, average: WeightAverage | None = None
) -> dict[str, Any]:
    try:
        load_safetensors_model(m.policy, str(ckpt_dir / "policy.safetensors"))
        load_safetensors_model(m.value, str(ckpt_dir / "value.safetensors"))
        if average is not None:
            average.load_state_dict(load_file(str(ckpt_dir / "policy_average.safetensors")))
        # weights_only: tensors and plain containers only, never arbitrary pickled objects.
        optimizer.load_state_dict(torch.load(ckpt_dir / "optimizer.pt", weights_only=True))
        return json.loads((ckpt_dir / "state.json").read_text())
    except (OSError, RuntimeError, ValueError, KeyError, SafetensorError) as e:
        raise RunError(
            f"{ckpt_dir}: cannot resume from this checkpoint ({type(e).__name__}: {e}); "
            "delete it to restart the run from step 0"
        ) from None


# ----------------------------------------------------------------------------- the loop


def _train(
    cfg: LabConfig,
    run: Run,
    progress: bool,
    sources: tuple[Run, Run],
    data: tuple[list[DataPrompt], str] | None = None,
) -> None:
    """`sources`: the (SFT, RM) runs of source_runs. `data`: ppo.data's (prompts, sha256);
    else the rollouts sample the world's train prompts and its rl split's (World.rl_prompts)."""
    from rlhf.world import build_world

    p = cfg.ppo
    t_start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    with dist.main_first():  # built (or read) once, by the main process first
        world = build_world(cfg, progress=progress)
    sft_run, rm_run = sources
    m = load_models(sft_run.model_dir, rm_run.model_dir, policy_lora(p), seed=cfg.seed)
    if p.reward in JUDGES:  # an oracle arm: the gold labeler or the labelers instead of the RM
        m.reward = GoldReward(world, p.gold_scale, p.reward)
    if progress and dist.is_main():
        tqdm.write(f"value model from {VALUE_INIT[m.value_init]}", file=sys.stderr)
        tqdm.write(
            f"run {run.dir}: follow it live on the dashboard's KL drift page "
            f"(rlhf dashboard{workspace_option(cfg.workspace_dir)})",
            file=sys.stderr,
        )
    # On the CPU, even where SFT, the RM, DPO and GRPO use a GPU: the rollout, the packed
    # forwards, the reference, the RM and the pretraining blocks are built on the CPU, so a
    # policy on a GPU would fail at the first step. Moving them is untested without a GPU.
    accelerator = Accelerator(cpu=True)
    # Under accelerate launch each process rolls out its own prompts (rank_seed) and ppo_step
    # averages the gradients (rlhf.distributed): the models are placed on the device, not
    # wrapped in DDP, and only the main process writes the run's files.
    main = dist.is_main()
    rank_seed = cfg.seed + 1000 * accelerator.process_index  # rank 0 draws what 1 process does
    m.policy, m.value = m.policy.to(accelerator.device), m.value.to(accelerator.device)
    optimizer = accelerator.prepare(make_optimizer(m, p))
    average = WeightAverage(m.policy, p.ema_decay) if p.ema_decay > 0 else None
    prompts = data[0] if data else world.rl_prompts()  # train prompts (+ world.rl_per_family)
    val = world.prompts("val")  # the probe's fixed batch: a seeded draw across families
    probe_prompts = random.Random(cfg.seed).sample(val, min(p.overopt_prompts, len(val)))
    # The pretraining blocks: PPO-ptx trains on them; plain PPO measures its LM loss on them.
    ptx_data = pretraining_blocks(world, m.tokenizer, cfg.pretrain.block_size)

    step, elapsed_before = 0, 0.0
    kl_ctl = AdaptiveKL(p.kl_coef, p.target_kl, p.kl_horizon)
    if (run.checkpoint_dir / "state.json").exists():
        state = load_checkpoint(run.checkpoint_dir, m, optimizer, average)
        step, elapsed_before = int(state["step"]), float(state["elapsed_s"])
        kl_ctl.value = float(state["kl_coef"])
    if main:  # drop what was logged after the checkpoint (all of it, killed before the first)
        run.truncate_metrics(step)
        run.truncate_samples(step)

    show = progress and main
    bar = tqdm(total=p.steps, initial=step, desc="ppo", disable=not show, dynamic_ncols=True)
    while step < p.steps:
        gen = step_generator(rank_seed, step, 0)
        pick = torch.randint(len(prompts), (p.batch_size,), generator=gen).tolist()
        batch = [prompts[i].text for i in pick]
        probe = {}
        if p.overopt_every > 0 and step % p.overopt_every == 0:
            # Before this step's update: at step 1 the policy is still SFT (KL 0).
            probe = overoptimisation_probe(
                m, accelerator.unwrap_model(m.policy), world, probe_prompts, p, cfg.seed
            )
        optimizer.param_groups[0]["lr"] = policy_lr(p, step)  # group 0: the policy
        metrics, rollout = ppo_step(
            m,
            optimizer,
            accelerator,
            p,
            batch,
            kl_ctl.value,
            seed=rank_seed * 1_000_003 + step,
            ptx_data=ptx_data,
            shuffle_gen=step_generator(rank_seed, step, 1),
            ptx_gen=step_generator(rank_seed, step, 2),
            average=average,
        )
        if data:  # the file's prompts have no gold answer
            gold = [None] * len(pick)
        else:
            texts = rollout["g"].texts
            gold = [world.gold.score(prompts[i], t) for i, t in zip(pick, texts, strict=True)]
            metrics["objective/gold"] = sum(j.quality for j in gold) / len(gold)
        metrics = dist.mean_over_processes(metrics | probe)  # the whole batch's figures
        check_finite(step + 1, metrics, run, (m.policy, m.value))
        if p.adaptive_kl:
            # n_steps: every process's episodes (Ziegler's horizon counts the whole batch)
            kl_ctl.update(metrics["objective/kl"], p.batch_size * accelerator.num_processes)
        step += 1
        bar.update(1)
        bar.set_postfix(
            score=f"{metrics['objective/scores']:.2f}", kl=f"{metrics['objective/kl']:.2f}"
        )
        if not main:
            continue
        if step % p.log_every == 0 or step == p.steps or probe:
            run.log(step, metrics)
        if step % p.sample_every == 0 or step == 1 or step == p.steps:
            run.log_samples(
                step,
                sample_rows(
                    m.tokenizer, rollout, [prompts[i] for i in pick], gold, p.samples_per_log
                ),
            )
        if step % p.checkpoint_every == 0 and step < p.steps:
            elapsed = elapsed_before + time.perf_counter() - t_start
            state = {"step": step, "elapsed_s": elapsed, "kl_coef": kl_ctl.value}
            save_checkpoint(run.checkpoint_dir, m, optimizer, state, average)
    bar.close()
    if average is not None:  # the run's policy is the average (the probe saw the live weights)
        average.copy_to_policy()

    policy = accelerator.unwrap_model(m.policy)
    if p.lora_r:  # a plain causal LM again, of the SFT model's shape: later stages load it
        policy = merge_lora(policy)
    policy.eval()
    digests = dist.param_digests(policy)  # one per process: equal, the gradients were averaged
    value_digests = dist.param_digests(m.value)
    if not main:
        return
    save_model(policy, m.tokenizer, run.model_dir)
    train_wall = elapsed_before + time.perf_counter() - t_start
    report = final_report(cfg, world, policy, m, sft_run, rm_run, run)
    report["train_wall_time_s"] = train_wall
    report["param_sha256_by_process"] = digests
    report["processes"] = accelerator.num_processes  # each rolled out ppo.batch_size a step
    report["episodes_per_step"] = p.batch_size * accelerator.num_processes
    report["value_param_sha256_by_process"] = value_digests
    wall = elapsed_before + time.perf_counter() - t_start
    report["wall_time_s"] = wall
    if data:
        report |= {"data": cfg.ppo.data, "data_prompts": len(prompts), "data_sha256": data[1]}
    run.write_eval(report)
    run.set_status("done", wall_time_s=wall)


def sample_rows(
    tokenizer, rollout: dict[str, Any], prompts: list[Any], gold: list[Any], n: int
) -> list[dict[str, Any]]:
    """The first n episodes of a rollout with their tokens and per-token KL (for the
    dashboard's colouring by divergence)."""
    g, kl, scores = rollout["g"], rollout["kl"], rollout["scores"]
    rows = []
    for i in range(min(n, len(prompts))):
        L = int(g.response_mask[i].sum())
        ids = g.response_ids[i, :L].tolist()
        rows.append(
            {
                "prompt_id": prompts[i].id,
                "prompt": prompts[i].text,
                "response": g.texts[i],
                "tokens": [tokenizer.decode([t]) for t in ids],
                "kl": [round(float(x), 5) for x in kl[i, :L]],
                "score": float(scores[i]),
                "gold_likert": gold[i].likert if gold[i] else None,
                "ended": bool(g.ended[i]),
            }
        )
    return rows
