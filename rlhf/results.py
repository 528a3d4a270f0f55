"""The results table (`rlhf eval --runs DIR...`): every policy of the given runs on the world's
test prompts, with the paper's section-4 metrics (rlhf.metrics), the alignment tax and, for
reward-model runs, RM accuracy. Every figure has its 95% bootstrap interval and its n.

    policy runs   pretrain (the base model), sft, ppo, dpo, grpo: greedy answers to every test prompt,
                  judged by the gold labeler; win rate against the SFT policy's answers;
                  held-out pretraining perplexity (blocks resampled) and fact-cloze accuracy
    rm runs       pairwise accuracy on the held-out comparisons, by labeler group

`evaluate_runs` returns {label: {metric: {"mean", "lo", "hi", "n"}}} and each PPO run's
over-optimisation probe; `results_table` turns the figures into one DataFrame (a row per
run); `write_results` saves results.json, results.md and overoptimisation.html (RM score and
gold quality of a fixed batch against KL, over training: Gao et al. 2022's picture).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from rlhf.config import LabConfig
from rlhf.errors import RunError
from rlhf.evaluate import block_nll, clustered_ci, fact_cloze_hits, ratio_ci, with_ci
from rlhf.generation import generate
from rlhf.metrics import policy_metrics
from rlhf.models import load_policy
from rlhf.runs import Run, find_done, saved_config, write_json

POLICY_STAGES = {"pretrain": "base", "sft": "SFT", "ppo": "PPO", "dpo": "DPO", "grpo": "GRPO"}
TAX = ("perplexity", "fact_cloze")
RM_METRICS = ("rm_accuracy/training_labelers", "rm_accuracy/heldout_labelers")


def label_of(run: Run) -> str:
    """base, SFT, PPO, PPO-ptx, DPO, GRPO or RM: what the run's model is, for the table's rows."""
    stage = run.stage
    if stage == "ppo":
        return "PPO-ptx" if run.raw_config()["ppo"].get("ptx_coef", 0) > 0 else "PPO"
    if stage == "rm":
        return "RM"
    if stage not in POLICY_STAGES:
        raise RunError(f"{run.dir}: a {stage} run has no policy or reward model to evaluate")
    return POLICY_STAGES[stage]


def perplexity_ci(
    model: Any, tokenizer: Any, documents: list[str], block_size: int, n_resamples: int, seed: int
) -> dict[str, float]:
    """Held-out perplexity exp(NLL per token) with an interval from resampling the blocks (the
    ratio of summed NLL to summed tokens in each resample); n is the number of blocks."""
    nll, count = block_nll(model, tokenizer, documents, block_size)
    f64 = torch.float64
    mean, lo, hi = ratio_ci(
        torch.tensor(nll, dtype=f64), torch.tensor(count, dtype=f64), n_resamples, seed
    )
    return {"mean": math.exp(mean), "lo": math.exp(lo), "hi": math.exp(hi), "n": len(nll)}


def _answers(model: Any, tokenizer: Any, world: Any, prompts: list[Any], cfg: LabConfig):
    g = generate(model, tokenizer, [p.text for p in prompts], cfg.ppo.max_new_tokens, greedy=True)
    return g.texts, [world.gold.score(p, t) for p, t in zip(prompts, g.texts, strict=True)]


def _rm_accuracy(cfg: LabConfig, world: Any, run: Run, n: int, seed: int) -> dict[str, Any]:
    from rlhf.reward import load_reward_model, pair_frame, split_comparisons, training_comparisons

    rm = load_reward_model(run.model_dir)
    heldout = {lab.id for lab in world.heldout_labelers}
    data = split_comparisons(training_comparisons(cfg)[0], heldout)
    pairs = pair_frame(rm, data["val_train_labelers"] + data["val_heldout_labelers"], heldout)
    out = {}
    for name, group in zip(RM_METRICS, ("training", "held-out"), strict=True):
        part = pairs[pairs["group"] == group] if len(pairs) else pairs
        # Pairs of one prompt share its samples (and, on validation prompts, every labeler
        # ranks them): the interval resamples prompts, not pairs.
        out[name] = clustered_ci(
            part["correct"].tolist() if len(part) else [],
            part["prompt_id"].tolist() if len(part) else [],
            n,
            seed,
        )
    return out


def evaluate_runs(
    cfg: LabConfig, run_dirs: list[str | os.PathLike], progress: bool = True
) -> dict[str, Any]:
    """{"labels": [...], "rows": {label: {metric: ci}}, "runs": {label: run dir}}: every run
    in the order given (see the module doc).

    The win-rate baseline is the SFT run among `run_dirs`, else the newest finished SFT run of
    this config; without one there is no win rate."""
    from rlhf.world import build_world

    runs = [Run.open(d) for d in run_dirs]
    if not runs:
        raise RunError("rlhf eval: give at least one run directory (--runs DIR...)")
    want = saved_config(cfg, "eval")["world"]
    for r in runs:
        if not r.done:
            raise RunError(f"{r.dir}: the run is not finished ({r.status.get('status')})")
        if r.raw_config().get("world") != want:
            raise RunError(
                f"{r.dir}: made on another world than recipe '{cfg.recipe}' builds; "
                f"pass the recipe it was made with (--recipe)"
            )
    world = build_world(cfg, progress=progress)
    prompts = world.prompts("test")
    cloze = world.cloze_items()
    n, seed = cfg.ppo.bootstrap, cfg.seed
    sft = next((r for r in runs if r.stage == "sft"), None) or find_done(
        cfg, "sft", ("world", "pretrain", "sft")
    )
    baseline = None
    if sft is not None:
        model, tok = load_policy(sft.model_dir)
        baseline = _answers(model, tok, world, prompts, cfg)[1]

    rows: dict[str, dict[str, Any]] = {}
    where: dict[str, str] = {}
    curves: dict[str, list[dict[str, float]]] = {}
    for run in tqdm(runs, desc="eval", disable=not progress):
        label = label_of(run)
        if label in rows:  # two runs of a kind: tell them apart by directory
            label = f"{label} ({run.dir.name})"
        where[label] = str(run.dir)
        if run.stage == "rm":
            rows[label] = _rm_accuracy(cfg, world, run, n, seed)
            continue
        model, tok = load_policy(run.model_dir)
        texts, judged = _answers(model, tok, world, prompts, cfg)
        m = policy_metrics(prompts, texts, judged, baseline, n, seed)
        block = cfg.pretrain.block_size
        m["perplexity"] = perplexity_ci(model, tok, world.heldout_documents(), block, n, seed)
        hits = [float(h) for h in fact_cloze_hits(model, tok, cloze)]
        m["fact_cloze"] = with_ci(hits, n, seed)
        rows[label] = m
        if run.stage == "ppo":  # its fixed-batch probe over training: over-optimisation
            probe = [
                {k: r[k] for k in ("step", "overopt/scores", "overopt/gold", "overopt/kl")}
                for r in run.metrics()
                if "overopt/kl" in r
            ]
            if probe:
                curves[label] = probe
    return {
        "labels": list(rows),
        "rows": rows,
        "runs": where,
        "n_test_prompts": len(prompts),
        "overoptimisation": curves,
    }


def _cell(ci: dict[str, float] | None) -> str:
    if not ci or not ci.get("n"):
        return ""
    if math.isnan(ci["lo"]):
        return f"{ci['mean']:.3f} (n={ci['n']})"
    return f"{ci['mean']:.3f} [{ci['lo']:.3f}, {ci['hi']:.3f}] (n={ci['n']})"


def results_table(results: dict[str, Any]) -> pd.DataFrame:
    """One row per run, one column per metric: "mean [lo, hi] (n=...)"; empty where a metric
    does not apply (RM columns for policies, policy columns for reward models)."""
    rows = results["rows"]
    labels = results.get("labels") or list(rows)  # results.json keeps keys sorted: use labels
    columns = list(dict.fromkeys(k for label in labels for k in rows[label]))
    data = {label: {c: _cell(rows[label].get(c)) for c in columns} for label in labels}
    return pd.DataFrame.from_dict(data, orient="index", columns=columns)


def write_results(results: dict[str, Any], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """results.json (every figure as numbers) and results.md (the table) in out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "results.json", out / "results.md"
    write_json(js, results)
    runs = "\n".join(f"- {label}: `{results['runs'][label]}`" for label in results["labels"])
    text = markdown(results_table(results)) + "\n\nRuns:\n\n" + runs + "\n"
    tmp = md.with_name(f".{md.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, md)  # atomic, as write_json
    if results.get("overoptimisation"):
        from rlhf.viz import reward_vs_kl

        chart = reward_vs_kl(results["overoptimisation"], prefix="overopt")
        chart.properties(title="RM score and gold quality vs KL (fixed probe batch)").save(
            str(out / "overoptimisation.html")
        )
    return js, md


def markdown(table: pd.DataFrame) -> str:
    """A GitHub-style Markdown table of a results DataFrame (its index as the first column)."""
    head = ["run", *table.columns]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for label, row in table.iterrows():
        lines.append("| " + " | ".join([str(label), *map(str, row.tolist())]) + " |")
    return "\n".join(lines)


__all__ = ["evaluate_runs", "markdown", "results_table", "write_results"]
