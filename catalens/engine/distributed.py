"""Data-parallel training with PyTorch DDP: one process per CPU core group (gloo) or GPU (NCCL), started by torchrun.

    catalens train --nproc 2 --data fashion-mnist --out runs/ddp ...            # launches torchrun for you
    torchrun --nproc-per-node 2 -m catalens train --data fashion-mnist ...      # the same, by hand
    torchrun --nnodes 2 --node-rank R --rdzv-backend c10d --rdzv-endpoint HOST:29400 --nproc-per-node 8 \\
        -m catalens train ...                                                   # several machines (docs/scale.md)

Each rank reads its own share of the catalog (a distributed sampler over the catalog's rows: for a BSON dump, each
rank seeks to its own index entries), computes gradients on `--batch-size / world size` images, and DDP averages
them, so a step sees the same global batch as one process would. Rank 0 alone validates, writes the run directory,
the checkpoints and the report; the other ranks get its validation metrics, so every rank makes the same
best-epoch and early-stopping decisions.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from catalens.errors import CatalensError


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """The process's place in a torchrun launch (RANK, LOCAL_RANK, WORLD_SIZE), or a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), size)


def start(world: World, device: torch.device) -> None:
    """Join the process group: NCCL on GPUs, gloo on CPUs. Ranks other than 0 stay quiet (no bars, no lines)."""
    if not world.distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if not world.main:
        os.environ["CATALENS_NO_PROGRESS"] = "1"
        os.environ["CATALENS_QUIET"] = "1"


LAUNCHED = "CATALENS_TORCHRUN_CHILD"  # set by launch(): this process is one of `catalens train --nproc N`'s


def leave_now() -> None:
    """A rank of `catalens train --nproc N` whose run is written: the process ends here (os._exit, streams
    flushed), skipping the interpreter's teardown, where gloo's threads aborted now and then ("terminate called
    without an active exception", SIGABRT) after everything was written, and torchrun then failed the whole run.
    Only in processes that launch() started: nothing of theirs runs after train()."""
    if os.environ.get(LAUNCHED) == "1" and dist.is_initialized():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def stop() -> None:
    """Leave the process group. The DDP wrapper's reducer holds the group: it is collected first, so that the
    group is really torn down here and not by the interpreter's exit, where gloo's threads can abort."""
    if dist.is_initialized():
        import gc

        gc.collect()
        dist.destroy_process_group()


def rank_device(world: World, device: torch.device) -> torch.device:
    """cuda:LOCAL_RANK for a GPU run (one GPU per process), else the device as chosen."""
    if world.distributed and device.type == "cuda":
        return torch.device("cuda", world.local_rank)
    return device


def broadcast(value, world: World):
    """Rank 0's `value` on every rank (any picklable object; pickles travel only between our own ranks)."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(values: list[float], world: World, device: torch.device) -> list[float]:
    if not world.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def available_processes(device: str) -> tuple[int, str]:
    """How many training processes this machine can run: its GPUs, or its CPU cores."""
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.device_count(), "GPUs"
    return os.cpu_count() or 1, "CPU cores"


def launch(argv: list[str], nproc: int, device: str = "auto", out: str | None = None) -> int:
    """Run `catalens train ARGV` on `nproc` processes through torchrun (one machine); returns its exit code. A
    process that dies stops the run (torchrun stops the others): the message says how to resume."""
    available, what = available_processes(device)
    if nproc < 1 or nproc > available:
        raise CatalensError(f"--nproc {nproc}: this machine has {available} {what}; give --nproc 1 to {available}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "catalens", "train", *argv]
    environment = {**os.environ, LAUNCHED: "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or
                   str(max(1, (os.cpu_count() or 1) // nproc))}
    code = subprocess.run(command, env=environment).returncode
    if code:
        where = f"catalens train --out {shlex.quote(out)} --resume --nproc {nproc}" if out else \
            "catalens train --out RUN_DIR --resume"
        print(f"error: training stopped: a process of the {nproc} failed (exit {code}; its error is above). "
              f"The last finished epoch is saved: continue with {where}", file=sys.stderr)
    return code
