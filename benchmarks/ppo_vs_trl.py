"""PPO step time: ours (rlhf.ppo.ppo_step) vs TRL 1.12's experimental PPOTrainer.

The same policy and reference (the SFT model), value and reward models (the RM's weights, loaded
twice), the same train prompts and the same PPO shape, run three ways:

    ours            rlhf.ppo.ppo_step in the lab's venv, with the AdamW and accelerate.Accelerator
                    of `rlhf ppo` (rlhf.ppo._train), prompts drawn as _train draws them
    trl             trl.experimental.ppo.PPOTrainer of trl==1.12.0 (the last release that has
                    it) as shipped, in a venv of its own: <workspace>/cache/trl112-venv, made on
                    first use (--trl-venv elsewhere; --setup-trl makes it and exits) with the
                    lab's torch (the CPU wheel, through a constraints file), transformers,
                    accelerate and datasets versions (TRL 1.12 accepts them)
    trl-gc-frozen   the same, with gc.freeze() just before trainer.train()

TRL 1.12 calls gc.collect() twice in every PPO step (ppo_trainer.py: after the rollout's forwards
and after on_step_end), each a full collection over every object the process holds (torch,
transformers, datasets, trl: about 420,000 on the micro models, `gc_freeze_count` in the
results); gc.freeze() moves the objects alive before training out of the collector's reach. The
TRL driver counts gc.collect calls per step (the gc.collect column), so that claim is checked on
every run. Ours calls none.

Each (round, variant) is one fresh process, so every variant starts cold alike: model loading is
not timed, then `--warmup` PPO steps (default 1) are run and not timed, then `--steps` timed PPO
steps (default 6). Variants are interleaved (ours, trl, trl-gc-frozen, then again, `--rounds`
times, default 3) so a change of machine load hits all alike. A round's value is its mean
seconds per step; a variant's is the median over rounds. All run with `--threads` torch threads
(default 1; OMP_NUM_THREADS too). A PPO step is one rollout of batch_size prompts (sampled,
scored, forwarded by ref and value, KL-shaped rewards, GAE, whitened advantages) and its update:
ppo_epochs x batch_size / mini_batch_size optimizer steps. TRL's step is timed from one
on_step_end to the next, which includes its per-step metric logging (ours computes its metrics
too), and exactly two gc.collect() calls. The sampling column is the part of a step spent in
the rollout's sampling call (ours: rlhf.generation.generate; TRL: batch_generation, i.e.
model.generate); the rest is scoring, forwards, GAE and the update.

Settings. The benchmark sets ppo.batch_size=64, mini_batch_size=16, ppo_epochs=4,
max_new_tokens=48 (the tiny recipe's, from rlhf/config.py) and approxkl_stop=0 (TRL has no early
stop; ours would otherwise skip minibatches); `--set ppo.KEY=VALUE` changes any. TRL gets them as
per_device_train_batch_size=batch_size, gradient_accumulation_steps=1,
num_mini_batches=batch_size/mini_batch_size, num_ppo_epochs, response_length, temperature,
kl_coef (k1 estimator), cliprange, cliprange_value, vf_coef, gamma, lam, whiten_rewards,
stop_token="eos", missing_eos_penalty, local_rollout_forward_batch_size=batch_size, seed, on CPU
in float32 without gradient checkpointing, no evaluation, saving, reporting or printing. TRL's
rollout is per_device_train_batch_size x gradient_accumulation_steps episodes: 16 x 1 with 4
minibatches would be 16 episodes per step in minibatches of 4, and 16 x 4 would step the
optimizer once per 4 minibatches (accelerate's accumulation), so 64 x 1 is the match. TRL is
given our optimizer (two AdamW groups: ppo.lr for the policy, ppo.vf_lr for the value model,
betas (0.9, 0.95), eps 1e-5) at a constant lr instead of its one-lr linear decay. Both sides'
optimizer steps per PPO step are counted (the optimizer steps column).

Where the work differs (the same maths): ours packs the sequences of every forward (rollout
and update) end to end without padding, with position ids restarting per sequence so attention
stays within each (rlhf.ppo.pack), and applies the LM head only at the response positions
(logits_to_keep); TRL forwards padded (B, prompt + response_length) batches and computes logits
at every position.

Differences that remain (they change what is computed a little, the work per step hardly):
  - Reward input: ours decodes each response, re-tokenizes prompt + " " + text + EOS (left-cut
    to the RM's max_length) and adds the RM's demonstration bias (reward_bias.json); TRL scores
    the generated ids (prompt + response cut after its first EOS) at the last non-pad token,
    without the bias, so a response with no EOS is scored at its last token, not at an EOS.
  - Score position and masks: TRL adds the score one token past the EOS and keeps values and
    the value loss one token past the response (its padding_mask_p1); ours puts the score on
    the last response token and masks values and returns to the response. Both whiten the
    advantages over the response tokens, with the same Bessel-corrected variance.
  - Rollout logprobs: both take them from the sampling loop, TRL from generate()'s scores
    (logits / (T + 1e-7)), ours from rlhf.generation's (logits / T, with the entropies).
  - Generation: ours is rlhf.generation's KV-cache loop; TRL calls model.generate(top_k=0,
    top_p=1, output_scores=True), keeping every step's (B, V) scores.
  - Gradient clipping: ours clips each model's gradient norm to ppo.grad_clip (default 1.0) at
    every optimizer step; TRL 1.12's PPO loop never clips (max_grad_norm is unused).
  - Prompts: ours draws batch_size train prompts with replacement per step (rlhf.ppo's
    step_generator); TRL shuffles the same prompts and draws without replacement. Ours also
    left-truncates prompts to leave room for the response; TRL does not (no train prompt of the
    micro or tiny world is long enough for that to matter: at most 50 and 23 tokens).
  - Samples differ (different random streams), so response lengths differ a little: the decode
    steps and EOS rate columns show the work each side did per step.
  - Left out of ours, as they are not part of a PPO step: `rlhf ppo`'s gold scoring, metric and
    sample logging, checkpoints, and the pretraining-loss measurement of plain PPO (ptx_data is
    None: plain PPO without it).

    .venv/bin/python benchmarks/ppo_vs_trl.py --recipe tiny [--rounds 3] [--steps 6] [--out r.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

VARIANTS = ("ours", "trl", "trl-gc-frozen")
LABELS = {"ours": "ours", "trl": "TRL (shipped)", "trl-gc-frozen": "TRL (gc frozen)"}
TRL_VERSION = "1.12.0"
# The TRL venv gets the lab's versions of these (TRL 1.12 accepts transformers >= 4.56.2,
# accelerate >= 1.4, datasets >= 4.7, and runs on transformers 5.23).
SHARED = ("torch", "transformers", "accelerate", "datasets")
STAMP = "rlhf-trl-stamp.json"
REPO = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).resolve().with_name("_trl_ppo_driver.py")
# The tiny recipe's PPO shape (rlhf/config.py defaults) whatever the recipe; no early stop.
BENCH_SETTINGS = [
    "ppo.batch_size=64",
    "ppo.mini_batch_size=16",
    "ppo.ppo_epochs=4",
    "ppo.max_new_tokens=48",
    "ppo.approxkl_stop=0",
]


def schedule(rounds: int, variants: tuple[str, ...]) -> list[tuple[int, str]]:
    """(round, variant) in run order: every variant once per round, in the same order."""
    return [(r, v) for r in range(1, rounds + 1) for v in variants]


# ----------------------------------------------------------------------------- the TRL venv


def trl_requirements() -> dict[str, str]:
    """name -> version for the TRL venv: trl 1.12.0 and the lab's own shared packages. torch is
    pinned without its local label (2.13.0, not 2.13.0+cpu), as constraints.txt pins it for
    `make setup`: pip then finds the same CPU build the lab's venv got."""
    pins = {"trl": TRL_VERSION}
    for name in SHARED:
        pins[name] = metadata.version(name).split("+")[0]
    return pins


