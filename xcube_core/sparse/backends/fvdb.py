"""Thin adapter to fvdb-core 0.6.0, used only when ``import fvdb`` works.

Our `GridBatch` orders voxels by key (grid, i, j, k); fVDB orders them by its NanoVDB tree. The
adapter therefore converts topology both ways and carries an explicit permutation for features:

* ``to_fvdb(grid)`` / ``from_fvdb(fgrid)`` rebuild the same voxels, voxel sizes and origins;
* ``VoxelOrder.between(grid, fgrid)`` holds ``to_fvdb`` (our rows in fVDB order, i.e. fVDB row r is
  our row ``to_fvdb[r]``) and ``to_ours`` (its inverse), found with ``ijk_to_index``;
* ``FVDBConvolution.from_plan(plan)`` builds the matching ``fvdb.ConvolutionPlan`` once (forward:
  ``from_grid_batch``; transposed: ``from_grid_batch_transposed``) and runs our (K, C_in, C_out)
  weights through it as fVDB's (C_out, C_in, kx, ky, kz) layout, which is
  ``torch.nn.functional.conv3d``'s: the same cross-correlation our forward plans compute;
* ``convolution_for(plan)`` is what ``nn`` calls for CUDA features: the plan's fVDB twin, built once
  and kept on the plan, after `weight_map_for` has checked on the device, once per (kernel, stride,
  direction), that fVDB computes what the torch backend computes (trying our kernel as is and
  flipped, since transposed kernels are oriented either way in the wild). If neither agrees, the
  torch backend runs and a warning says so: fVDB only ever makes the same result faster.

Names and signatures follow the fvdb-core 0.6.0 sources (GridBatch.from_ijk(ijk: JaggedTensor,
voxel_sizes, origins), GridBatch.ijk, GridBatch.ijk_to_index(ijk, cumulative),
JaggedTensor.from_data_and_offsets, ConvolutionPlan.from_grid_batch(kernel_size, stride,
source_grid, target_grid), ConvolutionPlan.from_grid_batch_transposed(...), ConvolutionPlan.execute(data,
weights)).
"""

from __future__ import annotations

import functools
import importlib
import logging
from dataclasses import dataclass

import torch

from xcube_core.sparse.grid import GridBatch
from xcube_core.sparse.jagged import JaggedTensor

name = "fvdb"
logger = logging.getLogger(__name__)
WEIGHT_MAPS = ("as_is", "flipped")  # our kernel tap d as fVDB's tap d, or as its mirror


def _module():
    """The imported ``fvdb`` module, or None when it is absent or broken."""
    try:
        mod = importlib.import_module("fvdb")
    except Exception:  # noqa: BLE001 - any failure to import (missing CUDA libs, ABI) means "unavailable"
        return None
    if not all(hasattr(mod, attr) for attr in ("GridBatch", "JaggedTensor")):
        return None
    return mod


def is_available() -> bool:
    """True when ``import fvdb`` works and exposes GridBatch and JaggedTensor."""
    return _module() is not None


def _require():
    mod = _module()
    if mod is None:
        raise RuntimeError("fVDB is not importable here; install fvdb-core 0.6.0 (CUDA) or use the torch backend")
    return mod


def to_fvdb(grid: GridBatch):
    """An ``fvdb.GridBatch`` with the same voxels, voxel sizes and origins as ``grid``."""
    if not isinstance(grid, GridBatch):
        raise TypeError(f"to_fvdb expects a GridBatch, got {type(grid).__name__}")
    fv = _require()
    ijk = fv.JaggedTensor.from_data_and_offsets(grid.ijk.jdata, grid.joffsets)
    return fv.GridBatch.from_ijk(ijk, voxel_sizes=grid.voxel_sizes, origins=grid.origins)


def from_fvdb(fgrid) -> GridBatch:
    """Our `GridBatch` with the voxels, voxel sizes and origins of an ``fvdb.GridBatch``."""
    fijk = fgrid.ijk
    ijk = JaggedTensor.from_data_and_offsets(fijk.jdata, fijk.joffsets)
    return GridBatch.from_ijk(ijk, voxel_sizes=fgrid.voxel_sizes, origins=fgrid.origins)


