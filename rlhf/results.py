"""The results table (`rlhf eval --runs DIR...`): every policy of the given runs on the world's
test prompts, with the paper's section-4 metrics (rlhf.metrics), the alignment tax and, for
reward-model runs, RM accuracy. Every figure has its 95% bootstrap interval and its n.

    policy runs   pretrain (the base model), sft, ppo, dpo, grpo: greedy answers to every test prompt,
                  judged by the gold labeler; win rate against the SFT policy's answers;
                  held-out pretraining perplexity (blocks resampled) and fact-cloze accuracy
    rm runs       pairwise accuracy on the held-out comparisons, by labeler group

`evaluate_runs` returns {label: {metric: {"mean", "lo", "hi", "n"}}}, each PPO run's
over-optimisation probe and where each win rate comes from (rlhf.breakdown); `results_table`
turns the figures into one DataFrame (a row per run); `write_results` saves results.json,
results.md and overoptimisation.html (RM score and gold quality of a fixed batch against KL,
over training: Gao et al. 2022's picture).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from rlhf.breakdown import breakdown_table, family_table, win_breakdown
from rlhf.config import LabConfig
from rlhf.errors import RunError
from rlhf.evaluate import (
    block_nll,
    clustered_ci,
    fact_cloze_hits,
    judged_answers,
    ratio_ci,
    win_outcomes,
    with_ci,
)
from rlhf.metrics import METRICS, policy_metrics
from rlhf.models import load_policy
from rlhf.runs import (
    Run,
    find_done,
    list_runs,
    named_run,
    read_eval,
    recorded_run,
    saved_config,
    write_json,
)

POLICY_STAGES = {"pretrain": "base", "sft": "SFT", "ppo": "PPO", "dpo": "DPO", "grpo": "GRPO"}
TAX = ("perplexity", "fact_cloze")
RM_METRICS = ("rm_accuracy/training_labelers", "rm_accuracy/heldout_labelers")
COLUMNS = (*METRICS, *TAX, *RM_METRICS)  # the results table's column order


def label_of(run: Run) -> str:
    """base, SFT, PPO, PPO-ptx, DPO, GRPO or RM: what the run's model is, for the table's rows;
    an SFT or PPO run that trained LoRA adapters (lora_r > 0) gets "+LoRA" (PPO-ptx+LoRA), a
    PPO run against an oracle instead of the RM (ppo.reward=gold or labelers) "+gold" or
    "+labelers"."""
    stage, raw = run.stage, run.raw_config()
    if stage == "rm":
        return "RM"
    if stage == "ppo":
        label = "PPO-ptx" if raw["ppo"].get("ptx_coef", 0) > 0 else "PPO"
    elif stage in POLICY_STAGES:
        label = POLICY_STAGES[stage]
    else:
        raise RunError(f"{run.dir}: a {stage} run has no policy or reward model to evaluate")
    if stage in ("sft", "ppo") and raw[stage].get("lora_r", 0):
        label += "+LoRA"
    if stage == "ppo" and raw["ppo"].get("reward", "rm") != "rm":  # an oracle reward
        label += "+" + raw["ppo"]["reward"]
    return label


def round_labels(workspace: str | os.PathLike) -> dict[Path, str]:
    """Labels of the runs of earlier rounds of iterated collection (paper section 3;
    `pipeline.rounds`), as `rlhf pipeline` names them in the results table: a PPO run whose
    samples a later RM ranked (that RM's compare.policy_run) is "PPO round r", and the RM it
    trained against "RM round r", r being how many rounds came before it (0 for an RM of the
    SFT model's comparisons alone). Keyed by resolved run directory; the runs of the last
    round, and every run of a workspace without rounds, keep `label_of`'s label."""
    ws = Path(workspace)

    def rm_of(ppo: Run) -> Path | None:  # the RM a PPO run trained against
        try:
            return recorded_run(read_eval(ppo)["rm_run"], ws).resolve()
        except (RunError, KeyError, TypeError):
            return None

    def ranked_ppo(rm_dir: Path) -> Run | None:  # the PPO policy whose samples the RM learned
        try:
            named = Run.open(rm_dir).raw_config().get("compare", {}).get("policy_run")
            policy = Run.open(named_run(named, ws)) if named else None
        except RunError:
            return None
        return policy if policy is not None and policy.stage == "ppo" else None

    labels: dict[Path, str] = {}
    for rm in list_runs(ws, "rm"):
        ppo = ranked_ppo(rm.dir)
        if ppo is None:
            continue
        its_rm = rm_of(ppo)
        r, rm_dir, seen = 0, its_rm, set()
        while rm_dir is not None and rm_dir not in seen:  # back through the earlier rounds
            seen.add(rm_dir)
            earlier = ranked_ppo(rm_dir)
            if earlier is None:
                break
            r, rm_dir = r + 1, rm_of(earlier)
        labels[ppo.dir.resolve()] = f"{label_of(ppo)} round {r}"
        if its_rm is not None:
            labels[its_rm] = f"RM round {r}"
    return labels


def run_kinds(workspace: str | os.PathLike) -> Callable[[Run], str]:
    """What each run of the workspace is, for a list of its runs: `label_of`, or
    `round_labels`' "PPO round 0" for a run of an earlier round of iterated collection."""
    rounds = round_labels(workspace)
    return lambda run: rounds.get(run.dir.resolve()) or label_of(run)


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
    return judged_answers(model, tokenizer, world, prompts, cfg.ppo.max_new_tokens)


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
    cfg: LabConfig,
    run_dirs: list[str | os.PathLike],
    progress: bool = True,
    labels: list[str] | None = None,
) -> dict[str, Any]:
    """{"labels": [...], "rows": {label: {metric: ci}}, "runs": {label: run dir}, ...}: every
    run in the order given (see the module doc), labelled by `labels` (one per run; the
    pipeline names its own runs) or else by `run_kinds`.

    The win-rate baseline is the SFT run among `run_dirs`, else the newest finished SFT run of
    this config; without one there is no win rate. Also kept: each policy's gold quality per
    test prompt ("per_prompt"), where each trained policy's win rate comes from
    ("win_breakdown", `rlhf.breakdown.win_breakdown`), each run's training wall time
    ("wall_time_s") and, when a PPO-ptx row and others are there, how each compares with it
    ("versus", `versus_reference`)."""
    from rlhf.world import build_world

    runs = [Run.open(d) for d in run_dirs]
    if not runs:
        raise RunError("rlhf eval: give at least one run directory (--runs DIR...)")
    if labels is not None and len(labels) != len(runs):
        raise RunError(f"evaluate_runs: {len(labels)} labels for {len(runs)} runs")
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
    breakdowns: dict[str, Any] = {}  # label -> rlhf.breakdown.win_breakdown against SFT

    rows: dict[str, dict[str, Any]] = {}
    where: dict[str, str] = {}
    wall: dict[str, float | None] = {}
    quality: dict[str, list[float]] = {}
    curves: dict[str, list[dict[str, float]]] = {}
    # Without labels, each run's workspace names it (a run of an earlier round of collection:
    # "PPO round 0", as the pipeline does); read once per workspace, not once per run.
    workspaces = {r.dir.parent.parent for r in runs} if labels is None else set()
    kinds = {ws: run_kinds(ws) for ws in workspaces}
    for i, run in enumerate(tqdm(runs, desc="eval", disable=not progress)):
        label = labels[i] if labels is not None else kinds[run.dir.parent.parent](run)
        if label in rows:  # two runs of a kind: tell them apart by directory
            label = f"{label} ({run.dir.name})"
        where[label] = str(run.dir)
        wall[label] = run.status.get("wall_time_s")
        if run.stage == "rm":
            rows[label] = _rm_accuracy(cfg, world, run, n, seed)
            continue
        model, tok = load_policy(run.model_dir)
        texts, judged = _answers(model, tok, world, prompts, cfg)
        quality[label] = [j.quality for j in judged]
        if baseline is not None and run.stage not in ("pretrain", "sft"):
            breakdowns[label] = win_breakdown(prompts, judged, baseline)
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
    out = {
        "labels": list(rows),
        "rows": rows,
        "runs": where,
        "wall_time_s": wall,
        "n_test_prompts": len(prompts),
        "overoptimisation": curves,
        "win_breakdown": breakdowns,
        "per_prompt": {
            "prompt_id": [p.id for p in prompts],
            "baseline": [j.quality for j in baseline] if baseline is not None else None,
            "quality": quality,
        },
    }
    compared = [k for k in quality if k not in ("base", "SFT", REFERENCE)]
    if baseline is not None and REFERENCE in quality and compared:
        frame = pd.DataFrame({"baseline": out["per_prompt"]["baseline"], **quality})
        out["versus"] = {
            "reference": REFERENCE,
            "rows": versus_reference(frame[["baseline", REFERENCE, *compared]], REFERENCE, n, seed),
        }
    return out


# ----------------------------------------------------------------------------- vs PPO-ptx

REFERENCE = "PPO-ptx"  # the paper's final policy: what the runs beyond the paper are held to


def versus_reference(
    frame: pd.DataFrame, reference: str = REFERENCE, n_resamples: int = 1000, seed: int = 0
) -> dict[str, dict[str, dict[str, float]]]:
    """How each policy compares with `reference` on the same test prompts. `frame`: one row per
    prompt, a column "baseline" (the SFT policy's gold quality) and one column per policy (its
    gold quality). For every policy column but the reference:

        win_rate_diff   its win rate against SFT minus the reference's: the mean of the
                        per-prompt difference of outcomes (1 win, 0.5 tie, 0 loss), with a
                        paired bootstrap interval (prompts resampled, both policies together)
        head_to_head    its win rate against the reference's answers itself (ties half)

    each {"mean", "lo", "hi", "n"} (rlhf.evaluate.with_ci)."""
    if "baseline" not in frame or reference not in frame:
        raise ValueError(f"versus_reference: the frame needs columns 'baseline' and {reference!r}")
    base = frame["baseline"].tolist()
    ref = win_outcomes(frame[reference].tolist(), base)
    out = {}
    for label in frame.columns:
        if label in ("baseline", reference):
            continue
        mine = frame[label].tolist()
        diff = [a - b for a, b in zip(win_outcomes(mine, base), ref, strict=True)]
        out[label] = {
            "win_rate_diff": with_ci(diff, n_resamples, seed),
            "head_to_head": with_ci(
                win_outcomes(mine, frame[reference].tolist()), n_resamples, seed
            ),
        }
    return out


def _pct(ci: dict[str, float] | None, interval: bool = True) -> str:
    if not ci or not ci.get("n"):
        return ""
    if not interval or math.isnan(ci["lo"]):
        return f"{ci['mean']:.1%}"
    return f"{100 * ci['mean']:.1f}% [{100 * ci['lo']:.1f}, {100 * ci['hi']:.1f}]"


def _points(ci: dict[str, float]) -> str:
    """A difference of shares in percentage points: "-0.6 [-3.5, +2.3] points"."""
    if math.isnan(ci["lo"]):
        return f"{100 * ci['mean']:+.1f} points"
    return f"{100 * ci['mean']:+.1f} [{100 * ci['lo']:+.1f}, {100 * ci['hi']:+.1f}] points"


def _num(ci: dict[str, float] | None, digits: int = 2) -> str:
    return f"{ci['mean']:.{digits}f}" if ci and ci.get("n") else ""


def _seconds(s: float | None) -> str:
    return f"{s:.0f} s" if s is not None else ""


def _compared(results: dict[str, Any]) -> list[str]:
    """The labels compared with the reference, in table order (results.json sorts its keys)."""
    rows = (results.get("versus") or {}).get("rows") or {}
    return [label for label in results["labels"] if label in rows]


def versus_table(results: dict[str, Any]) -> pd.DataFrame:
    """The reference (PPO-ptx) and every policy compared with it, one row each: win rate vs SFT,
    Likert, fails to follow, held-out perplexity, fact cloze, training wall time, and the two
    comparisons of `versus_reference`. Empty without a comparison in `results`."""
    versus = results.get("versus") or {}
    if not versus.get("rows"):
        return pd.DataFrame()
    ref = versus["reference"]
    rows, wall = results["rows"], results.get("wall_time_s") or {}
    data = {}
    for label in [ref, *_compared(results)]:
        r, v = rows[label], versus["rows"].get(label)
        data[label] = {
            "win rate vs SFT": _pct(r.get("win_rate")),
            "Likert": _num(r.get("likert")),
            "fails to follow": _pct(r.get("fails_to_follow"), interval=False),
            "held-out ppl": _num(r.get("perplexity")),
            "fact cloze": _pct(r.get("fact_cloze"), interval=False),
            "wall time": _seconds(wall.get(label)),
            f"win rate minus {ref}'s": _points(v["win_rate_diff"]) if v else "",
            f"head to head vs {ref}": _pct(v["head_to_head"]) if v else "",
        }
    return pd.DataFrame.from_dict(data, orient="index")


def versus_lines(results: dict[str, Any]) -> list[str]:
    """One plain sentence per policy compared with the reference, from the numbers: the
    difference in win rate (and whether its interval excludes 0), head to head, the alignment
    tax (held-out perplexity: more or less when the two intervals do not overlap) and the runs'
    wall times (training and the run's own report, as status.json records them)."""
    versus = results.get("versus") or {}
    ref = versus.get("reference", REFERENCE)
    rows, wall = results["rows"], results.get("wall_time_s") or {}
    lines = []
    for label in _compared(results):
        v = versus["rows"][label]
        d, mine, theirs = v["win_rate_diff"], rows[label], rows[ref]
        if d["lo"] > 0:
            verdict = f"better than {ref}"
        elif d["hi"] < 0:
            verdict = f"worse than {ref}"
        else:
            verdict = "no clear difference (the interval spans 0)"
        text = (
            f"{label}: win rate vs SFT {_pct(mine['win_rate'], False)} ({ref} "
            f"{_pct(theirs['win_rate'], False)}), a difference of {_points(d)} (paired over "
            f"{d['n']} test prompts): {verdict}. Head to head it wins "
            f"{_pct(v['head_to_head'])} against {ref}'s answers (ties half)."
        )
        p, q = mine.get("perplexity"), theirs.get("perplexity")
        if p and q and p.get("n") and q.get("n"):
            if p["lo"] > q["hi"]:
                tax = "more alignment tax"
            elif p["hi"] < q["lo"]:
                tax = "less alignment tax"
            else:
                tax = "about the same alignment tax (the intervals overlap)"
            text += f" Held-out perplexity {p['mean']:.2f} ({ref} {q['mean']:.2f}): {tax}."
        if mine.get("fact_cloze") and theirs.get("fact_cloze"):
            text += (
                f" Fact cloze {_pct(mine['fact_cloze'], False)} "
                f"({ref} {_pct(theirs['fact_cloze'], False)})."
            )
        if wall.get(label) is not None and wall.get(ref) is not None:
            text += f" Wall time {_seconds(wall[label])} ({ref} {_seconds(wall[ref])})."
        lines.append(text)
    return lines


def versus_markdown(results: dict[str, Any]) -> str:
    """The "Compared with PPO-ptx" section of results.md ("" without a comparison)."""
    table = versus_table(results)
    if table.empty:
        return ""
    ref = results["versus"]["reference"]
    return "\n".join(
        [
            f"## Compared with {ref}",
            "",
            markdown(table),
            "",
            *(f"- {line}" for line in versus_lines(results)),
        ]
    )


def win_breakdowns(results: dict[str, Any]) -> dict[str, Any]:
    """{label: rlhf.breakdown.win_breakdown} in the table's row order (results.json keeps keys
    sorted); {} for results written before the breakdown existed."""
    b = results.get("win_breakdown") or {}
    return {label: b[label] for label in results.get("labels") or list(b) if label in b}


def breakdown_markdown(results: dict[str, Any]) -> str:
    """The "Where the win rate comes from" section of results.md ("" without a breakdown)."""
    b = win_breakdowns(results)
    if not b:
        return ""
    return "\n".join(
        [
            "## Where the win rate comes from",
            "",
            "Each test prompt's outcome against SFT's answer, split by whether the gold labeler's",
            "verdict on correctness changed (rlhf/breakdown.py).",
            "",
            markdown(breakdown_table(b)),
            "",
            "Per task family (answers made right / made wrong, win rate):",
            "",
            markdown(family_table(b)).replace("| run |", "| family |", 1),
        ]
    )


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
    # The metrics in the paper's order (helpful, honest, harmless, tax, RM); any others after.
    # Not the rows' own key order: results.json sorts keys, and the table read back from it
    # would start with fact_cloze.
    present = {k for label in labels for k in rows[label]}
    columns = [k for k in COLUMNS if k in present] + sorted(present - set(COLUMNS))
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
    if versus := versus_markdown(results):
        text += "\n" + versus + "\n"
    if where := breakdown_markdown(results):
        text += "\n" + where + "\n"
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


__all__ = [
    "breakdown_markdown",
    "evaluate_runs",
    "markdown",
    "results_table",
    "versus_lines",
    "versus_markdown",
    "versus_reference",
    "versus_table",
    "win_breakdowns",
    "write_results",
]
