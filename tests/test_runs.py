"""rlhf.runs: a run is a directory with fixed files, and bad directories fail with their path."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf import config
from rlhf.errors import RunError
from rlhf.runs import Run, find_done, latest_done, list_runs, upstream, write_json
from rlhf.world.build import WORLD_VERSION


@pytest.fixture
def cfg(tmp_path):
    return config.load("micro", workspace=str(tmp_path / "ws"))


def test_create_names_the_run_and_writes_its_files(cfg, tmp_path):
    run = Run.create(cfg, "pretrain")
    assert run.dir.parent == tmp_path / "ws" / "runs"
    assert run.dir.name.startswith("pretrain__micro__0__")
    assert (run.dir / "config.json").exists()
    assert run.stage == "pretrain"
    assert run.status["status"] == "running" and "started" in run.status


def test_config_json_round_trips_to_the_resolved_config(cfg):
    cfg.pretrain.lr = 1e-3
    run = Run.create(cfg, "pretrain")
    assert run.config == cfg
    assert run.raw_config()["stage"] == "pretrain"


@pytest.mark.parametrize(
    "section, key, off",
    [("world", "rl_per_family", 0), ("ppo", "lr_warmup", 0), ("ppo", "lr_end", 1.0)],
)
def test_a_key_left_out_when_off_reads_back_off_not_as_the_default(cfg, section, key, off):
    """saved_config leaves these keys out when off, so older runs match; their defaults are on
    (1500 prompts, the paper's 10-step warm-up, ...), and the run must not read back as if it
    had them."""
    setattr(getattr(cfg, section), key, off)
    run = Run.create(cfg, "ppo")
    assert key not in run.raw_config()[section]
    assert getattr(getattr(run.config, section), key) == off
    assert run.config == cfg


def test_a_run_of_an_older_world_version_is_not_reused(cfg):
    run = Run.create(cfg, "pretrain")
    assert run.raw_config()["world"]["version"] == WORLD_VERSION
    run.set_status("done")
    assert latest_done(cfg, "pretrain").dir == run.dir
    assert find_done(cfg, "pretrain", ("world", "pretrain")).dir == run.dir
    data = run.raw_config()
    data["world"]["version"] = WORLD_VERSION - 1  # made before the world generator changed
    (run.dir / "config.json").write_text(json.dumps(data))
    assert latest_done(cfg, "pretrain") is None
    assert find_done(cfg, "pretrain", ("world", "pretrain")) is None
    assert run.config == cfg  # still readable


def test_two_runs_in_the_same_second_get_different_dirs(cfg):
    a, b = Run.create(cfg, "pretrain"), Run.create(cfg, "pretrain")
    assert a.dir != b.dir


def test_two_processes_creating_runs_at_once_get_different_dirs(cfg, monkeypatch):
    """Two `rlhf ppo` started together in one workspace both saw no directory of their name
    (a check, then a mkdir), shared one, and logged into each other's metrics. Now mkdir
    itself claims the name. Replayed here: the time frozen, and the second run's existence
    check blind to the first run's directory, as the second process's check was."""
    import time

    monkeypatch.setattr(time, "strftime", lambda fmt: "20261126-071308")
    first = Run.create(cfg, "ppo")
    real_exists = type(first.dir).exists
    monkeypatch.setattr(
        type(first.dir), "exists", lambda self: False if self == first.dir else real_exists(self)
    )
    second = Run.create(cfg, "ppo")  # its check sees no directory; mkdir knows better
    assert first.dir.name == "ppo__micro__0__20261126-071308"
    assert second.dir.name == "ppo__micro__0__20261126-071308-2"
    assert json.loads((first.dir / "config.json").read_text())["stage"] == "ppo"


def test_create_refuses_unknown_stage_and_a_non_empty_dir(cfg, tmp_path):
    with pytest.raises(RunError, match="unknown stage 'kto'"):
        Run.create(cfg, "kto")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(
        RunError, match=f"{busy}: not a run directory \\(no config.json\\) and not empty"
    ):
        Run.create(cfg, "pretrain", busy)
    assert (busy / "notes.txt").read_text() == "mine"


def test_status_done_records_finish_and_extra_info(cfg):
    run = Run.create(cfg, "pretrain", cfg.workspace_dir / "r")
    started = run.status["started"]
    run.set_status("done", steps=30)
    status = run.status
    assert run.done and status["steps"] == 30 and status["started"] == started
    assert "finished" in status and status["stage"] == "pretrain"


def test_a_run_whose_process_was_killed_reads_stopped(cfg):
    """status.json cannot change when its process is killed (SIGKILL): Run.state checks the
    process it records, so the dashboard tells a run still training from a dead one."""
    code = (
        "import sys, time; from rlhf import config; from rlhf.runs import Run; "
        "run = Run.create(config.load('micro', workspace=sys.argv[1]), 'ppo'); "
        "print(run.dir, flush=True); time.sleep(120)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(cfg.workspace_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        run = Run.open(child.stdout.readline().strip())
        assert run.status["pid"] == child.pid and run.state == "running"
        child.kill()
        while Path(f"/proc/{child.pid}/stat").exists():  # a zombie until its parent reaps it
            if Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
                break
        assert run.state == "stopped"  # killed, not yet reaped
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert run.status["status"] == "running" and run.state == "stopped"
    run.set_status("running")  # resumed here: this process runs it now
    assert run.state == "running" and run.status["pid"] == os.getpid()
    run.set_status("failed", error="RunError: x")
    assert run.state == "failed"


def test_a_process_that_took_the_pid_of_a_killed_run_is_not_taken_for_it(cfg):
    run = Run.create(cfg, "ppo")
    assert run.state == "running"
    write_json(run.dir / "status.json", {**run.status, "pid_started": "1"})  # another start
    assert run.state == "stopped"


def test_a_run_of_another_host_or_without_a_pid_keeps_its_status(cfg):
    run = Run.create(cfg, "ppo")
    status = run.status
    write_json(run.dir / "status.json", {**status, "host": "elsewhere", "pid": 2**22 + 1})
    assert run.state == "running"  # cannot be checked from here
    write_json(run.dir / "status.json", {"status": "running", "stage": "ppo"})  # an older run
    assert run.state == "running"


def test_progress_of_a_stepped_run(cfg):
    cfg.ppo.steps = 50
    run = Run.create(cfg, "ppo")
    assert run.progress() == {
        "state": "running",
        "step": 0,
        "steps": 50,
        "s_per_step": None,
        "eta_s": None,
    }
    for step in range(1, 13):
        run.log(step, {"time/rollout": 1.0, "time/update": 0.5 + (step == 12)})
    run.log(12, {"overopt/kl": 0.1})  # a probe line without the timings is not a step
    got = run.progress()
    assert got["step"] == 12 and got["steps"] == 50
    assert got["s_per_step"] == 1.5  # the median of the last 10: one slow step does not count
    assert got["eta_s"] == 1.5 * 38


def test_metrics_log_read_and_truncate(cfg):
    run = Run.create(cfg, "pretrain", cfg.workspace_dir / "r")
    for step in (10, 20, 30):
        run.log(step, {"train/loss": 1.0 / step})
    with open(run.dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 40, "train/lo')  # a line cut short by a kill
    assert [m["step"] for m in run.metrics()] == [10, 20, 30]
    assert run.metrics()[1] == {"step": 20, "train/loss": 0.05}
    run.truncate_metrics(20)
    assert [m["step"] for m in run.metrics()] == [10, 20]
    run.log(30, {"train/loss": 0.01})
    assert [m["step"] for m in run.metrics()] == [10, 20, 30]


def test_open_missing_dir(tmp_path):
    with pytest.raises(RunError, match=f"{tmp_path / 'nope'}: no such run directory"):
        Run.open(tmp_path / "nope")


def test_open_a_dir_that_is_not_a_run(tmp_path):
    with pytest.raises(RunError, match=f"{tmp_path}: not a run directory"):
        Run.open(tmp_path)


def test_open_corrupted_config(cfg):
    run = Run.create(cfg, "pretrain", cfg.workspace_dir / "r")
    (run.dir / "config.json").write_text('{"stage": "pretrain", ')
    with pytest.raises(RunError, match=rf"{run.dir / 'config.json'}: corrupted"):
        Run.open(run.dir)


def test_open_config_without_stage(cfg):
    run = Run.create(cfg, "pretrain", cfg.workspace_dir / "r")
    (run.dir / "config.json").write_text(json.dumps({"seed": 0}))
    with pytest.raises(RunError, match="missing or unknown 'stage'"):
        Run.open(run.dir)


def test_config_with_a_bad_field_is_a_run_error(cfg):
    run = Run.create(cfg, "pretrain", cfg.workspace_dir / "r")
    data = run.raw_config()
    data["pretrain"]["lr"] = "fast"
    (run.dir / "config.json").write_text(json.dumps(data))
    with pytest.raises(RunError, match=r"config.json: 'pretrain.lr' must be float"):
        _ = Run.open(run.dir).config


def test_create_or_resume_resumes_the_same_config(cfg):
    first = Run.create_or_resume(cfg, "pretrain", cfg.workspace_dir / "r")
    first.log(10, {"train/loss": 2.0})
    again = Run.create_or_resume(config.from_dict(cfg.to_dict()), "pretrain", first.dir)
    assert again.dir == first.dir and again.metrics() == first.metrics()


def test_create_or_resume_refuses_a_different_config_naming_the_key(cfg):
    run = Run.create_or_resume(cfg, "pretrain", cfg.workspace_dir / "r")
    changed = config.from_dict(cfg.to_dict())
    changed.pretrain.lr = 0.5
    with pytest.raises(
        RunError, match=r"cannot resume with a different config \(pretrain.lr differ"
    ):
        Run.create_or_resume(changed, "pretrain", run.dir)


def test_create_or_resume_refuses_another_stage(cfg):
    run = Run.create_or_resume(cfg, "pretrain", cfg.workspace_dir / "r")
    with pytest.raises(RunError, match="is a 'pretrain' run, not 'sft'"):
        Run.create_or_resume(cfg, "sft", run.dir)


def test_list_runs_oldest_first_filtered_by_stage(cfg):
    assert list_runs(cfg.workspace_dir) == []
    a = Run.create(cfg, "pretrain")
    b = Run.create(cfg, "sft")
    c = Run.create(cfg, "pretrain")
    (cfg.workspace_dir / "runs" / "stray").mkdir()  # not a run: skipped
    assert [r.dir for r in list_runs(cfg.workspace_dir)] == [a.dir, b.dir, c.dir]
    assert [r.dir for r in list_runs(cfg.workspace_dir, "pretrain")] == [a.dir, c.dir]


def test_resume_allows_other_threads_and_workspace(tmp_path):
    from rlhf.config import load
    from rlhf.runs import Run

    cfg = load("micro", workspace=str(tmp_path))
    run = Run.create(cfg, "pretrain", tmp_path / "r")
    other = load("micro", workspace=str(tmp_path / "elsewhere"), threads=2)
    assert Run.create_or_resume(other, "pretrain", tmp_path / "r").dir == run.dir


def test_a_copied_workspace_resolves_recorded_runs_by_name(cfg, tmp_path):
    """Paths recorded in a run's files (eval.json's sft_run, a comparison's policy) name the
    workspace they were made in; in a copy they name the copy's run of the same name."""
    import shutil

    from rlhf.runs import moved_source, recorded_run, same_run, write_json

    sft = Run.create(cfg, "sft")
    ppo = Run.create(cfg, "ppo")
    write_json(ppo.dir / "eval.json", {"sft_run": str(sft.dir)})
    shutil.copytree(cfg.workspace_dir, tmp_path / "copy")
    copy_sft = Run.open(tmp_path / "copy" / "runs" / sft.dir.name)
    copy_ppo = Run.open(tmp_path / "copy" / "runs" / ppo.dir.name)

    assert recorded_run(sft.dir, tmp_path / "copy") == copy_sft.dir
    assert same_run(sft.dir, copy_sft) and same_run(str(sft.dir), sft)
    assert not same_run(sft.dir, copy_ppo)  # another run of the copy
    assert moved_source(copy_ppo, {"sft_run": copy_sft}) is None
    # A run the workspace does not hold keeps its recorded path, and is another run.
    other = Run.create(config.load("micro", workspace=str(tmp_path / "other")), "rm")
    assert recorded_run(other.dir, tmp_path / "copy") == other.dir
    assert "used sft_run" in moved_source(copy_ppo, {"sft_run": other})
    assert recorded_run(tmp_path / "model", tmp_path / "copy") == tmp_path / "model"
    # A run of another workspace with the same name (made in the same second) is another run.
    twin = tmp_path / "twin" / "runs" / sft.dir.name
    Run.create(config.load("micro", workspace=str(tmp_path / "twin")), "sft", twin)
    assert not same_run(twin, copy_sft) and recorded_run(twin, tmp_path / "copy") == twin
    # Moved rather than copied: the recorded place is gone, the name decides.
    shutil.rmtree(cfg.workspace_dir)
    assert same_run(sft.dir, copy_sft) and moved_source(copy_ppo, {"sft_run": copy_sft}) is None


def test_a_finished_run_is_reused_however_its_config_spelled_the_workspace(cfg, monkeypatch):
    """A run made with $RLHF_WORKSPACE (workspace "") is reused by `--workspace DIR` naming the
    same directory, and the other way round: the run is in the workspace searched."""
    monkeypatch.setenv("RLHF_WORKSPACE", str(cfg.workspace_dir))
    by_env = config.load("micro")
    run = Run.create(by_env, "pretrain")
    run.set_status("done")
    assert run.raw_config()["workspace"] == ""
    assert latest_done(cfg, "pretrain").dir == run.dir
    assert latest_done(by_env, "pretrain").dir == run.dir
    cfg.pretrain.lr = 1e-3  # anything else still tells runs apart
    assert latest_done(cfg, "pretrain") is None


def test_the_pipeline_section_never_makes_a_run_different(cfg):
    """pipeline.extras says which runs the pipeline makes, not how any run is made: a run made
    before the section existed, or with other extras, is still reused and resumable."""
    from rlhf.runs import write_json

    for stage in ("pretrain", "ppo", "dpo"):
        run = Run.create(cfg, stage)
        old = run.raw_config()
        del old["pipeline"]
        write_json(run.dir / "config.json", old)
        run.set_status("done")
        other = config.load("micro", workspace=cfg.workspace, pipeline__extras=["grpo"])
        assert latest_done(other, stage).dir == run.dir
        assert Run.create_or_resume(other, stage, run.dir).dir == run.dir


def test_a_later_stages_settings_do_not_make_an_earlier_stages_run_different(cfg):
    """Pretraining, SFT and the RM are made from their own and earlier sections only: a changed
    ppo, rm or sft value reuses (and resumes) the runs before it, not the stage it belongs to."""
    runs = {}
    for stage in ("pretrain", "sft", "rm", "ppo"):
        runs[stage] = Run.create(cfg, stage)
        runs[stage].set_status("done")
    cases = {  # a changed setting -> the stages whose finished runs are still this config's
        "ppo__kl_coef": ("pretrain", "sft", "rm"),
        "rm__lr": ("pretrain", "sft"),
        "compare__k_max": ("pretrain", "sft"),
        "sft__lr": ("pretrain",),
        "pretrain__lr": (),
        "seed": (),
        "threads": ("pretrain", "sft", "rm", "ppo"),  # how fast, not what: every run serves
    }
    for key, reused in cases.items():
        value = 7 if key in ("seed", "compare__k_max", "threads") else 0.123
        changed = config.load("micro", workspace=str(cfg.workspace_dir), **{key: value})
        for stage, run in runs.items():
            found = latest_done(changed, stage)
            assert (found is not None and found.dir == run.dir) == (stage in reused), (key, stage)
            if stage in reused:
                assert Run.create_or_resume(changed, stage, run.dir).dir == run.dir
            else:
                with pytest.raises(RunError, match="cannot resume with a different config"):
                    Run.create_or_resume(changed, stage, run.dir)


def test_latest_resumable_is_an_interrupted_run_with_a_checkpoint_and_nothing_newer_upstream(
    cfg,
):
    from rlhf.runs import latest_resumable

    def at(run, file, t):  # set a file's mtime: the order of events, not the clock's speed
        os.utime(run.dir / file, ns=(t, t))

    upstream = {}
    for i, stage in enumerate(("pretrain", "sft", "rm")):
        upstream[stage] = Run.create(cfg, stage)
        upstream[stage].set_status("done")
        at(upstream[stage], "status.json", 1_000 + i)
    run = Run.create(cfg, "ppo")
    at(run, "config.json", 2_000)
    assert latest_resumable(cfg, "ppo") is None  # running: this very process
    run.set_status("failed", error="KeyboardInterrupt: ")
    assert latest_resumable(cfg, "ppo") is None  # no checkpoint: nothing to resume from
    run.checkpoint_dir.mkdir()
    (run.checkpoint_dir / "state.json").write_text("{}")
    assert latest_resumable(cfg, "ppo") == run
    write_json(run.dir / "status.json", {**run.status, "status": "running", "pid": 2**22 + 1})
    assert run.state == "stopped" and latest_resumable(cfg, "ppo") == run

    other = config.load("micro", workspace=cfg.workspace, **{"ppo.kl_coef": 0.5})
    assert latest_resumable(other, "ppo") is None
    threads = config.load("micro", workspace=cfg.workspace, threads=2)
    assert latest_resumable(threads, "ppo") == run  # threads are not part of a run's identity
    at(upstream["rm"], "status.json", 3_000)  # an RM finished after the run started
    assert latest_resumable(cfg, "ppo") is None
    at(upstream["rm"], "status.json", 1_500)
    assert latest_resumable(cfg, "ppo") == run
    with_data = config.load("micro", workspace=cfg.workspace, **{"ppo.data": "p.jsonl"})
    assert latest_resumable(with_data, "ppo") is None  # the file may have changed since

    rm = Run.create(cfg, "rm")
    rm.checkpoint_dir.mkdir()
    (rm.checkpoint_dir / "checkpoint-2").mkdir()
    rm.set_status("failed")
    assert latest_resumable(cfg, "rm") is None  # the store may have changed: start over


def test_an_explicit_upstream_run_must_be_finished_and_an_rm_run_for_the_rm(cfg):
    sft = Run.create(cfg, "sft")
    with pytest.raises(RunError, match=r"ppo.sft_run needs a finished run; this one is running"):
        upstream(cfg, "sft", str(sft.dir), "ppo.sft_run")
    sft.set_status("done")
    assert upstream(cfg, "sft", str(sft.dir), "ppo.sft_run").dir == sft.dir
    with pytest.raises(RunError, match=r"ppo.rm_run needs an RM run; this is a 'sft' run"):
        upstream(cfg, "rm", str(sft.dir), "ppo.rm_run")
    rm = Run.create(cfg, "rm")
    rm.set_status("failed", error="boom")
    with pytest.raises(RunError, match=r"grpo.rm_run needs a finished run; this one is failed"):
        upstream(cfg, "rm", str(rm.dir), "grpo.rm_run")


def test_an_explicit_policy_must_be_a_policy_of_this_world(cfg):
    """An RM run as ppo.sft_run, or a run of another world (seed, version), was accepted: PPO
    then loaded a reward model as its policy, or another world's model and tokenizer for this
    world's prompts."""
    rm = Run.create(cfg, "rm")
    rm.set_status("done")
    with pytest.raises(RunError, match=r"ppo.sft_run needs a policy run .*this is a 'rm' run"):
        upstream(cfg, "sft", str(rm.dir), "ppo.sft_run")
    for stage in ("pretrain", "sft", "ppo", "dpo", "grpo"):  # compare.sft_run: a PPO policy, say
        policy = Run.create(cfg, stage)
        policy.set_status("done")
        assert upstream(cfg, "sft", str(policy.dir), "compare.sft_run").dir == policy.dir

    seed = cfg.world.seed
    other = config.load("micro", workspace=cfg.workspace, **{"world.seed": seed + 1})
    theirs = Run.create(other, "sft")
    theirs.set_status("done")
    with pytest.raises(RunError, match=rf"another world .*world.seed={seed + 1}\b"):
        upstream(cfg, "sft", str(theirs.dir), "dpo.sft_run")
    their_rm = Run.create(other, "rm")
    their_rm.set_status("done")
    with pytest.raises(RunError, match=r"grpo.rm_run is a run of another world"):
        upstream(cfg, "rm", str(their_rm.dir), "grpo.rm_run")
    older = Run.create(cfg, "sft")
    older.set_status("done")
    data = json.loads((older.dir / "config.json").read_text())
    data["world"]["version"] -= 1  # a run made before the world last changed
    (older.dir / "config.json").write_text(json.dumps(data))
    with pytest.raises(RunError, match=r"another world .*world.version="):
        upstream(cfg, "sft", str(older.dir), "ppo.sft_run")


@pytest.mark.parametrize("world", ["v", [], 3])
def test_a_hand_edited_config_whose_world_is_not_a_section_is_a_one_line_error(cfg, world):
    """Run.config raised AttributeError or TypeError (it dropped world.version first)."""
    run = Run.create(cfg, "sft")
    run.set_status("done")
    data = json.loads((run.dir / "config.json").read_text())
    data["world"] = world
    (run.dir / "config.json").write_text(json.dumps(data))
    with pytest.raises(RunError, match=r"config.json: 'world' is a section; give a mapping"):
        run.config  # noqa: B018
    with pytest.raises(RunError, match=r"config.json: its 'world' is not a section"):
        upstream(cfg, "sft", str(run.dir), "ppo.sft_run")
    assert find_done(cfg, "sft", ("world", "pretrain", "sft")) is None  # never reused


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ('{"status": "done", "st', "unreadable"),  # truncated
        ("[]", "unreadable"),
        ('{"status": 3}', "unreadable"),
        ('{"status": "running", "pid": "abc"}', "running"),  # no pid of this host: not judged
    ],
)
def test_a_damaged_status_file_is_read_not_raised(cfg, text, state):
    """A truncated or hand-edited status.json was a JSONDecodeError, AttributeError or
    ValueError traceback from every command that listed runs (sft, ppo, eval, pipeline)."""
    from rlhf.runs import latest_resumable

    run = Run.create(cfg, "pretrain")
    run.set_status("done")
    (run.dir / "status.json").write_text(text)
    assert run.state == state
    assert not run.done and latest_done(cfg, "pretrain") is None
    assert latest_resumable(cfg, "pretrain") is None
