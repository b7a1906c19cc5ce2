"""Several processes (torchrun / accelerate launch, DDP): who this process is, and gathering results by id."""
from __future__ import annotations

import os


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return rank() == 0


def init() -> None:
    """Joins the process group the launcher set up (NCCL on GPUs, gloo on CPUs); nothing for one process."""
    import torch  # here, not above: who this process is (rank, world_size) needs no torch

    if world_size() > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())
        torch.distributed.init_process_group(backend=backend)


def shard(items: list) -> list:
    """This process's share: every world_size-th item from its rank on."""
    return items[rank()::world_size()]


def gather_in_order(items: list[dict], results: list, key=lambda r: r.id) -> list:
    """Every process's results, merged and put back in the order of items (which carry "id").

    Each item's result must come back exactly once: a gap or a duplicate is an error, never a silent drop."""
    if world_size() == 1:
        gathered = results
    else:
        import torch

        parts = [None] * world_size()
        torch.distributed.all_gather_object(parts, results)
        gathered = [r for part in parts for r in part]
    by_id = {}
    for result in gathered:
        if key(result) in by_id:
            raise RuntimeError(f"id {key(result)!r} was generated twice across processes")
        by_id[key(result)] = result
    missing = [item["id"] for item in items if item["id"] not in by_id]
    if missing or len(by_id) != len(items):
        raise RuntimeError(f"{len(missing)} ids missing after gathering, e.g. {missing[:3]}")
    return [by_id[item["id"]] for item in items]