def trl_venv_ready(venv: Path) -> bool:
    """The venv exists and was finished for the current requirements."""
    stamp = venv / STAMP
    return (
        (venv / "bin" / "python").exists()
        and stamp.exists()
        and (json.loads(stamp.read_text()) == trl_requirements())
    )


def ensure_trl_venv(venv: Path, quiet: bool) -> Path:
    """Make (or reuse) the TRL venv; returns its python. Needs PyPI, and minutes, the first time."""
    python = venv / "bin" / "python"
    if trl_venv_ready(venv):
        return python
    if venv.exists():  # half-made (no stamp) or made for other versions: start again
        if not (venv / "pyvenv.cfg").exists():
            raise SystemExit(f"error: {venv} exists and is not a venv; pass another --trl-venv")
        shutil.rmtree(venv)
    want = trl_requirements()
    print(f"creating the TRL venv {venv} ({', '.join(f'{k}=={v}' for k, v in want.items())})")
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # A constraints file, as `make setup` uses constraints.txt: pip must never swap torch for a
    # CUDA build to satisfy trl or accelerate.
    constraints = venv / "rlhf-constraints.txt"
    lines = [ln for ln in (REPO / "constraints.txt").read_text().splitlines() if ln.strip()]
    lines += [
        f"{k}=={v}" for k, v in want.items() if not any(ln.startswith(f"{k}==") for ln in lines)
    ]
    constraints.write_text("\n".join(lines) + "\n")
    env = os.environ | {"PIP_CONSTRAINT": str(constraints)}
    cmd = [str(python), "-m", "pip", "install", *(["--quiet"] if quiet else [])]
    subprocess.run(cmd + [f"{k}=={v}" for k, v in want.items()], check=True, env=env)
    (venv / STAMP).write_text(json.dumps(want, indent=1) + "\n")  # last: the venv is complete
    return python


