"""Which tasks each step trains on: seeded epochs over the task file, resumable.

Each epoch is a permutation of the tasks drawn from `random.Random((seed, epoch))`
(the identity when `data.shuffle` is false); steps take consecutive slices and
run on into the next epoch when one ends. The state is two integers, saved in
every checkpoint, so a resumed run sees exactly the prompts an uninterrupted one would.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class TaskSampler:
    num_tasks: int
    per_step: int
    shuffle: bool = True
    seed: int = 0
    epoch: int = 0
    position: int = 0

    def _order(self, epoch: int) -> list[int]:
        order = list(range(self.num_tasks))
        if self.shuffle:
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def next_indices(self) -> list[int]:
        out: list[int] = []
        while len(out) < self.per_step:
            order = self._order(self.epoch)
            take = min(self.per_step - len(out), self.num_tasks - self.position)
            out.extend(order[self.position : self.position + take])
            self.position += take
            if self.position >= self.num_tasks:
                self.epoch, self.position = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "num_tasks": self.num_tasks}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state.get("num_tasks", self.num_tasks)) != self.num_tasks:
            from toolrl.errors import ToolrlError

            raise ToolrlError(
                f"the checkpoint was trained on {state['num_tasks']} tasks but data.train_file now has {self.num_tasks}",
                where="data.train_file", fix="resume with the task file the run started with, or start a new run "
                "(trainer.resume=none, a new trainer.output_dir)",
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
