"""Helpers of the add-on tests: a small deterministic pipeline and a server factory."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

REPO_MODULE = "xcube_test"
ADDON_MODULE = f"bl_ext.{REPO_MODULE}.xcube"


@dataclasses.dataclass
class ScenePipeline:
    """A small deterministic pipeline with the `XCubePipeline` interface (fast, no weights).

    Level 0 is a few blocks on the ground plane (or the given condition), each finer level the
    8 children of every voxel of the level above, so levels nest exactly as in the real model.
    ``step_delay`` slows every diffusion step so that tests can cancel or kill a job mid-stream.
    """

    model_id: str = "test-scenes"
    num_levels: int = 3
    class_names: tuple[str, ...] = ("ground", "road", "building", "roof", "tree")
    voxel_sizes: tuple[float, ...] = (4.0, 2.0, 1.0)
    coarse_shape: tuple[int, int, int] = (16, 16, 8)
    device: torch.device = torch.device("cpu")
    step_delay: float = 0.0
    last_condition: object = None

    def coarse_ijk(self, seed: int) -> torch.Tensor:
        rng = np.random.default_rng(seed)
        x, y = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
        ground = np.stack([x.ravel(), y.ravel(), np.zeros(x.size, dtype=np.int64)], 1)
        blocks = []
        for _ in range(3):
            i, j = rng.integers(1, 13, size=2)
            h = int(rng.integers(2, 6))
            bi, bj, bk = np.meshgrid(np.arange(i, i + 3), np.arange(j, j + 3), np.arange(1, h), indexing="ij")
            blocks.append(np.stack([bi.ravel(), bj.ravel(), bk.ravel()], 1))
        ijk = np.unique(np.concatenate([ground, *blocks]), axis=0)
        return torch.from_numpy(ijk.astype(np.int32))

    def generate(self, prompt, *, seed=0, steps=25, guidance=3.0, num_levels=None, condition=None,
                 callback=None, cancel=None, class_prior=None):
        self.last_class_prior = class_prior
        from xcube_core.errors import CancelledError, InvalidInputError
        from xcube_core.level import Level

        if not prompt.strip() or len(prompt) > 1000:
            raise InvalidInputError(f"prompt must have 1..1000 characters, got {len(prompt)}")
        num_levels = num_levels or self.num_levels
        self.last_condition = condition
        ijk = condition.ijk.to(torch.int32) if condition is not None else self.coarse_ijk(seed)
        for index in range(num_levels):
            t0 = time.monotonic()
            for step in range(1, steps + 1):
                if cancel is not None and cancel.is_set():
                    raise CancelledError("cancelled")
                if self.step_delay:
                    time.sleep(self.step_delay)
                if callback is not None:
                    callback(index, step, steps)
            if index > 0:
                offsets = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=torch.int32)
                ijk = (ijk[:, None, :] * 2 + offsets[None]).reshape(-1, 3)
            semantics = torch.where(ijk[:, 2] < 2**index, 0, 2).to(torch.int64)  # ground slab, buildings
            normals = torch.zeros(ijk.shape[0], 3)
            normals[:, 2] = 1.0
            yield Level(index=index, ijk=ijk.clone(), voxel_size=self.voxel_sizes[index], normals=normals,
                        semantics=semantics, class_names=self.class_names, seconds=time.monotonic() - t0,
                        metadata={"prompt": prompt, "seed": seed})


def make_server(pipeline, **kwargs):
    from server.app import create_server

    server, port = create_server(pipeline, "127.0.0.1", 0, **kwargs)
    assert server.wait_until_ready(30), "the test server's model did not load"
    return server, port
