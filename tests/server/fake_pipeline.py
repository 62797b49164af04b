"""A stand-in with the `XCubePipeline` contract: seeded random nested voxels, callback and cancel honoured.

Used only where a test needs control the real tiny model cannot give (a slow step, a gate, a huge
level); every test of what the model produces runs the real `XCubePipeline` (`xcube_core.testing`).
"""

from __future__ import annotations

import threading
import time

import torch

from xcube_core.classes import CLASS_NAMES
from xcube_core.errors import CancelledError, InvalidInputError
from xcube_core.level import Level


class FakePipeline:
    """Levels of random voxels; level l has ``voxels[l]`` voxels in a grid of ``coarse_shape * 2**l``.

    Args:
        voxels: voxels per level (coarse -> fine).
        step_delay: seconds each diffusion step sleeps (to make cancel and queueing observable).
        gate: if given, every step waits for it (tests hold a job running until they release it).
    """

    model_id = "fake-pipeline"
    class_names = CLASS_NAMES

    def __init__(self, voxels=(40, 120, 300), step_delay: float = 0.0, gate: threading.Event | None = None,
                 coarse_shape=(16, 16, 8)):
        self.voxels = tuple(voxels)
        self.num_levels = len(self.voxels)
        self.voxel_sizes = [1.0 / 2**i for i in range(self.num_levels)]
        self.coarse_shape = tuple(coarse_shape)
        self.device = torch.device("cpu")
        self.step_delay = step_delay
        self.gate = gate
        self.calls = 0
        self.cancelled = threading.Event()

    def generate(self, prompt, *, seed=0, steps=25, guidance=3.0, num_levels=None, condition=None,
                 callback=None, cancel=None, class_prior=None):
        self.last_class_prior = class_prior
        if not prompt or len(prompt) > 1000:
            raise InvalidInputError(f"prompt must have 1..1000 characters, got {len(prompt)}")
        if not 1 <= steps <= 1000:
            raise InvalidInputError(f"steps must be in 1..1000, got {steps}")
        n = self.num_levels if num_levels is None else num_levels
        if not 1 <= n <= self.num_levels:
            raise InvalidInputError(f"num_levels must be in 1..{self.num_levels}, got {n}")
        self.calls += 1
        return self._levels(prompt, seed, steps, n, condition, callback, cancel)

    def _levels(self, prompt, seed, steps, n, condition, callback, cancel):
        gen = torch.Generator().manual_seed(int(seed) + 7919 * len(prompt))
        for index in range(n):
            t0 = time.perf_counter()
            for step in range(1, steps + 1):
                if self.gate is not None:
                    while not self.gate.wait(0.01):
                        if cancel is not None and cancel.is_set():
                            break
                if cancel is not None and cancel.is_set():
                    self.cancelled.set()
                    raise CancelledError(f"cancelled at level {index} step {step}")
                if self.step_delay:
                    time.sleep(self.step_delay)
                if callback is not None:
                    callback(index, step, steps)
            yield self._level(index, gen, condition, prompt, seed, time.perf_counter() - t0)

    def _level(self, index, gen, condition, prompt, seed, seconds) -> Level:
        shape = torch.tensor(self.coarse_shape) * 2**index
        count = self.voxels[index]
        if condition is not None and index == 0:
            ijk = condition.ijk.clone()
        else:
            flat = torch.randperm(int(shape.prod()), generator=gen)[:count]
            ijk = torch.stack([flat // (shape[1] * shape[2]), (flat // shape[2]) % shape[1], flat % shape[2]], 1)
        normals = torch.nn.functional.normalize(torch.randn(ijk.shape[0], 3, generator=gen), dim=1)
        semantics = torch.randint(0, len(self.class_names), (ijk.shape[0],), generator=gen)
        return Level(index=index, ijk=ijk.to(torch.int32), voxel_size=self.voxel_sizes[index], normals=normals,
                     semantics=semantics, seconds=seconds,
                     metadata={"prompt": prompt, "seed": int(seed), "model_id": self.model_id})
