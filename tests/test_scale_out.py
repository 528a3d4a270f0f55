"""Scale-out: SFT, RM and PPO, each under `accelerate launch` with 2 CPU processes over gloo
(lab/accelerate/cpu_2proc.yaml) makes one run directory, written by the main process alone, and
both processes end with the same parameters (each one's sha256 is in eval.json); a killed PPO
run resumes under the launcher to the same parameters, with the paper's weight average
(ppo.ema_decay) too; every config in lab/accelerate/ loads with accelerate's own config
classes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import micro_workspace

from rlhf import distributed as dist
from rlhf.distributed import param_digest
from rlhf.losses import whiten
from rlhf.runs import Run, list_runs, read_eval

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "lab" / "accelerate"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A micro workspace after pretrain, SFT, comparisons and an RM, made in this process."""
    return micro_workspace(tmp_path_factory.mktemp("ws"))


def _free_port() -> int:
    with socket.socket() as s:  # not 29500: another launch on this machine may hold it
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(cfg, stage: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """`accelerate launch --config_file cpu_2proc.yaml -m rlhf.cli <stage> --recipe micro
    <args>` in cfg's workspace, and its environment."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    command += ["--config_file", str(CONFIGS / "cpu_2proc.yaml")]
    command += ["--main_process_port", str(_free_port())]
    command += ["-m", "rlhf.cli", stage, "--recipe", "micro"]
    command += ["--workspace", str(cfg.workspace_dir), *args]
    return command, env


def launched(cfg, stage: str, *args: str) -> str:
    """The launch_command run to its end: the launcher's stdout (it must succeed)."""
    command, env = launch_command(cfg, stage, *args)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def launch(cfg, stage: str, *args: str) -> tuple[Path, str]:
    """`launched(cfg, stage, "--new", *args)`: the new run's directory and the launcher's
    stdout."""
    before = {r.dir for r in list_runs(cfg.workspace_dir, stage)}
    stdout = launched(cfg, stage, "--new", *args)
    new = [r.dir for r in list_runs(cfg.workspace_dir, stage) if r.dir not in before]
    assert len(new) == 1, new  # one run directory for both processes
    return new[0], stdout


def check_one_writer_and_same_parameters(
    run_dir: Path, stdout: str, saved_model, logged: str = "train/loss"
) -> None:
    run = Run.open(run_dir)
    assert run.done
    assert stdout.strip().splitlines()[-1] == str(run_dir)
    assert stdout.count(str(run_dir)) == 1  # the main process reports, once
    steps = [r["step"] for r in run.metrics() if logged in r]
    assert steps and steps == sorted(set(steps))  # each step logged once: one writer
    digests = read_eval(run)["param_sha256_by_process"]
    assert len(digests) == 2  # two processes trained ...
    assert digests[0] == digests[1]  # ... and agree on every parameter
    assert param_digest(saved_model) == digests[0]  # and that is the model the run saved
    leftovers = [p.name for p in run_dir.rglob(".*tmp*")]
    assert not leftovers, leftovers


def test_sft_under_accelerate_launch_with_two_cpu_processes(workspace):
    from rlhf.models import load_policy

    run_dir, stdout = launch(workspace, "sft")
    model, _ = load_policy(run_dir / "model")
    check_one_writer_and_same_parameters(run_dir, stdout, model)
    assert read_eval(Run.open(run_dir))["steps"] == 12  # the micro recipe's sft.max_steps


def test_rm_under_accelerate_launch_with_two_cpu_processes(workspace):
    from rlhf.reward import load_reward_model

    run_dir, stdout = launch(workspace, "rm")
    check_one_writer_and_same_parameters(
        run_dir, stdout, load_reward_model(run_dir / "model").model
    )


def test_ppo_under_accelerate_launch_with_two_cpu_processes(workspace):
    """Each process rolls out its own prompts; the averaged gradients keep policy and value
    equal in both."""
    from rlhf.models import load_policy

    run_dir, stdout = launch(workspace, "ppo")
    model, _ = load_policy(run_dir / "model")
    check_one_writer_and_same_parameters(run_dir, stdout, model, "objective/kl")
    report = read_eval(Run.open(run_dir))
    values = report["value_param_sha256_by_process"]
    assert len(values) == 2 and values[0] == values[1]
    assert [r["step"] for r in Run.open(run_dir).metrics()] == [1, 2, 3, 4]
    batch = Run.open(run_dir).raw_config()["ppo"]["batch_size"]
    assert (report["processes"], report["episodes_per_step"]) == (2, 2 * batch)
    assert f"2 (accelerate launch), {batch} episodes each: {2 * batch} a step" in stdout

    # Killed in step 4, after the checkpoint of step 2 (micro: checkpoint_every 2): the run as a
    # Ctrl-C leaves it, made from this one. Launched again on its directory, both processes
    # resume from step 2 and end with this run's parameters to the bit.
    killed = _killed_after_step_2(run_dir)
    launched(workspace, "ppo", "--run-dir", str(killed))
    resumed = Run.open(killed)
    assert resumed.done and [r["step"] for r in resumed.metrics()] == [1, 2, 3, 4]
    assert read_eval(resumed)["param_sha256_by_process"] == report["param_sha256_by_process"]
    assert read_eval(resumed)["value_param_sha256_by_process"] == values


def _killed_after_step_2(run_dir: Path) -> Path:
    """A copy of a finished 4-step micro PPO run as a kill in step 4 leaves it: the checkpoint
    of step 2, steps 1-3 logged, no model, status failed."""
    killed = run_dir.parent / f"{run_dir.name}-killed"
    shutil.copytree(run_dir, killed)
    shutil.rmtree(killed / "model")
    (killed / "eval.json").unlink()
    lines = (killed / "metrics.jsonl").read_text().splitlines(keepends=True)
    (killed / "metrics.jsonl").write_text("".join(lines[:3]))
    Run.open(killed).set_status("failed")
    assert json.loads((killed / "checkpoint" / "state.json").read_text())["step"] == 2
    return killed


def test_ppo_weight_average_under_accelerate_launch(workspace):
    """ppo.ema_decay under the launcher: each process keeps its own average of the same
    weights (the gradients are averaged, the models not wrapped), so both save the same
    policy, the average; a killed run resumes the average from its checkpoint in both."""
    from safetensors.torch import load_file

    from rlhf.models import load_policy

    ema = ("--set", "ppo.ema_decay=0.5")
    run_dir, stdout = launch(workspace, "ppo", *ema)
    model, _ = load_policy(run_dir / "model")
    check_one_writer_and_same_parameters(run_dir, stdout, model, "objective/kl")
    report = read_eval(Run.open(run_dir))

    # The checkpoint of step 2 holds the live weights and their average, which lags them.
    live = load_file(str(run_dir / "checkpoint" / "policy.safetensors"))
    average = load_file(str(run_dir / "checkpoint" / "policy_average.safetensors"))
    shared = set(average) & set(live)
    assert shared and any(not torch.equal(average[n], live[n]) for n in shared)

    killed = _killed_after_step_2(run_dir)
    launched(workspace, "ppo", "--run-dir", str(killed), *ema)
    resumed = Run.open(killed)
    assert resumed.done and [r["step"] for r in resumed.metrics()] == [1, 2, 3, 4]
    assert read_eval(resumed)["param_sha256_by_process"] == report["param_sha256_by_process"]


def _children(pid: int) -> list[int]:
    """The pids whose parent is `pid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_workers_stop_when_their_launcher_is_killed(workspace, tmp_path):
    """SIGKILL to `accelerate launch` cannot be forwarded, and torch elastic starts each worker
    in a session of its own: before rlhf.distributed.watch_launcher they trained on, writing the
    run. Now each worker sees its parent gone and stops as at a Ctrl-C: the run is left failed
    and resumable, and nothing writes it any more."""
    from rlhf.runs import _alive

    before = {r.dir for r in list_runs(workspace.workspace_dir, "ppo")}
    command, env = launch_command(workspace, "ppo", "--new", "--set", "ppo.steps=100000")
    log = tmp_path / "launcher.log"
    with log.open("w") as out:
        launcher = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        run_dir = None
        while time.monotonic() < deadline:  # until the run has logged a step
            new = [r.dir for r in list_runs(workspace.workspace_dir, "ppo") if r.dir not in before]
            if new and Run.open(new[0]).metrics():
                run_dir = new[0]
                break
            assert launcher.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        assert run_dir is not None, log.read_text()[-3000:]
        workers = [p for p in _children(launcher.pid) if _alive(p)]
        assert len(workers) == 2, workers
    finally:
        launcher.kill()
        launcher.wait()
    deadline = time.monotonic() + 60
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    alive = [p for p in workers if _alive(p)]
    for p in alive:  # do not leave them running if the test fails
        os.kill(p, signal.SIGKILL)
    assert not alive, log.read_text()[-3000:]
    text = log.read_text()
    assert text.count(f"the launcher (pid {launcher.pid}) is gone") == 2, text[-3000:]
    run = Run.open(run_dir)
    assert run.status["status"] == "failed", run.status  # marked by the Ctrl-C path: resumable
    logged = len(run.metrics())
    time.sleep(3)
    assert len(run.metrics()) == logged  # nobody writes it any more


def test_ppo_scale_out_benchmark_times_one_process_against_two(workspace, capsys):
    """benchmarks/ppo_scale_out.py on micro: both arms train from the same SFT and RM runs,
    the launched one in 2 processes with half the episodes each, and both agree on their
    parameters."""
    result = _scale_out_bench().main(
        ["--workspace", str(workspace.workspace_dir), "--recipe", "micro"]
    )
    out = capsys.readouterr().out
    assert "ratio (1 process / 2 processes, median training wall):" in out
    (one,), (two,) = result["results"].values()
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["same_params"] and two["same_params"]
    runs = [Run.open(workspace.workspace_dir / "runs" / m["run"]) for m in (one, two)]
    configs = [r.raw_config()["ppo"] for r in runs]
    for key in ("sft_run", "rm_run"):  # both arms start from the same, named runs
        assert configs[0][key] and configs[0][key] == configs[1][key]
    assert configs[1]["batch_size"] * 2 == configs[0]["batch_size"]
    assert result["ratio"] > 0


def test_ppo_scale_out_benchmark_without_an_sft_run_names_the_command(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _scale_out_bench().main(["--workspace", str(tmp_path), "--recipe", "micro"])
    assert e.value.code == 2
    assert "rlhf sft --recipe micro" in capsys.readouterr().err


def _scale_out_bench():
    import importlib.util

    path = REPO / "benchmarks" / "ppo_scale_out.py"
    spec = importlib.util.spec_from_file_location("ppo_scale_out", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _average(rank: int, port: int, out) -> None:
    import torch
    import torch.distributed as td

    os.environ.update(WORLD_SIZE="2", RANK=str(rank), MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    td.init_process_group("gloo", rank=rank, world_size=2)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    for k, p in enumerate(model.parameters()):
        p.grad = torch.full_like(p, 10.0 * rank + k)  # rank 0: k, rank 1: 10 + k
    dist.BUCKET = 4  # buckets of 6 elements (over the limit), 2 + 2 (two tensors), 1
    dist.average_gradients(model)
    means = dist.mean_over_processes({"a": float(rank), "b": 4.0 * rank})
    # Whitening: each process its own rows of one batch (different masks and spreads).
    x, mask = _rows()
    x, mask = x[rank * 3 : rank * 3 + 3], mask[rank * 3 : rank * 3 + 3]
    white = whiten(x, mask, moments=dist.masked_moments(x, mask))
    out.put((rank, [p.grad.tolist() for p in model.parameters()], means, white))
    td.destroy_process_group()


def _rows():
    """(6, 5) values and a response mask of ragged lengths; rank 0 takes rows 0-2, rank 1 3-5,
    whose values are larger and spread wider, so their own statistics differ."""
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    x[3:] = 3.0 * x[3:] + 2.0
    lengths = torch.tensor([5, 2, 4, 1, 5, 3])
    mask = (torch.arange(5)[None, :] < lengths[:, None]).long()
    return x, mask


def test_average_gradients_mean_over_processes_and_whitening_treat_the_processes_as_one():
    """PPO's data parallelism by hand, against the arithmetic: 2 gloo processes."""
    import torch
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    out, port = ctx.Queue(), _free_port()
    procs = [ctx.Process(target=_average, args=(r, port, out)) for r in (0, 1)]
    for p in procs:
        p.start()
    results = dict((r, (g, m, w)) for r, g, m, w in (out.get(timeout=120) for _ in procs))
    for p in procs:
        p.join(timeout=60)
    assert results[0][:2] == results[1][:2]
    grads, means, _ = results[0]
    # (k + 10 + k) / 2 for the k-th tensor: weight and bias of the first layer, then the second
    assert grads == [[[5.0] * 3] * 2, [6.0] * 2, [[7.0] * 2], [8.0]]
    assert means == {"a": 0.5, "b": 2.0}
    # Two processes whiten their rows as one process whitens all six ...
    x, mask = _rows()
    together = torch.cat([results[0][2], results[1][2]])
    torch.testing.assert_close(together, whiten(x, mask), rtol=0, atol=1e-12)
    # ... which each process's own statistics would not (the per-process whitening of TRL).
    alone = torch.cat([whiten(x[:3], mask[:3]), whiten(x[3:], mask[3:])])
    assert (alone - together).abs().max() > 0.1
    assert dist.masked_moments(x, mask) is None  # no launcher: whiten reads x's own statistics


def _finish(rank: int, port: int, out) -> None:
    import time

    import torch.distributed as td

    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.wait()  # joins the group as the CLI's stages do, through accelerate's PartialState
    joined = td.is_initialized()
    if rank == 1:
        time.sleep(2.0)  # rank 0 must wait for it in finish()
    start = time.monotonic()
    dist.finish()
    out.put((rank, joined, td.is_initialized(), time.monotonic() - start))


def test_finish_waits_for_every_process_then_leaves_the_process_group():
    """A worker that exits with its gloo group alive can abort as the interpreter ends (CI saw
    a finished PPO run's rank 1 die of SIGABRT): rlhf.distributed.finish, 2 gloo processes."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    out, port = ctx.Queue(), _free_port()
    procs = [ctx.Process(target=_finish, args=(r, port, out)) for r in (0, 1)]
    for p in procs:
        p.start()
    results = {r: rest for r, *rest in (out.get(timeout=120) for _ in procs)}
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert all(joined and not still for joined, still, _ in results.values())
    assert results[0][2] > 1.0  # rank 0 waited in finish() for rank 1, two seconds later
    dist.finish()  # without a launcher: nothing to leave


def test_the_cli_leaves_the_process_group_after_a_command_that_succeeded(monkeypatch, capsys):
    """cli.main calls rlhf.distributed.finish once a command returns 0, and not after an error
    (peers of a failed process may be blocked in a collective: destroying the group could hang)."""
    from rlhf import cli, distributed

    calls: list[bool] = []
    monkeypatch.setattr(distributed, "finish", lambda: calls.append(True))
    assert cli.main(["config", "show", "--recipe", "micro"]) == 0
    assert calls == [True]
    assert cli.main(["config", "show", "--recipe", "micro", "--workspace", " "]) == 2
    assert calls == [True]
    assert "--workspace is empty" in capsys.readouterr().err


def test_gradient_buckets_keep_the_order_and_the_size_limit():
    import torch

    params = [torch.zeros(n) for n in (3, 3, 10, 1, 1)]

    def sizes(limit):
        return [[p.numel() for p in b] for b in dist._buckets(params, limit)]

    assert sizes(6) == [[3, 3], [10], [1, 1]]
    assert sizes(4) == [[3], [3], [10], [1, 1]]  # a tensor over the limit goes alone
    assert sizes(100) == [[3, 3, 10, 1, 1]]


@pytest.mark.parametrize(
    "name", ["cpu_2proc", "ddp_multi_gpu", "fsdp", "deepspeed_zero2", "deepspeed_zero3"]
)
def test_every_accelerate_config_loads_with_accelerates_config_class(name):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.utils import DistributedType

    path = CONFIGS / f"{name}.yaml"
    cfg = load_config_from_file(str(path))
    assert isinstance(cfg, ClusterConfig)
    raw = yaml.safe_load(path.read_text())
    assert set(raw) <= set(ClusterConfig.__dataclass_fields__), "unknown keys"
    expected = {
        "cpu_2proc": DistributedType.MULTI_GPU,  # the type that starts local processes
        "ddp_multi_gpu": DistributedType.MULTI_GPU,
        "fsdp": DistributedType.FSDP,
        "deepspeed_zero2": DistributedType.DEEPSPEED,
        "deepspeed_zero3": DistributedType.DEEPSPEED,
    }[name]
    assert cfg.distributed_type == expected
    # `accelerate launch` copies fsdp_config / deepspeed_config keys onto its own arguments
    # without checking them: each must be one of those arguments, or it is silently ignored.
    from accelerate.commands.launch import launch_command_parser

    options = {a.dest for a in launch_command_parser()._actions}
    for section in ("fsdp_config", "deepspeed_config"):
        unknown = set(raw.get(section, {})) - options
        assert not unknown, f"{section}: {unknown}"
    if name.startswith("deepspeed"):
        assert cfg.deepspeed_config["zero_stage"] == int(name[-1])
    assert "accelerate launch --config_file lab/accelerate/" in path.read_text()  # the command


def test_an_error_once_the_launcher_died_stops_as_at_a_ctrl_c(monkeypatch, capsys):
    """A worker blocked in a collective fails ("Connection closed by peer") when its peer saw
    the launcher gone and stopped first: the CLI reports the launcher's death, once, and stops
    as at a Ctrl-C. While the launcher lives, the same error is the worker's own and propagates."""
    import threading

    from rlhf import cli, distributed

    def collective_fails(*args, **kwargs):
        raise RuntimeError("Connection closed by peer [127.0.0.1]:37548")

    monkeypatch.setattr(cli.config, "load", collective_fails)
    monkeypatch.setattr(distributed, "_reported", threading.Lock())
    argv = ["world", "build", "--recipe", "micro"]
    monkeypatch.setattr(distributed, "_launcher", os.getppid())  # the launcher lives
    with pytest.raises(RuntimeError, match="Connection closed by peer"):
        cli.main(argv)
    monkeypatch.setattr(distributed, "_launcher", -1)  # this process's parent is another now
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert err.count("the launcher (pid -1) is gone") == 1 and err.endswith("interrupted\n")
    distributed.report_launcher_gone()  # the watcher thread, a moment later: not again
    assert "is gone" not in capsys.readouterr().err
