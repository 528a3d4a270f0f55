"""Stage 2: the reward model (paper 3.5).

    1. the SFT model with its LM head replaced by a scalar head (AutoModelForSequenceClassification,
       num_labels=1); the reward is read at the last non-pad token (right padding). Or another
       backbone (rm.backbone: all-MiniLM-L6-v2, a BERT encoder, or any model directory) with
       its own tokenizer: BERT reads (prompt, response) as a text pair and its head reads
       [CLS] through the pooler, not the last token (`text_pair`). Beyond the paper,
       rm.likelihood_weight adds w * the mean log p of the response under the RM's own trunk
       (rlhf/likelihood.py: the knowledge of the right answer the scalar head does not read)
    2. data: the store's comparisons; train = rankings of train prompts, evaluation = rankings
       of val prompts by training labelers and by held-out labelers. Or rm.data's comparisons
       (rlhf.data): train = the file's first 90%, evaluation = its last 10%
    3. K-wise loss (paper Eq. 1, `rlhf.losses.kwise_ranking_loss`): one batch element is one
       prompt's ranking; its K responses are forwarded once and all C(K,2) pairs come from
       those K rewards. Prompts with different K share a batch (ranks padded with -1).
       A transformers Trainer with this loss (TRL's RewardTrainer takes pairs only).
    4. bias: after training, shift so labeler demonstrations score mean 0 (paper 3.5); saved
       as reward_bias.json beside the weights and added by `RewardModel`
    5. eval.json: pairwise accuracy on both labeler groups, the demonstration mean after bias

rm.ensemble (beyond the paper, rlhf/ensemble.py) skips 1 and 3: the RM is the scale-matched mean
of finished RM runs, then biased, saved and evaluated as in 4 and 5.

Under `accelerate launch` every process trains (the Trainer's DDP); the main process alone
writes the run's files and evaluates (rlhf.distributed).

`train(cfg)` returns the Run; `rlhf rm --recipe R` calls it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import SafetensorError
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.utils import logging as hf_logging

from rlhf import distributed as dist
from rlhf import ensemble, likelihood
from rlhf.callbacks import (
    LogToRun,
    cosine_schedule,
    last_checkpoint_step,
    train_resuming,
    trainer_args,
)
from rlhf.config import LabConfig
from rlhf.data import fingerprint, load_comparisons
from rlhf.errors import DataError, RunError
from rlhf.evaluate import clustered_ci
from rlhf.labeling import is_held_out_prompt
from rlhf.losses import kwise_ranking_loss
from rlhf.models import (
    check_model_dir,
    ensure_pad_token,
    quiet_progress,
    resolve_reward_backbone,
    save_model,
)
from rlhf.packing import last_hidden, pack_rows, packable
from rlhf.runs import (
    Run,
    named_run,
    read_eval,
    recorded_run,
    run_stage,
    saved_config,
    upstream,
)
from rlhf.store import Comparison, Store
from rlhf.world import build_world

BIAS_FILE = "reward_bias.json"


def train(cfg: LabConfig, run_dir: str | os.PathLike | None = None, progress: bool = True) -> Run:
    """Train (or resume, or return if already done) the reward model in `run_dir`."""
    members = []
    if cfg.rm.ensemble:  # checked first: a bad member leaves no run directory behind
        members = ensemble.member_runs(cfg)
    # Read before the run directory exists, so that none is left behind by a missing SFT run,
    # an unfetched rm.backbone, bad rm.data, or no comparisons yet (no rlhf compare).
    from_file = training_comparisons(cfg) if cfg.rm.data else None  # a bad file: said first
    dirs = backbone_dir(cfg)
    rows, skipped = from_file or training_comparisons(cfg)
    if not rows:
        raise RunError(no_comparisons(cfg, skipped))
    if cfg.rm.with_human and not cfg.rm.data and not any(c.source == "human" for c in rows):
        # it trained the same RM as without it, and said nothing
        raise RunError(
            f"rm.with_human: no hand rankings in {cfg.workspace_dir / 'lab.db'} yet (the "
            "dashboard's Rank page saves them); train without --with-human"
        )
    return run_stage(
        cfg, "rm", run_dir, lambda run: _train(cfg, run, progress, dirs, rows, skipped, members)
    )


def no_comparisons(cfg: LabConfig, skipped: dict[str, int]) -> str:
    ignored = ", ".join(f"{n} of a {why}" for why, n in skipped.items() if n)
    return (
        f"no training comparisons of this world in {cfg.workspace_dir / 'lab.db'}"
        + (f" (ignored: {ignored})" if ignored else "")
        + f"; run: rlhf compare --recipe {cfg.recipe}"
    )


# ----------------------------------------------------------------------------- the model


class RewardModel(torch.nn.Module):
    """Scalar reward of (prompt, response) texts plus the demonstration bias: the head's value
    at the last non-pad token (a causal LM backbone), or at [CLS] through BERT's pooler (a
    text-pair tokenizer, `text_pair`). It scores text with its own tokenizer, so any policy's
    decoded responses can be scored, whatever the policy's tokenizer."""

    def __init__(
        self,
        model,
        tokenizer,
        bias: float = 0.0,
        max_length: int = 128,
        likelihood_weight: float = 0.0,
    ):
        super().__init__()
        self.model, self.tokenizer, self.bias, self.max_length = model, tokenizer, bias, max_length
        # rm.likelihood_weight (rlhf.likelihood, beyond the paper): + w * mean log p(response)
        self.likelihood_weight = likelihood_weight
        self.model_dir: Path | None = None  # set by load_reward_model

    def value_init_dir(self, tokenizer) -> Path | None:
        """Where PPO's value model starts (paper 3.5): this RM's directory if it reads
        `tokenizer`'s tokens (the policy's), else None (the value model starts from the policy)."""
        if self.model_dir is None or self.tokenizer.get_vocab() != tokenizer.get_vocab():
            return None
        return self.model_dir

    def batch_rewards(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N,) rewards without the bias of a KwiseCollator batch (ranks left out)."""
        inputs = {k: v for k, v in batch.items() if k not in ("ranks", "response_mask")}
        if self.likelihood_weight:
            return likelihood.rewards(
                self.model, **inputs, response_mask=batch["response_mask"],
                weight=self.likelihood_weight,
            )  # fmt: skip
        return self.model(**inputs).logits.squeeze(-1).float()

    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str], batch_size: int = 64) -> torch.Tensor:
        """(N,) rewards; the response is scored as the policy emits it, ending with EOS (a
        causal backbone), or as the second text of a pair (BERT).

        Each batch's sequences are packed end to end (rlhf.packing) and the head is read at
        each one's last token: the same numbers as a right-padded forward (a test checks),
        without its padding. Models that cannot be packed (rlhf.packing.packable: GPT-2, BERT)
        take a right-padded batch and their own head's reading: the last non-pad token, or
        BERT's [CLS]. So does an RM with the likelihood term (rm.likelihood_weight)."""
        self.model.eval()
        out = []
        for i in range(0, len(prompts), batch_size):
            batch = (prompts[i : i + batch_size], responses[i : i + batch_size])
            if self.likelihood_weight:  # right-padded: the likelihood reads every position
                enc = encode_pairs(self.tokenizer, *batch, self.max_length, response_mask=True)
                out.append(self.batch_rewards(enc).float())
                continue
            if not packable(self.model):
                enc = encode_pairs(self.tokenizer, *batch, self.max_length)
                out.append(self.model(**enc).logits.squeeze(-1).float())
                continue
            seqs = encode_ids(self.tokenizer, *batch, self.max_length)
            rows = pack_rows([torch.tensor(s) for s in seqs], self.tokenizer.pad_token_id)
            last = rows.starts + torch.tensor([len(s) for s in seqs]) - 1  # (n,)
            hidden = last_hidden(self.model.base_model, rows)[last]  # (n, H)
            out.append(self.model.score(hidden).squeeze(-1).float())
        return torch.cat(out) + self.bias if out else torch.zeros(0)


