"""PPO on one process against PPO under `accelerate launch`: the same episodes a step, split.

The lab's PPO scales out by hand (rlhf/distributed.py): each process rolls out its own share of
the batch, the advantages are whitened over every process's rollout, and the gradients are
averaged in flat buckets. This runs, on one workspace's SFT and RM runs (a `make demo`
workspace, say), interleaved round by round:

    1 process     `rlhf ppo`, --threads T (default: the number of processes), batch B
    N processes   `accelerate launch --config_file lab/accelerate/cpu_2proc.yaml` (N = 2) or
                  `--num_processes N`, 1 thread each, batch B / N a process

and prints seconds per step of rollout and of update (the means of `time/rollout` and
`time/update` in metrics.jsonl), the training wall time, the win rate against SFT, whether
every process ended with the same parameters, and the ratio of the training wall times. Each
arm is a new PPO run in the workspace (`--new`), with the recipe's other settings.

    PYTHONPATH=. .venv/bin/python benchmarks/ppo_scale_out.py --workspace W [--recipe tiny] \
        [--processes 2] [--rounds 1] [--set ppo.steps=60 ...]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from rlhf.config import load
from rlhf.errors import LabError
from rlhf.runs import Run, list_runs, read_eval, upstream

REPO = Path(__file__).resolve().parents[1]
CPU_2PROC = REPO / "lab" / "accelerate" / "cpu_2proc.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ppo(workspace: Path, recipe: str, processes: int, settings: list[str]) -> Run:
    """One `rlhf ppo --new` (under accelerate launch when processes > 1); its new run."""
    before = {r.dir for r in list_runs(workspace, "ppo")}
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the CPU, as the lab's PPO uses
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [sys.executable]
    if processes > 1:
        env["OMP_NUM_THREADS"] = "1"
        command += ["-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC)]
        command += ["--num_processes", str(processes), "--main_process_port", str(_free_port())]
    command += ["-m", "rlhf.cli", "ppo", "--recipe", recipe, "--workspace", str(workspace)]
    command += ["--new"]
    for s in settings:
        command += ["--set", s]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"ppo_scale_out: {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    new = [r for r in list_runs(workspace, "ppo") if r.dir not in before]
    if len(new) != 1:
        sys.exit(f"ppo_scale_out: expected one new PPO run, found {[str(r.dir) for r in new]}")
    return new[0]


def measure(run: Run) -> dict[str, Any]:
    """What the table shows of one finished PPO run."""
    rows = [r for r in run.metrics() if "time/update" in r]
    report = read_eval(run)
    digests = report["param_sha256_by_process"]
    return {
        "run": run.dir.name,
        "rollout_s": statistics.mean(r["time/rollout"] for r in rows),
        "update_s": statistics.mean(r["time/update"] for r in rows),
        "train_s": float(report["train_wall_time_s"]),
        "win_rate": float(report["win_rate_vs_sft"]["mean"]),
        "processes": len(digests),
        "same_params": len(set(digests)) == 1,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", required=True, help="a workspace with SFT and RM runs")
    ap.add_argument("--recipe", default="tiny")
    ap.add_argument("--processes", type=int, default=2, help="N, for the launched arm")
    ap.add_argument("--threads", type=int, default=0, help="the 1-process arm's (0: N)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds of both arms")
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    if args.processes < 2:
        ap.error("--processes must be at least 2")

    workspace = Path(args.workspace).resolve()
    cfg = load(args.recipe, workspace=str(workspace))
    try:  # both arms train from the same SFT policy and RM: the latest finished ones
        sft_run, rm_run = upstream(cfg, "sft"), upstream(cfg, "rm")
    except LabError as e:  # no finished SFT or RM run: the error names the command
        print(f"ppo_scale_out: {e}", file=sys.stderr)
        sys.exit(2)
    batch = load(args.recipe, overrides=args.settings).ppo.batch_size
    if batch % args.processes:
        ap.error(f"ppo.batch_size {batch} does not split into {args.processes} processes")
    common = [f"ppo.sft_run={sft_run.dir}", f"ppo.rm_run={rm_run.dir}", *args.settings]
    threads = args.threads or args.processes
    arms = {
        f"1 process x {batch} episodes, {threads} threads": (1, [f"threads={threads}"]),
        f"{args.processes} processes x {batch // args.processes} episodes, 1 thread each": (
            args.processes,
            ["threads=1", f"ppo.batch_size={batch // args.processes}"],
        ),
    }
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in arms}
    for _ in range(args.rounds):
        for name, (n, own) in arms.items():
            results[name].append(measure(run_ppo(workspace, args.recipe, n, common + own)))

    print(f"PPO on {args.recipe}: SFT {sft_run.dir.name}, RM {rm_run.dir.name}")
    print(
        "| arm | rollout s/step | update s/step | training wall | win rate vs SFT | same params |"
    )
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    median: dict[str, float] = {}
    for name, ms in results.items():
        for m in ms:
            print(
                f"| {name} | {m['rollout_s']:.2f} | {m['update_s']:.2f} | {m['train_s']:.0f} s "
                f"| {100 * m['win_rate']:.1f}% | {m['same_params']} ({m['processes']}) |"
            )
        median[name] = statistics.median(m["train_s"] for m in ms)
    one, many = list(median.values())
    ratio = one / many
    print(f"ratio (1 process / {args.processes} processes, median training wall): {ratio:.2f}")
    return {"results": results, "ratio": ratio}


if __name__ == "__main__":
    main()
