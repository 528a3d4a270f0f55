"""Several processes, one run: `accelerate launch` (or torchrun) with WORLD_SIZE > 1.

Every process trains (the Trainer's DDP, or PPO's Accelerator); the main process alone creates
the run directory and writes its files, and the others get its path from it and wait for it
where they would read what it wrote. With one process every helper is a no-op.

    on_main(fn)     fn() on the main process; its result (or its error) on every process
    is_main()       the process that writes files
    wait()          a barrier
    main_first()    the main process runs the block first (a world or cache it builds once)
    finish()        after a command that succeeded: a barrier, then the process group destroyed
    param_digests   each process's sha256 of its model's parameters: they agree after DDP
    masked_moments  a masked mean and variance over every process's tensor (PPO's whitening)
    watch_launcher  stop this process, as a Ctrl-C would, if its launcher dies
    launcher_gone   whether that launcher has died (an error then is its aftermath)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def distributed() -> bool:
    """Started by a launcher with more than one process (accelerate launch, torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def watch_launcher(interval: float = 1.0, grace: float = 15.0) -> threading.Thread | None:
    """Under a launcher: a daemon thread that stops this process once the launcher is gone.

    torch elastic (behind `accelerate launch` and torchrun) starts each worker in a session of
    its own, so a launcher killed outright (SIGKILL, an out-of-memory kill) leaves its workers
    training and writing the run, orphans nobody stops. A Ctrl-C or SIGTERM to the launcher is
    forwarded to them; this covers the rest. Every `interval` seconds the thread checks that
    the process's parent is still the launcher that started it. When it is not, it sends the
    process SIGINT: the run stops as at a Ctrl-C, marked failed and resumable from its last
    checkpoint. A process blocked in a collective whose peer has gone may not get to see the
    KeyboardInterrupt, so after `grace` seconds the thread ends the process (exit status 130).
    None without a launcher."""
    global _launcher
    if not distributed():
        return None
    launcher = _launcher = os.getppid()

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(interval)
        report_launcher_gone()
        os.kill(os.getpid(), signal.SIGINT)  # KeyboardInterrupt in the main thread
        time.sleep(grace)
        os._exit(130)

    thread = threading.Thread(target=watch, name="rlhf-watch-launcher", daemon=True)
    thread.start()
    return thread


_launcher: int | None = None  # the launcher's pid, once watch_launcher watches it
_reported = threading.Lock()  # held once the launcher's death is reported: reported once


def launcher_gone(wait: float = 2.0) -> bool:
    """Whether the launcher watch_launcher watches has died, waiting up to `wait` seconds for
    this process's parent to change. A worker blocked in a collective can fail ("Connection
    closed by peer") because its peer saw the launcher gone and stopped first, a moment before
    its own watcher looks: that error is the launcher's death, not a fault of its own (the CLI
    then stops as at a Ctrl-C). False without a watched launcher."""
    if _launcher is None:
        return False
    deadline = time.monotonic() + wait
    while os.getppid() == _launcher:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def report_launcher_gone() -> None:
    """Print, once per process, that the launcher is gone and this process stops."""
    if _reported.acquire(blocking=False):
        print(
            f"rlhf: the launcher (pid {_launcher}) is gone; stopping process {os.getpid()} "
            "as at a Ctrl-C",
            file=sys.stderr,
            flush=True,
        )


def _state():
    """accelerate's process state, set up once per process. Without CUDA it must be told cpu=True
    to join the launcher's processes over gloo (else it sees one process); the Trainers and PPO
    pick the CPU the same way."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def is_main() -> bool:
    return not distributed() or _state().is_main_process


def wait() -> None:
    if distributed():
        _state().wait_for_everyone()


def finish() -> None:
    """Under a launcher, once a command has succeeded on this process: wait for the others, then
    destroy the process group. A worker that exits with its gloo group alive can abort (SIGABRT,
    "terminate called without an active exception") as the interpreter tears down the group's
    threads: a run that finished and saved, reported failed by its launcher (seen once in CI;
    pytorch/pytorch#190489; torch's docs ask for destroy_process_group near the end of main).
    Only after success: a process that failed may have peers blocked in a collective, and
    destroying the group then can hang (torchtitan#1342). A no-op without a launcher, or when
    the command never joined the group."""
    if not distributed():
        return
    import torch.distributed as td

    if not td.is_available() or not td.is_initialized():
        return
    state = _state()
    state.wait_for_everyone()
    state.destroy_process_group()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    if not distributed():
        yield
        return
    with _state().main_process_first():
        yield


def on_main(fn: Callable[[], T]) -> T:
    """fn() on the main process, its result broadcast to the others. If it raises, the main
    process re-raises and the others raise a RuntimeError with its message (none hangs)."""
    if not distributed():
        return fn()
    from accelerate.utils import broadcast_object_list

    box: list[Any] = [None]
    error: BaseException | None = None
    if is_main():
        try:
            box = [("ok", fn())]
        except Exception as e:
            error, box = e, [("error", f"{type(e).__name__}: {e}")]
    broadcast_object_list(box, from_process=0)
    kind, value = box[0]
    if error is not None:
        raise error
    if kind == "error":
        raise RuntimeError(f"the main process failed: {value}")
    return value


def param_digest(model: Any) -> str:
    """sha256 of the model's parameters, by name (tied weights once)."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def param_digests(model: Any) -> list[str]:
    """[param_digest] of every process, rank order (one entry without a launcher)."""
    digest = param_digest(model)
    if not distributed():
        return [digest]
    from accelerate.utils import gather_object

    return gather_object([digest])


def average_gradients(*models: Any) -> None:
    """DDP by hand (PPO): every process's gradients become their mean over the processes. PPO
    calls its models' trunks and heads directly, which a DDP wrapper would not see."""
    if not distributed():
        return
    import torch
    import torch.distributed as td

    # Each trainable parameter once (a model's tied weights, or one shared by two models).
    params = list({id(p): p for m in models for p in m.parameters() if p.requires_grad}.values())
    for p in params:
        if p.grad is None:  # unused here, maybe not elsewhere: every process sends one
            p.grad = torch.zeros_like(p)
    # The gradients travel in flat buckets of up to BUCKET elements, as DDP's do: one all-reduce
    # a bucket instead of one a tensor (docs/benchmarks.md, "PPO under accelerate launch").
    n = td.get_world_size()
    for bucket in _buckets(params, BUCKET):
        flat = torch.cat([p.grad.reshape(-1) for p in bucket])  # (sum of the bucket's numels,)
        td.all_reduce(flat, op=td.ReduceOp.SUM)
        flat /= n
        offset = 0
        for p in bucket:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
            offset += p.numel()


BUCKET = 2**22  # elements of one all-reduce: 16 MB of float32 (DDP's default bucket is 25 MB)


def _buckets(params: list[Any], limit: int) -> Iterator[list[Any]]:
    """params in order, grouped so that each group holds at most `limit` elements (or one
    tensor larger than that)."""
    bucket: list[Any] = []
    size = 0
    for p in params:
        if bucket and size + p.numel() > limit:
            yield bucket
            bucket, size = [], 0
        bucket.append(p)
        size += p.numel()
    if bucket:
        yield bucket


def mean_over_processes(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the processes (the same keys on each): one figure for the whole
    batch, and the same decisions (early stop, adaptive KL) in every process."""
    if not distributed():
        return values
    import torch
    import torch.distributed as td

    t = _all_reduce_sum(torch.tensor(list(values.values()), dtype=torch.float64))
    return dict(zip(values, (t / td.get_world_size()).tolist(), strict=True))


def _all_reduce_sum(t: Any) -> Any:
    """t summed over the processes, on t's device (gloo takes CPU tensors, nccl CUDA ones)."""
    import torch.distributed as td

    device = t.device
    if td.get_backend() == "nccl":
        t = t.cuda()
    td.all_reduce(t, op=td.ReduceOp.SUM)
    return t.to(device)


def masked_moments(x: Any, mask: Any) -> tuple[Any, Any] | None:
    """The mean and Bessel-corrected variance of x over the positions where mask is 1, across
    every process's x, as rlhf.losses.masked_mean and masked_var give them for all the processes'
    rows in one tensor. PPO whitens its advantages by them, so that N processes whiten as one
    process with N times the batch would (TRL's PPOTrainer whitens each process's batch alone).
    None without a launcher: each x is the whole batch then.

    Two passes in float64 (the sum and count, then the squared deviations), as masked_var."""
    if not distributed():
        return None
    import torch

    m = mask.to(torch.float64)
    x64 = x.detach().to(torch.float64) * m
    total = _all_reduce_sum(torch.stack([x64.sum(), m.sum()]))  # (2,): sum, count
    n = total[1]
    mean = total[0] / n.clamp(min=1.0)
    sq = _all_reduce_sum(((x64 - mean) ** 2 * m).sum().reshape(1))[0]
    var = sq / n.clamp(min=1.0) * n / (n - 1).clamp(min=1.0)
    return mean.to(x.dtype), var.to(x.dtype)