def load_reward_model(model_dir: str | os.PathLike) -> RewardModel | ensemble.EnsembleRM:
    """The RM saved in a run's model/ directory: a trained one, or an ensemble of RM runs
    (rm.ensemble, rlhf/ensemble.py); either scores with `score(prompts, responses)`."""
    path = Path(model_dir)
    if (path / ensemble.ENSEMBLE_FILE).exists():
        return ensemble.load(path)
    bias_file = path / BIAS_FILE
    if not bias_file.exists():
        raise RunError(f"{path}: not a reward model ({BIAS_FILE} missing)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        with quiet_progress():
            model = AutoModelForSequenceClassification.from_pretrained(
                str(path), local_files_only=True
            )
        info = json.loads(bias_file.read_text())
        float(info["bias"])
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:  # a cut file
        raise RunError(f"{path}: cannot load the reward model ({type(e).__name__}: {e})") from None
    tokenizer.padding_side = "right"
    model.eval()
    weight = float(info.get("likelihood_weight", 0.0))  # 0: the paper's RM (and older runs)
    if weight:
        likelihood.check_tied(model, str(path))
    rm = RewardModel(model, tokenizer, info["bias"], info.get("max_length", 128), weight)
    rm.model_dir = path
    return rm


def text_pair(tokenizer) -> bool:
    """Does the RM read (prompt, response) as a text pair, "[CLS] prompt [SEP] response [SEP]"?
    Yes for encoder tokenizers with [CLS] and [SEP] (BERT's, MiniLM's): their sequence
    classifiers read the first token ([CLS]; BERT through its pooler), so the prompt and the
    response are told apart by [SEP] and token types, not by EOS. No for causal LM tokenizers:
    prompt + " " + response + EOS, read at the last non-pad token."""
    return (
        getattr(tokenizer, "cls_token_id", None) is not None
        and getattr(tokenizer, "sep_token_id", None) is not None
    )


def encode_ids(
    tokenizer, prompts: list[str], responses: list[str], max_length: int
) -> list[list[int]]:
    """Token ids of prompt + " " + response + EOS per pair, the END kept of over-long ones."""
    eos = tokenizer.eos_token_id
    return [
        (p_ids + r_ids + [eos])[-max_length:]
        for p_ids, r_ids in zip(
            tokenizer(prompts, add_special_tokens=False)["input_ids"],
            tokenizer([" " + r.strip() for r in responses], add_special_tokens=False)["input_ids"],
            strict=True,
        )
    ]


def encode_pairs(
    tokenizer, prompts: list[str], responses: list[str], max_length: int, response_mask=False
) -> dict[str, torch.Tensor]:
    """Right-padded (N, T) input_ids/attention_mask of prompt + " " + response + EOS, keeping
    the END of over-long sequences (the response and its EOS are what is scored). Responses
    are stripped first, as the store keeps them: generated text starts with its own space,
    and a second one would be a token the RM never saw in training.

    A text-pair tokenizer (`text_pair`: BERT's) gets "[CLS] prompt [SEP] response [SEP]" with
    token_type_ids too; an over-long pair loses tokens from the START of the longer of its
    two texts (longest_first, truncation side left), so the response's end and the end of
    the prompt (the question) are kept.

    response_mask=True (causal tokenizers only; the likelihood term, rlhf.likelihood) adds
    (N, T) "response_mask": true at the response's tokens and its EOS, never at position 0."""
    if text_pair(tokenizer):
        side = tokenizer.truncation_side
        tokenizer.truncation_side = "left"
        try:
            enc = tokenizer(
                prompts,
                [r.strip() for r in responses],
                truncation="longest_first",
                max_length=max_length,
                padding=True,
                padding_side="right",
                return_tensors="pt",
            )
        finally:
            tokenizer.truncation_side = side
        return dict(enc)
    rows = encode_ids(tokenizer, prompts, responses, max_length)
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), tokenizer.pad_token_id)  # (N, T)
    mask = torch.zeros(len(rows), T, dtype=torch.long)  # (N, T)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    if not response_mask:
        return {"input_ids": ids, "attention_mask": mask}
    resp = torch.zeros(len(rows), T, dtype=torch.bool)  # (N, T)
    lengths = tokenizer([" " + r.strip() for r in responses], add_special_tokens=False)
    for i, (r, r_ids) in enumerate(zip(rows, lengths["input_ids"], strict=True)):
        resp[i, max(1, len(r) - len(r_ids) - 1) : len(r)] = True  # + EOS; kept tokens only
    return {"input_ids": ids, "attention_mask": mask, "response_mask": resp}