# ----------------------------------------------------------------------------- ours


def ours_worker(spec: dict) -> dict:
    """Runs in a child process of the lab's venv: load, warm up, time spec["steps"] PPO steps."""
    import torch

    torch.set_num_threads(spec["threads"])
    t_load = time.perf_counter()
    from accelerate import Accelerator

    from rlhf import ppo
    from rlhf.config import PPOConfig
    from rlhf.ppo import load_models, make_optimizer, ppo_step, step_generator

    p = PPOConfig(**spec["ppo"])
    seed = spec["seed"]
    torch.manual_seed(seed)
    m = load_models(Path(spec["policy_dir"]), Path(spec["rm_dir"]))
    accelerator = Accelerator(cpu=True)
    optimizer = make_optimizer(m, p)  # the optimizer rlhf.ppo._train builds
    counts = {"optimizer_steps": 0, "gc_collect": 0, "generate_s": 0.0}
    optimizer.register_step_post_hook(
        lambda *_: counts.update(optimizer_steps=1 + counts["optimizer_steps"])
    )
    real_collect = gc.collect

    def counting_collect(*a, **kw):  # counted as in the TRL driver; ours should make none
        counts["gc_collect"] += 1
        return real_collect(*a, **kw)

    gc.collect = counting_collect
    real_generate = ppo.generate  # ppo_step's sampling, timed as the TRL driver times TRL's

    def timed_generate(*a, **kw):
        t0 = time.perf_counter()
        out = real_generate(*a, **kw)
        counts["generate_s"] += time.perf_counter() - t0
        return out

    ppo.generate = timed_generate
    m.policy, m.value, optimizer = accelerator.prepare(m.policy, m.value, optimizer)
    prompts = spec["prompts"]
    load_s = time.perf_counter() - t_load

    steps = []
    for step in range(spec["warmup"] + spec["steps"]):
        mark = dict(counts)
        t0 = time.perf_counter()
        gen = step_generator(seed, step, 0)  # prompts drawn as rlhf.ppo._train draws them
        pick = torch.randint(len(prompts), (p.batch_size,), generator=gen).tolist()
        metrics, rollout = ppo_step(
            m,
            optimizer,
            accelerator,
            p,
            [prompts[i] for i in pick],
            p.kl_coef,
            seed=seed * 1_000_003 + step,
            ptx_data=None,
            shuffle_gen=step_generator(seed, step, 1),
            ptx_gen=step_generator(seed, step, 2),
        )
        dt = time.perf_counter() - t0
        steps.append(
            {
                "s": dt,
                "decode_steps": rollout["g"].response_ids.shape[1],
                "generate_s": counts["generate_s"] - mark["generate_s"],
                "eos_rate": metrics["response/eos_rate"],
                "optimizer_steps": counts["optimizer_steps"] - mark["optimizer_steps"],
                "gc_collect": counts["gc_collect"] - mark["gc_collect"],
                "score": metrics["objective/scores"],
                "kl": metrics["objective/kl"],
            }
        )
    versions = {k: metadata.version(k) for k in SHARED}
    return {
        "variant": "ours",
        "load_s": load_s,
        "warmup": spec["warmup"],
        "steps": steps,
        "threads": torch.get_num_threads(),
        "gc_freeze_count": gc.get_freeze_count(),
        "versions": versions,
        "python": sys.version.split()[0],
    }


# ----------------------------------------------------------------------------- running


