"""The PPO run's own measurements (eval.json): how the policy compares with the SFT policy it
started from, on the world's test prompts, judged by the gold labeler (paper 4.1-4.2 in small).

    win_rate        gold win rate against SFT, ties half, 95% bootstrap interval (paper Fig. 1)
    win_rate_ceiling the win rate the world's best correct answers get against SFT: about the
                    most a policy can reach on these prompts (where SFT is already right, a
                    right answer only ties)
    win_breakdown   where the win rate comes from: answers made right, made wrong, and other
                    wins, ties and losses, overall and per family (rlhf.breakdown)
    rm_vs_gold      the gold losses the RM scored above SFT's answer (what PPO was paid for
                    that gold does not want: over-optimisation), with examples
    likert          gold Likert mean of policy and SFT
    rm_score        the RM's mean score of policy and SFT responses (what PPO optimised)
    perplexity      held-out pretraining perplexity of policy and SFT (the alignment tax, 4.2)
    training        first vs last logged RM score, gold quality and KL of the rollouts
    value_init      what the value model started from: "rm" or "policy" (rlhf.ppo.load_models)
"""

from __future__ import annotations

import math
import random
from typing import Any

from rlhf.breakdown import rm_vs_gold, win_breakdown
from rlhf.config import LabConfig
from rlhf.evaluate import heldout_loss, win_outcomes, with_ci
from rlhf.generation import generate
from rlhf.pretrain import pick_eval_prompts
from rlhf.runs import Run


def reward_name(kind: str) -> str:
    """What paid a PPO run, as its summary and the dashboard name it. `kind`: its eval.json's
    `reward`, "rm" or an oracle arm's "gold" / "labelers" (ppo.reward, rlhf.oracle)."""
    return "RM" if kind == "rm" else f"{kind} reward"


def pays_for_gold_losses(kind: str) -> bool:
    """Whether a run's reward (`kind`, as for reward_name) can score a gold loss above SFT's
    answer: every reward but the gold labeler itself, whose `rm_vs_gold` counts are always 0."""
    return kind != "gold"


VALUE_INIT = {  # Models.value_init -> what the value model started from
    "rm": "the reward model (paper 3.5; it shares the policy's tokenizer)",
    "policy": "the SFT policy's trunk with a new scalar head (the reward model has its own "
    "tokenizer and scores the decoded text)",
}


def final_report(
    cfg: LabConfig, world: Any, policy: Any, m: Any, sft_run: Run, rm_run: Run, run: Run
) -> dict[str, Any]:
    p = cfg.ppo
    prompts = pick_eval_prompts(world, p.eval_prompts)
    texts = [q.text for q in prompts]
    out: dict[str, Any] = {"sft_run": str(sft_run.dir), "rm_run": str(rm_run.dir)}
    out["value_init"] = m.value_init
    out["reward"] = p.reward  # rm, or gold / labelers: an oracle arm (rm_score rows are its then)
    responses, quality, likert, scores, judgements = {}, {}, {}, {}, {}
    for name, model in (("policy", policy), ("sft", m.ref)):
        g = generate(model, m.tokenizer, texts, max_new_tokens=p.max_new_tokens, greedy=True)
        responses[name] = g.texts
        judged = [world.gold.score(q, t) for q, t in zip(prompts, g.texts, strict=True)]
        judgements[name] = judged
        quality[name] = [j.quality for j in judged]
        likert[name] = [float(j.likert) for j in judged]
        scores[name] = m.reward.score(texts, g.texts).tolist()
        out[f"eos_rate/{name}"] = float(g.ended.float().mean())
        out[f"fails_to_follow/{name}"] = sum(j.flags["fails_to_follow"] for j in judged) / len(
            judged
        )
    wins = win_outcomes(quality["policy"], quality["sft"])
    out["win_rate_vs_sft"] = with_ci(wins, p.bootstrap, cfg.seed)
    where = win_breakdown(prompts, judgements["policy"], judgements["sft"])
    out["win_breakdown"] = where
    out["win_rate_by_family"] = {f: c["win_rate"] for f, c in where.items() if f != "all"}
    out["rm_vs_gold"] = rm_vs_gold(
        prompts,
        responses["policy"],
        responses["sft"],
        judgements["policy"],
        judgements["sft"],
        scores["policy"],
        scores["sft"],
    )
    # The ceiling: the best of 8 of the world's correct answers per prompt (their wording
    # varies, and gold gives tidy, full-sentence answers a little more) against SFT's.
    rng = random.Random(cfg.seed)
    best = [
        max(world.gold.score(q, world.respond(q, "correct", rng)).quality for _ in range(8))
        for q in prompts
    ]
    out["win_rate_ceiling"] = sum(win_outcomes(best, quality["sft"])) / len(prompts)
    for name in ("policy", "sft"):
        out[f"likert/{name}"] = with_ci(likert[name], p.bootstrap, cfg.seed)
        out[f"rm_score/{name}"] = with_ci(scores[name], p.bootstrap, cfg.seed)
        loss = heldout_loss(
            policy if name == "policy" else m.ref,
            m.tokenizer,
            world.heldout_documents(),
            cfg.pretrain.block_size,
        )
        out[f"perplexity/{name}"] = math.exp(loss)
    rows = run.metrics()
    if rows:
        first, last = rows[0], rows[-1]
        out["training"] = {
            k: {"first": first.get(k), "last": last.get(k)}
            for k in ("objective/scores", "objective/gold", "objective/kl", "response/eos_rate")
        }
        out["training"]["max_kl"] = max(r.get("objective/kl", float("nan")) for r in rows)
    out["samples"] = [
        {"prompt": q.text, "sft": responses["sft"][i], "policy": responses["policy"][i]}
        for i, q in enumerate(prompts[:16])
    ]
    out["n_prompts"] = len(prompts)
    return out


