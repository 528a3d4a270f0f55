"""Compare-page latency: from the request to four 64-token outputs with their scores.

One prompt, four policies of a workspace (base, SFT, PPO, PPO-ptx when there), one output each,
exactly `--new-tokens` tokens (EOS held back), every output with what the Compare page shows:
RM score, per-token KL to the SFT reference, gold Likert and flags. Models are already loaded,
as they are behind the dashboard's st.cache_resource after the first request; loading them once
is timed separately.

Two ways, interleaved, `--repeats` times each, median reported:
- ours: rlhf.outputs.side_by_side (our KV-cache sampler; one packed forward per policy and per
  reference for the KL; one packed RM call for all four outputs);
- naive: what a page written with transformers alone would do: model.generate per policy, then
  a padded forward of policy and reference per output for the KL, and one RM forward per output.

    .venv/bin/python benchmarks/dashboard_latency.py --workspace /tmp/demo8 [--threads 1]

Target (issue 6): ours under 1 second on this machine (2 cores) with the tiny recipe's models.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from rlhf.models import load_policy
from rlhf.outputs import Judge, policy_runs, reward_runs, side_by_side, world_of_run
from rlhf.reward import load_reward_model
from rlhf.runs import Run, read_eval


def pick_policies(workspace: Path, n: int) -> dict[str, Path]:
    """The newest policy of each kind (base, SFT, PPO, PPO-ptx), then others, up to n."""
    runs = policy_runs(workspace)
    first = {}
    for p in runs:
        first.setdefault(p.kind, p)
    chosen = list(first.values()) + [p for p in runs if p not in first.values()]
    return {p.label: p.model_dir for p in chosen[:n]}


def naive(models, ref, rm, world, prompt, new_tokens: int, seed: int) -> list[dict]:
    """The same outputs and scores through transformers' generate and plain forwards."""
    outs = []
    for label, (model, tok) in models.items():
        torch.manual_seed(seed)
        enc = tok([prompt.text], return_tensors="pt", add_special_tokens=False)
        ids = model.generate(
            **enc,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=tok.pad_token_id,
        )
        response = ids[0, enc["input_ids"].shape[1] :]
        with torch.no_grad():
            full = ids  # (1, P + R)
            logp = torch.log_softmax(model(full).logits[0, :-1].float(), -1)
            ref_logp = torch.log_softmax(ref(full).logits[0, :-1].float(), -1)
        start = enc["input_ids"].shape[1] - 1
        tokens = response[:, None]
        kl = (logp[start:].gather(-1, tokens) - ref_logp[start:].gather(-1, tokens)).squeeze(-1)
        text = tok.decode(response, skip_special_tokens=True)
        score = float(rm.score([prompt.text], [text], batch_size=1)[0])
        j = world.gold.score(prompt, text)
        outs.append({"policy": label, "kl": float(kl.sum()), "score": score, "likert": j.likert})
    return outs


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", required=True, help="a workspace with finished runs")
    ap.add_argument("--policies", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ws = Path(args.workspace)
    rms = reward_runs(ws)
    policies = pick_policies(ws, args.policies)
    if not rms or len(policies) < args.policies:
        print(
            f"error: {ws} needs a finished RM run and {args.policies} policies "
            f"(has {len(rms)} RM runs, {len(policies)} policies); run: make demo",
            file=sys.stderr,
        )
        raise SystemExit(2)

    t0 = time.perf_counter()
    models = {label: load_policy(d) for label, d in policies.items()}
    rm = load_reward_model(rms[0].model_dir)
    ref = load_policy(Run.open(read_eval(rms[0])["sft_run"]).model_dir)[0]
    world = world_of_run(rms[0].dir)
    load_s = time.perf_counter() - t0
    judge = Judge(ref, rm, world)
    prompt = world.prompts("test")[0]

    def ours(seed: int) -> list:
        return side_by_side(
            models,
            prompt.text,
            judge,
            prompt,
            n=1,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            seed=seed,
        )

    ours(0), naive(models, ref, rm, world, prompt, args.new_tokens, 0)  # warm-up
    times: dict[str, list[float]] = {"ours": [], "naive": []}
    lengths = []
    for r in range(args.repeats):
        for name in ("ours", "naive"):
            t = time.perf_counter()
            if name == "ours":
                out = ours(r + 1)
                lengths += [o.length for o in out]
            else:
                naive(models, ref, rm, world, prompt, args.new_tokens, r + 1)
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"{len(models)} policies x 1 output of {args.new_tokens} tokens (measured lengths "
        f"{min(lengths)}-{max(lengths)}), threads {args.threads}, repeats {args.repeats}, "
        f"load average {os.getloadavg()[0]:.1f}; models loaded once in {load_s:.2f} s"
    )
    print("| method | median s | min s | max s |")
    print("| --- | ---: | ---: | ---: |")
    for name, v in times.items():
        print(f"| {name} | {med[name]:.3f} | {min(v):.3f} | {max(v):.3f} |")
    ratio = med["naive"] / med["ours"]
    verdict = "met" if med["ours"] < 1.0 else "NOT met"
    print(f"ratio naive / ours: {ratio:.2f}x; target ours < 1 s: {verdict}")
    return {"median": med, "ratio": ratio, "load_s": load_s, "lengths": lengths}


if __name__ == "__main__":
    main()