def run_variant(variant: str, spec: dict, python: str | None, tmp: Path) -> dict:
    """One cold process of `variant`; returns the worker's JSON (per-step records)."""
    spec_path, out_path = tmp / f"spec-{variant}.json", tmp / f"out-{variant}.json"
    spec_path.write_text(json.dumps(spec | {"gc_freeze": variant == "trl-gc-frozen"}))
    out_path.unlink(missing_ok=True)
    if variant == "ours":
        cmd = [sys.executable, __file__, "--worker-ours", str(spec_path), str(out_path)]
    else:
        cmd = [str(python), str(DRIVER), str(spec_path), str(out_path)]
    threads = str(spec["threads"])
    env = os.environ | {
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "HF_HUB_OFFLINE": "1",  # local model dirs only; no Hub look-ups or telemetry
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)
    if proc.returncode != 0 or not out_path.exists():
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-25:])
        raise RuntimeError(f"{variant} worker failed (exit {proc.returncode}):\n{tail}")
    return json.loads(out_path.read_text())


def summarize(runs: list[dict], variants: tuple[str, ...]) -> dict:
    """Per variant: each round's mean s/step over its timed steps, their median, and the per-step
    means of what the steps did; plus the ratios TRL / ours."""
    out: dict = {}
    for v in variants:
        rows = [r for r in runs if r["variant"] == v]
        if not rows:
            continue
        timed = [r["steps"][r["warmup"] :] for r in rows]  # the warm-up is not timed
        flat = [s for t in timed for s in t]

        def mean(key: str, flat=flat) -> float:
            return statistics.fmean(s[key] for s in flat)

        per_round = [statistics.fmean(s["s"] for s in t) for t in timed]
        out[v] = {
            "s_per_step": statistics.median(per_round),
            "per_round": per_round,
            "timed_steps": [len(t) for t in timed],
            "generate_s": mean("generate_s"),
            "decode_steps": mean("decode_steps"),
            "eos_rate": mean("eos_rate"),
            "optimizer_steps": mean("optimizer_steps"),
            "gc_collect": mean("gc_collect"),
            "load_s": statistics.median(r["load_s"] for r in rows),
            "versions": rows[0]["versions"],
        }
    if "ours" in out:
        for v in out:
            out[v]["ratio"] = out[v]["s_per_step"] / out["ours"]["s_per_step"]
    return out


def ratios(summary: dict) -> dict:
    """The issue's targets: TRL as shipped >= 2x ours' time, TRL with gc frozen >= 1x."""

    def ratio(v: str) -> float | None:
        return summary[v]["ratio"] if v in summary and "ratio" in summary[v] else None

    shipped, frozen = ratio("trl"), ratio("trl-gc-frozen")
    return {
        "trl_over_ours": shipped,
        "trl_gc_frozen_over_ours": frozen,
        "target_2x_vs_shipped": None if shipped is None else shipped >= 2.0,
        "target_no_slower_than_gc_frozen": None if frozen is None else frozen >= 1.0,
    }