def _breakdown_lines(b: dict[str, Any] | None) -> list[str]:
    if not b:  # runs before rlhf.breakdown have none
        return []
    c = b["all"]
    return [
        f"  answers                {c['fixed']:.0f} made right, {c['broken']:.0f} made wrong; "
        f"otherwise {c['better']:.0f} better, {c['worse']:.0f} worse, {c['tie']:.0f} ties"
    ]


def _rm_vs_gold_lines(r: dict[str, Any] | None, kind: str) -> list[str]:
    """Over-optimisation in one or two lines: the gold losses the reward paid for, and the
    widest such margin. `kind`: the run's reward ("rm", "gold", "labelers")."""
    if not r or not r["losses"] or not pays_for_gold_losses(kind):
        return []  # (and runs before rm_vs_gold have none)
    name = reward_name(kind)
    lines = [
        f"  {name + ' over gold':<22} {r['losses_rm_prefers_policy']} of the {r['losses']} "
        f"losses: the {name} scored the policy's answer above SFT's"
    ]
    if r["examples"]:
        e = r["examples"][0]
        question = e["prompt"].split("\n")[0]
        lines.append(
            f"{'':25}e.g. {question!r}: {e['policy'].strip()!r} ({e['rm_policy']:+.2f}) "
            f"over {e['sft'].strip()!r} ({e['rm_sft']:+.2f})"
        )
    return lines


def summary(report: dict[str, Any]) -> str:
    """The figures issue 4 asks for, a line each (printed by `rlhf ppo`)."""

    def ci(d: dict[str, float], pct: bool = False) -> str:
        f = (lambda x: f"{x:.1%}") if pct else (lambda x: f"{x:.2f}")
        return f"{f(d['mean'])} [{f(d['lo'])}, {f(d['hi'])}]"

    t = report.get("training", {})
    kind = report.get("reward", "rm")
    oracle = kind != "rm"  # ppo.reward=gold or labelers: an oracle arm
    reward = reward_name(kind) if oracle else "RM score"
    lines = [
        f"win rate vs SFT (gold)   {ci(report['win_rate_vs_sft'], pct=True)} on {report['n_prompts']} test prompts (issue 4's target on tiny: >= 60%)",
        f"  ceiling                {report['win_rate_ceiling']:.1%}: the world's best correct answers vs SFT",
        *_breakdown_lines(report.get("win_breakdown")),
        *_rm_vs_gold_lines(report.get("rm_vs_gold"), kind),
        f"gold Likert              policy {ci(report['likert/policy'])}   SFT {ci(report['likert/sft'])}",
        f"{reward:25}policy {ci(report['rm_score/policy'])}   SFT {ci(report['rm_score/sft'])}",
        f"held-out perplexity      policy {report['perplexity/policy']:.3f}   SFT {report['perplexity/sft']:.3f}",
    ]
    if t:
        s, k = t["objective/scores"], t["objective/kl"]
        lines.append(
            f"rollouts first -> last   {reward} {s['first']:.2f} -> {s['last']:.2f}, "
            f"KL {k['first']:.2f} -> {k['last']:.2f} (max {t['max_kl']:.2f})"
        )
    if oracle:
        who = {"gold": "the gold labeler", "labelers": "the training labelers' mean utility"}
        lines.append(
            f"reward                   {who.get(kind, kind)} "
            f"(ppo.reward={kind}): an oracle, not the RM"
        )
    if report.get("processes", 1) > 1:  # accelerate launch
        n, episodes = report["processes"], report["episodes_per_step"]
        lines.append(
            f"processes                {n} (accelerate launch), {episodes // n} episodes each: "
            f"{episodes} a step"
        )
    if report.get("value_init") in VALUE_INIT:  # runs before it have no entry
        lines.append(f"value model from         {VALUE_INIT[report['value_init']]}")
    lines.append(
        f"wall time                {report['wall_time_s']:.0f} s (training {report['train_wall_time_s']:.0f} s; "
        "issue 4's target on tiny: <= 240 s)"
    )
    return "\n".join(lines)