@dataclass(frozen=True)
class VoxelOrder:
    """Row permutations between our voxel order and fVDB's for the same voxels.

    Attributes:
        to_fvdb: ``data_fvdb = data_ours[to_fvdb]``. Shape: (N,), int64.
        to_ours: ``data_ours = data_fvdb[to_ours]``. Shape: (N,), int64.
    """

    to_fvdb: torch.Tensor
    to_ours: torch.Tensor

    @classmethod
    def between(cls, grid: GridBatch, fgrid) -> "VoxelOrder":
        """Match rows by coordinates: each fVDB voxel's ijk looked up in ``grid`` (cumulative index)."""
        if int(fgrid.total_voxels) != grid.total_voxels or int(fgrid.grid_count) != grid.grid_count:
            raise ValueError(f"grids differ: ours {grid.grid_count} grids / {grid.total_voxels} voxels, "
                             f"fVDB {fgrid.grid_count} / {fgrid.total_voxels}; convert with to_fvdb first")
        fijk = fgrid.ijk
        ours_ijk = JaggedTensor.from_data_and_offsets(fijk.jdata, fijk.joffsets.to(fijk.jdata.device))
        to_fvdb = grid.ijk_to_index(ours_ijk, cumulative=True).jdata.to(torch.int64)
        if to_fvdb.numel() and bool((to_fvdb < 0).any()):
            raise ValueError("the fVDB grid holds voxels the GridBatch lacks; they are not the same topology")
        to_ours = torch.empty_like(to_fvdb)
        to_ours[to_fvdb] = torch.arange(to_fvdb.numel(), device=to_fvdb.device)
        return cls(to_fvdb, to_ours)

    def features_to_fvdb(self, data: torch.Tensor) -> torch.Tensor:
        """Rows of ``data`` (N, *) in fVDB's order."""
        return data.index_select(0, self.to_fvdb.to(data.device))

    def features_to_ours(self, data: torch.Tensor) -> torch.Tensor:
        """Rows of ``data`` (N, *) given in fVDB's order, back in ours."""
        return data.index_select(0, self.to_ours.to(data.device))


def weight_to_fvdb(weight: torch.Tensor, kernel_size: tuple[int, int, int], weight_map: str = "as_is") -> torch.Tensor:
    """Our (K, C_in, C_out) x-major weight as fVDB's / conv3d's (C_out, C_in, kx, ky, kz);
    ``weight_map="flipped"`` mirrors the kernel (tap d -> -d)."""
    kx, ky, kz = kernel_size
    if weight.dim() != 3 or weight.shape[0] != kx * ky * kz:
        raise ValueError(f"weight must be ({kx * ky * kz}, C_in, C_out), got {tuple(weight.shape)}")
    w = weight.reshape(kx, ky, kz, weight.shape[1], weight.shape[2]).permute(4, 3, 0, 1, 2)
    if weight_map == "flipped":
        w = w.flip(2, 3, 4)
    elif weight_map != "as_is":
        raise ValueError(f"weight_map must be one of {WEIGHT_MAPS}, got {weight_map!r}")
    return w.contiguous()


