"""`Level`: one finished level of a generated (or loaded) voxel hierarchy.

This is the unit that flows one way through the product: pipeline -> io (VDB/mesh) -> server -> add-on.
It holds plain tensors so that io and server need nothing else from the engine.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from xcube_core.classes import CLASS_NAMES


@dataclasses.dataclass
class Level:
    """One level of a sparse voxel hierarchy, in metres with +Z up.

    Attributes:
        index: 0-based level index, 0 = coarsest.
        ijk: integer voxel coordinates. Shape: (N, 3), int32, CPU.
        voxel_size: edge length of a voxel in metres.
        origin: world position of voxel (0, 0, 0)'s centre; by convention half the voxel size
            (so level l+1, with half the voxel size, nests inside level l). Shape: (3,).
        normals: unit normals per voxel or None. Shape: (N, 3), float32.
        semantics: class id per voxel or None. Shape: (N,), int64 (ids index ``class_names``).
        class_names: names of the semantic classes.
        seconds: wall time spent producing this level.
        metadata: free-form JSON-able facts (prompt, seed, model id, ...).
    """

    index: int
    ijk: torch.Tensor
    voxel_size: float
    origin: tuple[float, float, float] | None = None
    normals: torch.Tensor | None = None
    semantics: torch.Tensor | None = None
    class_names: tuple[str, ...] = CLASS_NAMES
    seconds: float = 0.0
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.origin is None:
            h = 0.5 * float(self.voxel_size)
            self.origin = (h, h, h)
        self.origin = tuple(float(v) for v in self.origin)

    @property
    def num_voxels(self) -> int:
        return int(self.ijk.shape[0])

    def world_points(self) -> torch.Tensor:
        """Voxel centres in metres. Shape: (N, 3), float32."""
        return self.ijk.float() * float(self.voxel_size) + torch.tensor(self.origin, dtype=torch.float32)

    def grid(self, device: torch.device | str = "cpu"):
        """This level as a single-grid `GridBatch`."""
        from xcube_core.sparse import GridBatch

        return GridBatch.from_ijk(self.ijk.to(device), voxel_sizes=self.voxel_size, origins=self.origin)

    def grid_attributes(self, device: torch.device | str = "cpu"):
        """This level as a `GridBatch` with its attributes in the grid's voxel order.

        Returns:
            ``(grid, normals, semantics)``: normals Shape: (N, 3) float32 (zeros for voxels the level
            gives none), semantics Shape: (N,) int64 (-1 where unknown); each None when the level has none.
        """
        grid = self.grid(device)
        order = grid.ijk_to_index(self.ijk.to(device))
        normals = semantics = None
        if self.normals is not None:
            normals = torch.zeros(grid.total_voxels, 3, device=device)
            normals[order] = self.normals.to(device).float()
        if self.semantics is not None:
            semantics = torch.full((grid.total_voxels,), -1, dtype=torch.long, device=device)
            semantics[order] = self.semantics.to(device).long()
        return grid, normals, semantics

    def occupancy_normals(self) -> torch.Tensor:
        """Normals estimated from occupancy (`GridBatch.occupancy_normals`) in this level's row order.

        Shape: (N, 3), float32, CPU.
        """
        grid = self.grid(self.ijk.device)
        return grid.occupancy_normals().jdata[grid.ijk_to_index(self.ijk)].cpu()
