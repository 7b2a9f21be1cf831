"""Distributed setup from torchrun's environment: NCCL on CUDA, gloo on CPU; plain `python` is world size 1."""
from __future__ import annotations

import atexit
import os
import resource
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from .config import ConfigError


@dataclass
class Dist:
    rank: int
    local_rank: int
    world: int
    device: torch.device

    @property
    def master(self) -> bool:
        return self.rank == 0


def setup_distributed(device_choice: str) -> Dist:
    """Pick the device (auto | cuda | cpu) and join the process group when torchrun started several ranks."""
    use_cuda = torch.cuda.is_available() if device_choice == "auto" else device_choice == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("--device=cuda but no CUDA device is visible")
    rank, local_rank, world = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", 1)))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1:
        options = {"device_id": device} if use_cuda else {}
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            # torchrun keeps one key-value store across restarts: a per-attempt prefix stops a restarted
            # group from reading the addresses of the workers that died.
            store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False)
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            options.update(store=dist.PrefixStore(f"attempt{attempt}", store), rank=rank, world_size=world)
        dist.init_process_group("nccl" if use_cuda else "gloo", **options)
    return Dist(rank, local_rank, world, device)


def wrap_model(model: nn.Module, opts: list, d: Dist, compiled: bool, graphs: int, find_unused: bool) -> nn.Module:
    """The model as the training step calls it: torch.compile'd (room for `graphs` graphs before the recompile
    limit's eager fallback), then inside DDP over several ranks, so DDP's own hooks stay out of the graph.
    Parameters whose optimizer reduce-scatters their gradients itself (group key reduce_gradients) stay out of
    DDP's all-reduce; buffers are built alike on every rank, so none is broadcast."""
    if compiled:
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, graphs + 2)
    net = torch.compile(model) if compiled else model
    if d.world == 1:
        return net
    own = {id(p) for o in opts for g in o.param_groups if g.get("reduce_gradients") for p in g["params"]}
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        net, [name for name, p in net.named_parameters() if id(p) in own])
    return nn.parallel.DistributedDataParallel(net, device_ids=[d.local_rank] if d.device.type == "cuda" else None,
                                               broadcast_buffers=False, find_unused_parameters=find_unused)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_object(value, d: Dist):
    """Rank 0's value on every rank."""
    if d.world == 1:
        return value
    shared = [value]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def synchronize(d: Dist) -> None:
    if d.device.type == "cuda":
        torch.cuda.synchronize(d.device)


def peak_memory(d: Dist) -> str:
    if d.device.type == "cuda":
        return (f"peak memory allocated: {torch.cuda.max_memory_allocated(d.device) // 2**20} MiB "
                f"reserved: {torch.cuda.max_memory_reserved(d.device) // 2**20} MiB")
    return f"peak memory (max RSS): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB"


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def exit_process(code: int) -> None:
    """sys.exit(code); in a torchrun worker of several (WORLD_SIZE > 1), the atexit handlers, a flush of stdout
    and stderr, then os._exit(code), skipping the interpreter's teardown. gloo's worker threads outlive
    destroy_process_group (the C++ group stays referenced), and their teardown at interpreter exit has aborted
    ranks that had finished (SIGABRT, "terminate called without an active exception", about one 2-rank CPU
    run in 20 here), which torchrun reports as a failed job and a restart would repeat."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