def report(summary: dict, r: dict, variants: tuple[str, ...]) -> list[str]:
    lines = [
        "| variant | s/step | ratio vs ours | s/step by round | sampling s/step | decode steps "
        "| EOS rate | optimizer steps | gc.collect calls |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v in VARIANTS:
        if v not in summary:
            why = "skipped" if v not in variants else "no run"
            lines.append(f"| {LABELS[v]} | {why} | - | - | - | - | - | - | - |")
            continue
        s = summary[v]
        rounds = ", ".join(f"{x:.3f}" for x in s["per_round"])
        ratio = f"{s['ratio']:.2f}x" if "ratio" in s else "-"
        lines.append(
            f"| {LABELS[v]} | {s['s_per_step']:.3f} | {ratio} | {rounds} | {s['generate_s']:.3f} "
            f"| {s['decode_steps']:.1f} "
            f"| {s['eos_rate']:.0%} | {s['optimizer_steps']:.1f} | {s['gc_collect']:.1f} |"
        )

    def verdict(x: float | None, ok: bool | None, target: str) -> str:
        if x is None:
            return "not measured"
        return f"{x:.2f}x ({target}: {'met' if ok else 'NOT met'})"

    lines += [
        "",
        "TRL as shipped / ours: "
        + verdict(r["trl_over_ours"], r["target_2x_vs_shipped"], "target >= 2x"),
        "TRL with gc frozen / ours: "
        + verdict(
            r["trl_gc_frozen_over_ours"],
            r["target_no_slower_than_gc_frozen"],
            "target >= 1x, ours no slower",
        ),
    ]
    return lines


def machine(threads: int) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    ours = ", ".join(f"{k} {metadata.version(k)}" for k in SHARED[:3])
    return (
        f"machine: nproc {len(os.sched_getaffinity(0))}, torch threads {threads}, load average "
        f"{load}; lab venv: {ours}"
    )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="tiny")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--workspace", default=None)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    ap.add_argument("--steps", type=int, default=6, help="timed PPO steps per run")
    ap.add_argument("--warmup", type=int, default=1, help="untimed PPO steps first")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of every variant")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    ap.add_argument("--quiet", action="store_true", help="no per-run lines, quiet pip")
    ap.add_argument("--skip-trl", action="store_true", help="time ours only (no TRL venv)")
    ap.add_argument("--trl-venv", default=None, help="default <workspace>/cache/trl112-venv")
    ap.add_argument("--setup-trl", action="store_true", help="only make the TRL venv, then exit")
    ap.add_argument("--worker-ours", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker_ours:
        spec = json.loads(Path(args.worker_ours[0]).read_text())
        Path(args.worker_ours[1]).write_text(json.dumps(ours_worker(spec), indent=1) + "\n")
        return {}
    if args.rounds < 1 or args.steps < 1 or args.warmup < 0 or args.threads < 1:
        ap.error("--rounds, --steps and --threads must be >= 1, --warmup >= 0")

    from rlhf import config as lab_config
    from rlhf.errors import RunError
    from rlhf.ppo import source_runs
    from rlhf.world import build_world

    kw = {"workspace": args.workspace} if args.workspace else {}
    cfg = lab_config.load(args.recipe, BENCH_SETTINGS + args.overrides, **kw)
    venv = (
        Path(args.trl_venv).resolve()
        if args.trl_venv
        else cfg.workspace_dir / "cache" / "trl112-venv"
    )
    if args.setup_trl:
        print(f"TRL venv ready: {ensure_trl_venv(venv, args.quiet)}")
        return {"trl_venv": str(venv)}
    p = cfg.ppo
    if p.batch_size % p.mini_batch_size:
        ap.error(f"ppo.batch_size={p.batch_size} is not a multiple of ppo.mini_batch_size")
    try:
        sft_run, rm_run = source_runs(cfg)
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    prompts = [x.text for x in build_world(cfg, progress=False).prompts("train")]
    if len(prompts) < p.batch_size:  # TRL's loader drops a short last batch: it would never yield
        raise SystemExit(f"error: {len(prompts)} train prompts < ppo.batch_size={p.batch_size}")

    variants = ("ours",) if args.skip_trl else VARIANTS
    python = None if args.skip_trl else ensure_trl_venv(venv, args.quiet)
    command = "python benchmarks/ppo_vs_trl.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    host = machine(args.threads)
    spec = {
        "policy_dir": str(sft_run.model_dir),
        "rm_dir": str(rm_run.model_dir),
        "prompts": prompts,
        "ppo": dataclasses.asdict(p),
        "threads": args.threads,
        "seed": cfg.seed,
        "warmup": args.warmup,
        "steps": args.steps,
    }
    settings = {k: getattr(p, k) for k in ("batch_size", "mini_batch_size", "ppo_epochs")}
    settings |= {k: getattr(p, k) for k in ("max_new_tokens", "temperature", "kl_coef")}
    if not args.quiet:
        print(f"command: {command}\n{host}")
        print(f"SFT model: {sft_run.model_dir}\nRM: {rm_run.model_dir}\nsettings: {settings}")

    order = schedule(args.rounds, variants)
    runs = []
    with tempfile.TemporaryDirectory(prefix="ppo_vs_trl-") as tmp:
        for rnd, v in order:
            run = run_variant(v, spec, python, Path(tmp)) | {"round": rnd}
            runs.append(run)
            if not args.quiet:
                timed = run["steps"][run["warmup"] :]
                s = statistics.fmean(x["s"] for x in timed)
                print(f"round {rnd}/{args.rounds} {LABELS[v]}: {s:.3f} s/step ({len(timed)} steps)")

    summary = summarize(runs, variants)
    r = ratios(summary)
    lines = report(summary, r, variants)
    trl_versions = summary.get("trl", {}).get("versions")
    if trl_versions:
        host += "; TRL venv: " + ", ".join(f"{k} {v}" for k, v in trl_versions.items())
    print("\n" + "\n".join([f"command: {command}", host, f"settings: {settings}", ""] + lines))
    results = {
        "command": command,
        "machine": host,
        "settings": settings,
        "rounds": args.rounds,
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": args.threads,
        "order": [list(x) for x in order],
        "runs": runs,
        "summary": summary,
        **r,
        "table": lines,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
