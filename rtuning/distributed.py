"""Data-parallel probing and evaluation under `accelerate launch`: who am I, and a barrier."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Processes:
    """This process's place in a data-parallel run (rank 0 of 1 when not launched in parallel)."""

    rank: int = 0
    world: int = 1
    device: torch.device | None = None  # the process's device chosen by accelerate

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            from accelerate import PartialState

            PartialState(cpu=not torch.cuda.is_available()).wait_for_everyone()


def current() -> Processes:
    """Read the launcher's environment; accelerate sets up the process group (gloo on CPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    from accelerate import PartialState

    # Without CUDA, accelerate only forms a process group (gloo) when told it is on the CPU.
    state = PartialState(cpu=not torch.cuda.is_available())
    return Processes(state.process_index, state.num_processes, state.device)