class FVDBConvolution:
    """A `ConvolutionPlan` re-expressed for fVDB: built once, executed on our voxel order."""

    def __init__(self, plan, fplan, src_order: VoxelOrder, dst_order: VoxelOrder, src_offsets,
                 weight_map: str = "as_is") -> None:
        self.plan, self.fplan = plan, fplan
        self.src_order, self.dst_order = src_order, dst_order
        self._src_offsets = src_offsets
        self.weight_map = weight_map

    @classmethod
    def from_plan(cls, plan, weight_map: str = "as_is") -> "FVDBConvolution":
        """Build fVDB grids, permutations and the ``fvdb.ConvolutionPlan`` (forward or transposed)."""
        fv = _require()
        fsrc = to_fvdb(plan.source_grid)
        fdst = fsrc if plan.target_grid is plan.source_grid else to_fvdb(plan.target_grid)
        build = fv.ConvolutionPlan.from_grid_batch_transposed if plan.transposed else fv.ConvolutionPlan.from_grid_batch
        fplan = build(kernel_size=list(plan.kernel_size), stride=plan.stride, source_grid=fsrc, target_grid=fdst)
        src = VoxelOrder.between(plan.source_grid, fsrc)
        dst = src if fdst is fsrc else VoxelOrder.between(plan.target_grid, fdst)
        return cls(plan, fplan, src, dst, fsrc.joffsets, weight_map)

    def execute(self, data, weight: torch.Tensor, bias: torch.Tensor | None = None):
        """Same contract as `ConvolutionPlan.execute`: data (N_in, C_in) or JaggedTensor, our weight layout."""
        fv = _require()
        x = data.jdata if isinstance(data, JaggedTensor) else data
        if x.dim() != 2 or x.shape[0] != self.plan.source_grid.total_voxels:
            raise ValueError(f"data must be ({self.plan.source_grid.total_voxels}, C_in), got {tuple(x.shape)}")
        fx = fv.JaggedTensor.from_data_and_offsets(self.src_order.features_to_fvdb(x),
                                                   self._src_offsets.to(x.device))
        w = weight_to_fvdb(weight, self.plan.kernel_size, self.weight_map).to(x.dtype)
        out = self.dst_order.features_to_ours(self.fplan.execute(fx, w).jdata)
        if bias is not None:
            out = out + bias.to(out.dtype)
        return self.plan.target_grid.jagged_like(out) if isinstance(data, JaggedTensor) else out


def _probe_grids(kernel_size, stride: int, transposed: bool, device: str):
    """A small random (source, target) pair for the given convolution, on ``device``."""
    gen = torch.Generator().manual_seed(0)
    src = GridBatch.from_ijk(torch.randint(0, 6, (60, 3), generator=gen).to(device))
    if transposed:
        return src, src.refined_grid(stride).dilated_grid(max(kernel_size) // 2)
    return src, (src if stride == 1 else src.conv_grid(kernel_size[0], stride))


@functools.lru_cache(maxsize=None)
def weight_map_for(kernel_size: tuple[int, int, int], stride: int, transposed: bool, device: str) -> str | None:
    """Which `WEIGHT_MAPS` entry makes fVDB agree with the torch backend on ``device``, or None.

    Checked once per (kernel, stride, direction, device) on a small random grid, in float32.
    """
    from xcube_core.sparse.conv_plan import ConvolutionPlan

    src, dst = _probe_grids(kernel_size, stride, transposed, device)
    plan = ConvolutionPlan.from_grid_batch(kernel_size, stride, src, dst, transposed)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(src.total_voxels, 3, generator=gen).to(device)
    w = torch.randn(plan.num_offsets, 3, 2, generator=gen).to(device)
    with torch.no_grad():
        ref = plan.execute(x, w)
        for weight_map in WEIGHT_MAPS:
            got = FVDBConvolution.from_plan(plan, weight_map).execute(x, w)
            if torch.allclose(got, ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max().clamp(min=1))):
                return weight_map
    logger.warning("fVDB disagrees with the torch backend for kernel %s, stride %d%s on %s; "
                   "using the torch backend there", kernel_size, stride, " (transposed)" if transposed else "",
                   device)
    return None


def convolution_for(plan) -> "FVDBConvolution | None":
    """The fVDB twin of ``plan`` (built once, kept in ``plan.backend_plans``), or None where fVDB does
    not compute what the torch backend computes (then the torch backend runs)."""
    if name not in plan.backend_plans:
        weight_map = weight_map_for(tuple(plan.kernel_size), plan.stride, plan.transposed, str(plan.source_grid.device))
        plan.backend_plans[name] = None if weight_map is None else FVDBConvolution.from_plan(plan, weight_map)
    return plan.backend_plans[name]
