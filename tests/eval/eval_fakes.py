"""Helpers of the eval tests: a small contract-shaped fake pipeline and a tiny on-disk reference dataset.

The fake follows the `XCubePipeline` contract (``generate`` yields `Level` 0..L-1, validates its
arguments, exposes ``voxel_sizes`` / ``class_names`` / ``model_id``) and builds a scene from keywords
with simple, known rules, so that expected scores can be derived by hand:

* ground: a 16 x 16 slab at k = 0..1 (level 1, voxel 1 m);
* a building (class building, roof on top) rising 12 voxels above the ground if the prompt says
  "tall", 4 if it says "low", none otherwise; its footprint (2 + seed % 3)^2 voxels;
* "trees": 3 tree columns of 3 voxels; "water": an 8 x 8 pond one voxel below the ground surface.
"""

from __future__ import annotations

import pathlib

import torch

from xcube_core.classes import CLASS_NAMES
from xcube_core.errors import InvalidInputError
from xcube_core.level import Level

C = {n: i for i, n in enumerate(CLASS_NAMES)}


def _box(lo, hi) -> torch.Tensor:
    axes = [torch.arange(a, b) for a, b in zip(lo, hi)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def fake_scene(prompt: str, seed: int, voxel_size: float = 1.0) -> Level:
    """The finest level of the fake model for a prompt and seed (see module docstring)."""
    words = prompt.lower().split()
    parts: list[tuple[torch.Tensor, int]] = []
    ground = _box((0, 0, 0), (16, 16, 2))
    if "water" in words:  # a pond one voxel below the ground surface
        wet = (ground[:, 0] >= 8) & (ground[:, 1] >= 8)
        parts += [(ground[~wet], C["ground"]), (ground[wet & (ground[:, 2] == 0)], C["water"])]
    else:
        parts.append((ground, C["ground"]))
    height = 12 if "tall" in words else (4 if "low" in words else 0)
    if height:
        w = 2 + seed % 3
        parts.append((_box((2, 2, 2), (2 + w, 2 + w, 1 + height)), C["building"]))
        parts.append((_box((2, 2, 1 + height), (2 + w, 2 + w, 2 + height)), C["roof"]))
    if "trees" in words:
        for x in (8, 11, 14):
            parts.append((_box((x, 3, 2), (x + 1, 4, 5)), C["tree"]))
    ijk = torch.cat([p for p, _ in parts]).to(torch.int32)
    sem = torch.cat([torch.full((len(p),), c, dtype=torch.int64) for p, c in parts])
    normals = torch.zeros(len(ijk), 3)
    normals[:, 2] = 1.0
    return Level(index=1, ijk=ijk, voxel_size=voxel_size, normals=normals, semantics=sem)


def coarsen(level: Level) -> Level:
    ijk = torch.unique(torch.div(level.ijk, 2, rounding_mode="floor"), dim=0).to(torch.int32)
    return Level(index=level.index - 1, ijk=ijk, voxel_size=level.voxel_size * 2,
                 normals=torch.zeros(len(ijk), 3), semantics=torch.zeros(len(ijk), dtype=torch.int64))


class FakePipeline:
    """Two levels (2 m, 1 m); see the module docstring."""

    model_id = "fake"
    num_levels = 2
    class_names = CLASS_NAMES
    voxel_sizes = [2.0, 1.0]
    coarse_shape = (8, 8, 8)
    device = torch.device("cpu")

    def __init__(self, empty_prompts: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[str, int]] = []
        self.empty_prompts = empty_prompts

    def generate(self, prompt, *, seed=0, steps=None, guidance=None, num_levels=None, condition=None,
                 callback=None, cancel=None):
        steps = 25 if steps is None else steps  # None: the model's default, as XCubePipeline does
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidInputError("prompt is empty")
        if not 1 <= steps <= 1000:
            raise InvalidInputError(f"steps must be in 1..1000, got {steps}")
        self.calls.append((prompt, seed))
        fine = fake_scene(prompt, seed)
        yield coarsen(fine)
        if prompt in self.empty_prompts:
            raise InvalidInputError("level 0 came out empty, so level 1 has nothing to refine")
        yield fine

    def reconstruct(self, level: Level, level_index: int) -> Level:
        """A lossy 'VAE': drops every voxel with i == 0 (known IoU), keeps the classes."""
        keep = level.ijk[:, 0] != 0
        return Level(index=level.index, ijk=level.ijk[keep], voxel_size=level.voxel_size,
                     semantics=None if level.semantics is None else level.semantics[keep])


def write_reference(root: pathlib.Path, prompts_seeds: list[tuple[str, int]], split: str = "test") -> pathlib.Path:
    """A dataset folder (real storage format + manifest) holding fake scenes as held-out samples."""
    from xcube_core.data.hierarchy import VoxelSample
    from xcube_core.data.storage import manifest_row, save_sample, write_manifest

    rows = []
    for i, (prompt, seed) in enumerate(prompts_seeds):
        fine = fake_scene(prompt, seed)
        sample = VoxelSample(levels=[coarsen(fine), fine], caption=prompt, metadata={"seed": seed})
        name = f"{split}_{i:07d}.safetensors"
        rows.append(manifest_row(sample, name, split, save_sample(sample, root / name)))
    write_manifest(rows, root)
    return root