# ----------------------------------------------------------------------------- data


@dataclass
class KwiseCollator:
    """A batch of B rankings -> every response of every ranking as one (N, T) batch plus
    ranks (B, Kmax), -1 where a prompt has fewer than Kmax responses. Responses are laid out
    row-major, so rewards (N,) scatter back into the present slots of ranks in order."""

    tokenizer: Any
    max_length: int
    likelihood: bool = False  # also each response's tokens ("response_mask"; rlhf.likelihood)

    def __call__(self, batch: list[Comparison]) -> dict[str, torch.Tensor]:
        k_max = max(len(c.responses) for c in batch)
        ranks = torch.full((len(batch), k_max), -1, dtype=torch.long)  # (B, Kmax)
        prompts, responses = [], []
        for b, c in enumerate(batch):
            ranks[b, : len(c.ranking)] = torch.tensor(c.ranking)
            prompts += [c.prompt] * len(c.responses)
            responses += c.responses
        enc = encode_pairs(self.tokenizer, prompts, responses, self.max_length, self.likelihood)
        return {**enc, "ranks": ranks}


def rewards_by_rank_slot(rewards: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """(N,) flat rewards -> (B, Kmax), zeros where no response is (masked in the loss)."""
    return rewards.new_zeros(ranks.shape).masked_scatter(ranks >= 0, rewards)


class KwiseTrainer(Trainer):
    """transformers Trainer whose loss is the K-wise ranking loss over whole rankings."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ranks = inputs["ranks"]  # (B, Kmax)
        # input_ids, attention_mask, and token_type_ids for a text-pair (BERT) tokenizer, or
        # response_mask for the likelihood term (rlhf.likelihood.LikelihoodRM)
        logits = model(**{k: v for k, v in inputs.items() if k != "ranks"}).logits  # (N, 1)
        rewards = rewards_by_rank_slot(logits.squeeze(-1), ranks)  # (B, Kmax)
        loss = kwise_ranking_loss(rewards, ranks)
        return (loss, {"rewards": rewards}) if return_outputs else loss


def same_world_comparisons(
    rows: list[Comparison], cfg: LabConfig
) -> tuple[list[Comparison], dict[str, int]]:
    """The simulated comparisons whose policy run was trained on this config's world.

    One lab.db serves every world of a workspace, and prompt ids repeat across worlds, so
    rankings of another world's samples (an older world version, another seed) must not leak
    into training or evaluation. Human comparisons are kept (their prompts are whatever a labeler
    ranked). Returns (kept, skipped count per reason)."""
    want = saved_config(cfg, "rm")["world"]
    chain = policy_chain(cfg) if cfg.rm.samples == "chain" else None
    verdict: dict[str | None, str] = {}
    kept, skipped = [], {"other world": 0, "policy run missing": 0}  # reason -> count
    if chain is not None:
        skipped["later round"] = 0
    for c in rows:
        if c.source == "human":
            kept.append(c)
            continue
        if c.policy not in verdict:
            try:
                # by its name in this workspace if the workspace was copied or moved
                run = Run.open(recorded_run(c.policy, cfg.workspace_dir)) if c.policy else None
                world = run.raw_config().get("world") if run else None
                verdict[c.policy] = "ok" if world == want else "other world"
                theirs = run.dir.resolve() if run else None
                if run and chain is not None and run.stage != "sft" and theirs not in chain:
                    verdict[c.policy] = "later round"  # or another chain's: not this RM's data
            except RunError:
                verdict[c.policy] = "policy run missing"
        if verdict[c.policy] == "ok":
            kept.append(c)
        else:
            skipped[verdict[c.policy]] += 1
    return kept, skipped


def policy_chain(cfg: LabConfig) -> set[Path]:
    """rm.samples=chain: the run directories of compare.policy_run, of the compare.policy_run
    of that run's own config, and so on back to a run made from the SFT model's samples. Each
    was the policy sampled in one round of iterated collection (paper section 3), and the RM
    trains on their comparisons and the SFT model's. Empty when compare.policy_run is."""
    chain: set[Path] = set()
    recorded = cfg.compare.policy_run
    while recorded:
        run = Run.open(named_run(recorded, cfg.workspace_dir))
        if run.dir.resolve() in chain:  # a loop, made by hand
            break
        chain.add(run.dir.resolve())
        recorded = run.raw_config().get("compare", {}).get("policy_run", "")
    return chain


def samples_of(rows: list[Comparison]) -> dict[str, int]:
    """Comparisons per policy whose samples they rank (its run's name; "human": hand rankings,
    "file": rm.data), in the order first seen."""
    counts: dict[str, int] = {}
    for c in rows:
        name = "human" if c.source == "human" else Path(c.policy).name if c.policy else "file"
        counts[name] = counts.get(name, 0) + 1
    return counts


def split_comparisons(rows: list[Comparison], heldout_ids: set[str]) -> dict[str, list[Comparison]]:
    """train: rankings of train prompts by training labelers, and hand rankings of train or
    typed prompts; val_train_labelers / val_heldout_labelers: simulated rankings of val
    prompts by each group; val_human: hand rankings of val and test prompts, kept out of
    training so the RM's accuracy on people is measured on rankings it never saw."""
    out: dict[str, list[Comparison]] = {
        "train": [],
        "val_train_labelers": [],
        "val_heldout_labelers": [],
        "val_human": [],
    }
    for c in rows:
        if c.source == "human":
            out["val_human" if is_held_out_prompt(c.prompt_id) else "train"].append(c)
        elif c.prompt_id and "-val-" in c.prompt_id:
            out[
                "val_heldout_labelers" if c.labeler in heldout_ids else "val_train_labelers"
            ].append(c)
        elif c.labeler not in heldout_ids:
            out["train"].append(c)
    return out


def split_file_comparisons(rows: list[Comparison]) -> dict[str, list[Comparison]]:
    """rm.data's comparisons in file order: train = the first 90%, val_data = the last 10% (at
    least one comparison if there are two), never trained on."""
    n_val = max(1, len(rows) // 10) if len(rows) > 1 else 0
    return {"train": rows[: len(rows) - n_val], "val_data": rows[len(rows) - n_val :]}


def accuracy(rm: RewardModel | ensemble.EnsembleRM, rows: list[Comparison]) -> tuple[float, int]:
    """(pairwise accuracy, pairs) of the RM on rankings, ties in reward counting half: the mean
    of `pair_frame`'s `correct`, each distinct response scored once."""
    pairs = pair_frame(rm, rows, set()) if rows else None
    if pairs is None or pairs.empty:
        return float("nan"), 0
    return float(pairs["correct"].mean()), len(pairs)


def pair_frame(
    rm: RewardModel | ensemble.EnsembleRM, rows: list[Comparison], heldout_ids: set[str]
) -> pd.DataFrame:
    """One row per ranked pair (ties give none): who ranked it, the RM's reward of the chosen
    and the rejected response, and whether the RM agrees. Each response is scored once.

    Columns: comparison, prompt_id, family, labeler, group (training | held-out), source,
    k, r_chosen, r_rejected, margin (r_chosen - r_rejected), correct (1, 0, or 0.5 on a tie).
    """
    # Validation sets are ranked by every labeler: score each distinct (prompt, response) once.
    unique = list(dict.fromkeys((c.prompt, r) for c in rows for r in c.responses))
    scored = rm.score([p for p, _ in unique], [r for _, r in unique]).tolist() if unique else []
    score_of = dict(zip(unique, scored, strict=True))
    records = []
    for n, c in enumerate(rows):
        r = [score_of[(c.prompt, resp)] for resp in c.responses]
        family = c.prompt_id.split("-")[0] if c.prompt_id else "(typed)"
        for a in range(len(r)):
            for b in range(len(r)):
                if c.ranking[a] < c.ranking[b]:
                    margin = r[a] - r[b]
                    records.append(
                        {
                            "comparison": c.id if c.id is not None else n,
                            "prompt_id": c.prompt_id,
                            "family": family,
                            "labeler": c.labeler,
                            "group": "held-out" if c.labeler in heldout_ids else "training",
                            "source": c.source,
                            "k": len(r),
                            "r_chosen": r[a],
                            "r_rejected": r[b],
                            "margin": margin,
                            "correct": 1.0 if margin > 0 else (0.5 if margin == 0 else 0.0),
                        }
                    )
    columns = ["comparison", "prompt_id", "family", "labeler", "group", "source", "k"]
    columns += ["r_chosen", "r_rejected", "margin", "correct"]
    return pd.DataFrame(records, columns=columns)


def gold_accuracy(world: Any, rows: list[Comparison]) -> tuple[float, int]:
    """The ceiling of RM accuracy on `rows`: how often the world's gold labeler orders a ranked
    pair as the labeler did (ties in gold quality count half). A perfect reward model of the
    gold quality would score this; the labelers' noise keeps it below 100%."""
    prompts = {p.id: p for p in world.prompts()}
    hits = n = 0.0
    for c in rows:
        p = prompts.get(c.prompt_id or "")
        if p is None:  # a typed prompt (human comparisons): no gold answer
            continue
        q = {r: world.gold.score(p, r).quality for r in c.responses}
        for chosen, rejected in c.pairs():
            hits += 1.0 if q[chosen] > q[rejected] else 0.5 if q[chosen] == q[rejected] else 0.0
            n += 1
    return (hits / n if n else float("nan")), int(n)


def answer_checking(world: Any, rows: list[Comparison], pairs: pd.DataFrame) -> pd.DataFrame:
    """Can the RM tell a right answer from a wrong one? Per task family, over the ranked pairs
    of `rows` (in `pair_frame(rm, rows, ...)` order, `pairs`) in which the gold labeler judges
    exactly one response correct: `rm` = share in which the RM scores the correct one higher
    (ties half), `labelers` = share in which the labeler ranked it higher, `pairs` = count.

    Accuracy alone mixes checking the answer with judging its form (tidy, no rambling, no
    insult); this separates the first. The labelers' share is what the RM learns from.
    Columns: family, rm, labelers, pairs; one row per family with such pairs, then "all"."""
    prompts = {p.id: p for p in world.prompts()}
    records = []  # (family, chosen is the correct one)
    for c in rows:
        p = prompts.get(c.prompt_id or "")
        right = [p is not None and world.gold.score(p, r).flags["correct"] for r in c.responses]
        for a in range(len(c.responses)):  # the pair order of pair_frame
            for b in range(len(c.responses)):
                if c.ranking[a] < c.ranking[b]:
                    records.append((right[a], right[b]))
    if len(records) != len(pairs):
        raise ValueError(f"{len(pairs)} pairs for {len(records)} ranked pairs of the rows")
    frame = pairs.assign(
        chosen_right=[a for a, _ in records], rejected_right=[b for _, b in records]
    )
    frame = frame[frame["chosen_right"] != frame["rejected_right"]]
    # The RM prefers the correct answer: a positive margin when it was chosen, else negative.
    sign = frame["chosen_right"].map({True: 1.0, False: -1.0})
    frame = frame.assign(
        rm=(sign * frame["margin"]).map(lambda m: 1.0 if m > 0 else 0.5 if m == 0 else 0.0),
        labelers=frame["chosen_right"].astype(float),
    )
    if frame.empty:  # no family has a right and a wrong answer ranked together
        return pd.DataFrame(columns=["family", "rm", "labelers", "pairs"])
    out = frame.groupby("family")[["rm", "labelers"]].mean()
    out["pairs"] = frame.groupby("family").size()
    out.loc["all"] = [frame["rm"].mean(), frame["labelers"].mean(), len(frame)]
    out["pairs"] = out["pairs"].astype(int)
    return out.reset_index().rename(columns={"index": "family"})


def accuracy_by(pairs: pd.DataFrame, by: str | list[str]) -> pd.DataFrame:
    """Pairwise accuracy and pair count grouped by a column of `pair_frame` (e.g. family)."""
    out = pairs.groupby(by)["correct"].agg(accuracy="mean", pairs="size").reset_index()
    return out.sort_values("accuracy", ascending=False, ignore_index=True)


# ----------------------------------------------------------------------------- training


def sft_model_dir(cfg: LabConfig) -> Path:
    return upstream(cfg, "sft", cfg.rm.sft_run, "rm.sft_run").model_dir


def backbone_dir(cfg: LabConfig) -> tuple[Path, Path | None]:
    """(the directory the RM starts from, the SFT model's directory or None): the SFT model
    (rm.backbone empty, the paper's way), else rm.backbone's model (rlhf.models
    .resolve_reward_backbone); the SFT run is then recorded if there is one (it made the
    comparisons and is the dashboard's KL reference) but not needed, unless rm.sft_run names
    one."""
    backbone = resolve_reward_backbone(cfg.rm.backbone)
    if backbone is None:
        sft = sft_model_dir(cfg)
        return sft, sft
    try:
        return backbone, sft_model_dir(cfg)
    except RunError:
        if cfg.rm.sft_run:
            raise
        return backbone, None


def training_comparisons(cfg: LabConfig) -> tuple[list[Comparison], dict[str, int]]:
    """(rows, skipped): the stored comparisons an RM of this config trains and is tested on:
    every simulated one of this world, of any policy (SFT, or later ones: iterated collection),
    plus the hand-ranked ones with rm.with_human; or those of the rm.data file instead."""
    if cfg.rm.data:
        rows = load_comparisons(cfg.rm.data)
        if len(rows) == 1:  # it trained on it and measured nothing (split_file_comparisons)
            raise DataError(
                f"{cfg.rm.data}: 1 comparison; rm.data needs at least 2: the last 10% of the "
                "file (at least one comparison) is held out to measure the RM, never trained on"
            )
        return rows, {}
    with Store.open(cfg) as store:
        rows = store.comparisons(source="simulated")
        if cfg.rm.with_human:
            rows += store.comparisons(source="human")
    return same_world_comparisons(rows, cfg)


def data_fingerprint(rows: list[Comparison], path: str = "") -> dict[str, Any]:
    """What an RM run records of its data, to tell later whether the store (or the rm.data
    file at `path`) has changed."""
    out: dict[str, Any] = {"comparisons": len(rows)}
    out["last_id"] = max((c.id or 0 for c in rows), default=0)
    if path:
        out["sha256"] = fingerprint(path)
    return out


def stale(run: Run, cfg: LabConfig) -> str | None:
    """Why a finished RM run of this config should not be reused (its comparisons are no longer
    the store's: a new collection round, hand rankings added or undone), else None."""
    try:
        trained = read_eval(run).get("data")
    except RunError:
        return None
    now = data_fingerprint(training_comparisons(cfg)[0], cfg.rm.data)
    if trained is None or trained == now:
        return None
    if cfg.rm.data:
        return f"{cfg.rm.data} has changed since {run.dir} trained on it"
    return (
        f"the store now holds {now['comparisons']:,} comparisons for this RM "
        f"(last id {now['last_id']}); {run.dir} trained on {trained['comparisons']:,} "
        f"(last id {trained['last_id']})"
    )


def load_backbone(base_dir: Path, seed: int) -> tuple[Any, Any]:
    """(model, tokenizer padding right): the model of `base_dir` with a new scalar head
    (step 1): a causal LM (the SFT model), read at the last non-pad token, or an encoder
    (MiniLM's BERT), read at [CLS] through its pooler. A tokenizer without a pad token (GPT-2's)
    gets one (rlhf.models.ensure_pad_token). Weights the checkpoint lacks (the head; BERT's
    pooler in checkpoints saved without it) are initialised from the seed."""
    tokenizer = AutoTokenizer.from_pretrained(str(check_model_dir(base_dir)), local_files_only=True)
    tokenizer.padding_side = "right"
    # The scalar head (and a missing pooler) is new: seed its initialisation (the Trainer seeds
    # only after it exists), so the same config and seed give the same reward model.
    set_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report only says the new head is not in the file
    try:
        with quiet_progress():
            model = AutoModelForSequenceClassification.from_pretrained(
                str(base_dir), num_labels=1, local_files_only=True
            )
    finally:
        hf_logging.set_verbosity(verbosity)
    ensure_pad_token(tokenizer, model)
    return model, tokenizer


def _train(
    cfg: LabConfig,
    run: Run,
    progress: bool,
    dirs: tuple[Path, Path | None],
    rows: list[Comparison],
    skipped: dict[str, int],
    members: list[Run] | None = None,
) -> None:
    """`dirs`: backbone_dir's (the directory the RM starts from, the SFT model's or None).
    `rows`, `skipped`: training_comparisons' (rm.data's or the store's), already read.
    `members`: rm.ensemble's runs, already checked (ensemble.member_runs)."""
    t_start = time.perf_counter()
    r = cfg.rm
    with dist.main_first():  # built (or read) once, by the main process first
        world = build_world(cfg, progress=progress)
    base_dir, sft_dir = dirs
    heldout_ids = {lab.id for lab in world.heldout_labelers}
    data = split_file_comparisons(rows) if r.data else split_comparisons(rows, heldout_ids)
    if not data["train"]:  # only held-out comparisons
        raise RunError(no_comparisons(cfg, skipped))

    if r.ensemble:  # beyond the paper: nothing to train, the members' scale-matched mean
        if not dist.is_main():  # an accelerate launch: the main process alone combines
            return
        seen = list(dict.fromkeys((c.prompt, x) for c in data["train"] for x in c.responses))
        members = members or ensemble.member_runs(cfg)
        rm = ensemble.combine(members, [q for q, _ in seen], [x for _, x in seen])
        steps, step_seconds, digests = 0, 0.0, []
    else:
        fitted = _fit(cfg, run, progress, data["train"], base_dir)
        if fitted is None:  # not the main process of an accelerate launch: it only trains
            return
        rm, steps, step_seconds, digests = fitted

    # 4. Demonstration-mean-0 bias (paper 3.5): the RM's zero is "as good as a demonstration".
    demos = world.demonstrations("train")
    demo_scores = rm.score([d.prompt for d in demos], [d.response for d in demos])  # (D,)
    rm.bias = bias = -float(demo_scores.mean())
    demo_mean = float((demo_scores + bias).mean())  # what the saved RM scores them: ~0
    if isinstance(rm, ensemble.EnsembleRM):
        ensemble.save(rm, run.model_dir)
    else:
        save_model(rm.model, rm.tokenizer, run.model_dir)
        info = {"bias": bias, "max_length": r.max_length}
        if r.likelihood_weight:
            info["likelihood_weight"] = rm.likelihood_weight
        (run.model_dir / BIAS_FILE).write_text(json.dumps(info) + "\n")

    report: dict[str, Any] = {
        "sft_run": str(sft_dir.parent) if sft_dir else None,
        "steps": steps,
        "bias": bias,
        "param_sha256_by_process": digests,
        "demo_mean_after_bias": demo_mean,
        "skipped_comparisons": skipped,
        "samples_of": samples_of(rows),
        "data": data_fingerprint(rows, r.data),
    }
    if r.likelihood_weight:
        report["likelihood_weight"] = {
            "start": r.likelihood_weight,
            "learned": rm.likelihood_weight,
        }
    if r.ensemble:
        report["ensemble"] = [  # each member, its scale, and its own held-out accuracies
            {"run": str(m.dir), "scale": s}
            | {k: v for k, v in read_eval(m).items() if k.startswith("accuracy/val_")}
            for m, s in zip(members, rm.scales, strict=True)
        ]
    if r.backbone:
        report["backbone"] = {
            "name": r.backbone,
            "dir": str(base_dir),
            "model_type": rm.model.config.model_type,
            "reads": "[CLS]" if text_pair(rm.tokenizer) else "last token",
            "parameters": sum(q.numel() for q in rm.model.parameters()),
        }
    acc, pairs = accuracy(rm, data["train"])
    report |= {"accuracy/train": acc, "pairs/train": pairs}
    if not r.data:  # the store's comparisons: both labeler groups, and the gold labeler
        val = pair_frame(rm, data["val_train_labelers"] + data["val_heldout_labelers"], heldout_ids)
        for name, group in (
            ("val_train_labelers", "training"),
            ("val_heldout_labelers", "held-out"),
        ):
            part = val[val["group"] == group]  # each val response scored once for both groups
            ci = clustered_ci(part["correct"].tolist(), part["prompt_id"].tolist(), seed=cfg.seed)
            report[f"accuracy/{name}"] = ci["mean"]
            report[f"accuracy_ci/{name}"] = [ci["lo"], ci["hi"]]  # 95%, prompts resampled
            report[f"pairs/{name}"] = len(part)
            report[f"prompts/{name}"] = int(part["prompt_id"].nunique())
        for name in ("val_train_labelers", "val_heldout_labelers"):
            report[f"gold_ceiling/{name}"] = gold_accuracy(world, data[name])[0]
    # val_human: hand rankings of held-out prompts (rm.with_human); val_data: rm.data's last 10%
    for name in ("val_human", "val_data"):
        if data.get(name):
            part = pair_frame(rm, data[name], heldout_ids)
            ci = clustered_ci(part["correct"].tolist(), part["comparison"].tolist(), seed=cfg.seed)
            report[f"accuracy/{name}"] = ci["mean"]
            report[f"accuracy_ci/{name}"] = [ci["lo"], ci["hi"]]  # comparisons resampled
            report[f"pairs/{name}"] = len(part)
    for name, part in data.items():
        report[f"comparisons/{name}"] = len(part)
    if not r.data and not val.empty:
        report["accuracy_by_family"] = {
            row.family: row.accuracy for row in accuracy_by(val, "family").itertuples()
        }
        checking = answer_checking(
            world, data["val_train_labelers"] + data["val_heldout_labelers"], val
        )
        report["answer_checking"] = {  # right vs wrong answers: the RM, and the labelers
            row.family: {"rm": row.rm, "labelers": row.labelers, "pairs": row.pairs}
            for row in checking.itertuples()
        }
    report["wall_time_s"] = time.perf_counter() - t_start
    report["seconds_per_step"] = step_seconds
    run.write_eval(report)
    run.set_status("done", wall_time_s=report["wall_time_s"])


def _fit(
    cfg: LabConfig, run: Run, progress: bool, train_rows: list[Comparison], base_dir: Path
) -> tuple[RewardModel, int, float, list[str]] | None:
    """Steps 1 and 3: train the RM on `train_rows` (resuming a checkpoint). Returns (the RM
    without its bias, optimizer steps, seconds a step, parameter digests per process), or None
    on a process other than the main one of an accelerate launch."""
    r = cfg.rm
    model, tokenizer = load_backbone(base_dir, cfg.seed)
    if r.likelihood_weight:  # beyond the paper: + w * mean log p(response) (rlhf.likelihood)
        if text_pair(tokenizer):
            raise RunError(
                f"rm.likelihood_weight: {base_dir} is an encoder (it reads a text pair), with "
                "no likelihood of the response; use a causal LM backbone or set it to 0"
            )
        model = likelihood.LikelihoodRM(model, r.likelihood_weight)

    args = TrainingArguments(
        **trainer_args(run, cfg.seed, progress, r.log_every, r.checkpoint_every, keep=1),
        **cosine_schedule(r.lr, r.epochs, r.max_steps, r.batch_size),
        weight_decay=r.weight_decay,
        remove_unused_columns=False,
        ddp_find_unused_parameters=False,  # every parameter is used (accelerate launch)
    )
    trainer = KwiseTrainer(
        model=model,
        args=args,
        train_dataset=train_rows,
        data_collator=KwiseCollator(tokenizer, r.max_length, bool(r.likelihood_weight)),
        callbacks=[LogToRun(run)],
    )
    t_train, first_step = time.perf_counter(), last_checkpoint_step(run.checkpoint_dir)
    train_resuming(trainer, run)
    # the optimizer steps of this process (a resumed run: those after its checkpoint)
    step_seconds = (time.perf_counter() - t_train) / max(1, trainer.state.global_step - first_step)
    digests = dist.param_digests(trainer.model)  # one per process: equal after DDP
    if not dist.is_main():
        return None

    trained, weight = trainer.model.eval(), 0.0
    if isinstance(
        trained, likelihood.LikelihoodRM
    ):  # the classifier, and w (learned) to save beside it
        trained, weight = trained.model, float(trained.weight.detach())
    rm = RewardModel(trained, tokenizer, 0.0, r.max_length, weight)
    return rm, trainer.state.global_step, step_seconds, digests


def answer_checking_of(report: dict[str, Any]) -> pd.DataFrame:
    """An RM run's eval.json "answer_checking" as the `answer_checking` frame (family, rm,
    labelers, pairs); empty for runs without it (before 2026-11-26, or no such pair)."""
    rows = [{"family": f} | v for f, v in (report.get("answer_checking") or {}).items()]
    return pd.DataFrame(rows, columns=["family", "rm", "labelers", "pairs"])


def summary(report: dict[str, Any]) -> str:
    lines = []
    if report.get("backbone"):
        b = report["backbone"]
        lines.append(
            f"backbone                      {b['name']} ({b['model_type']}, "
            f"{b['parameters'] / 1e6:.1f}M parameters, reward read at {b['reads']})"
        )
    for m in report.get("ensemble") or []:  # rm.ensemble: each member, and it alone
        alone = [m.get(f"accuracy/val_{g}") for g in ("train_labelers", "heldout_labelers")]
        alone_text = " / ".join(f"{a:.1%}" for a in alone if a is not None) or "not measured"
        lines.append(
            f"{'ensemble member':<30}{Path(m['run']).name}: scale {m['scale']:.3f}, "
            f"alone {alone_text}"
        )
    if report.get("likelihood_weight"):
        w = report["likelihood_weight"]
        lines.append(
            f"likelihood term               w = {w['learned']:.3f} (from {w['start']:g}): the "
            "reward adds w * mean log p(response) (rm.likelihood_weight; beyond the paper)"
        )
    sources = report.get("samples_of") or {}
    if len(sources) > 1:  # iterated collection, or hand rankings: whose samples it learned from
        lines.append(
            "comparisons of                "
            + "; ".join(f"{name}: {n:,}" for name, n in sources.items())
        )
    later = (report.get("skipped_comparisons") or {}).get("later round")
    if later:
        lines.append(
            f"{'not trained on':<30}{later:,} comparisons of later rounds (rm.samples=chain)"
        )
    for name in ("train", "val_data", "val_train_labelers", "val_heldout_labelers", "val_human"):
        if report.get(f"accuracy/{name}") is None:
            continue
        line = f"accuracy {name:<22}{report[f'accuracy/{name}']:>8.1%}"
        if report.get(f"accuracy_ci/{name}"):
            lo, hi = report[f"accuracy_ci/{name}"]
            line += f" [{lo:.1%}, {hi:.1%}]"
        line += f" on {report[f'pairs/{name}']:,} pairs"
        if report.get(f"prompts/{name}"):
            line += f" of {report[f'prompts/{name}']:,} prompts"
        if report.get(f"gold_ceiling/{name}") is not None:
            line += f" (gold labeler: {report[f'gold_ceiling/{name}']:.1%})"
        lines.append(line)
    lines.append(
        f"demonstration mean after bias {report['demo_mean_after_bias']:+.2e} (bias {report['bias']:+.3f})"
    )
    if report.get("accuracy_by_family"):  # held-out comparisons, both labeler groups
        by = sorted(report["accuracy_by_family"].items(), key=lambda kv: -kv[1])
        lines.append("held-out accuracy by family    " + ", ".join(f"{f} {a:.0%}" for f, a in by))
    every = report.get("answer_checking", {}).get("all")  # one right and one wrong answer
    if every:
        by = sorted(
            ((f, v["rm"]) for f, v in report["answer_checking"].items() if f != "all"),
            key=lambda kv: -kv[1],
        )
        lines.append(
            f"right vs wrong answer          RM {every['rm']:.0%} (labelers {every['labelers']:.0%})"
            f" on {every['pairs']:,} pairs: " + ", ".join(f"{f} {a:.0%}" for f, a in by)
        )
    line = f"wall time                     {report['wall_time_s']:.0f} s"
    if report.get("seconds_per_step"):
        line += f" ({report['steps']} steps, {report['seconds_per_step']:.2f} s a step)"
    lines.append(line)
    return "\n".join(lines)
