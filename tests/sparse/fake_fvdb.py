"""A fake ``fvdb`` with the fvdb-core 0.6.0 API surface used by the adapter, for CPU-only tests.

It exercises the adapter's plumbing (conversions, voxel-order permutations, routing from ``nn``,
orientation detection). Whether the real fVDB computes what our torch backend computes is checked
against the real module on a GPU (tests/sparse/test_fvdb_routing.py).
"""

from __future__ import annotations

import itertools
import sys
import types

import pytest
import torch

from xcube_core.sparse.backends import fvdb as fvdb_backend


class _FakeJagged:
    def __init__(self, tensors):
        tensors = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)
        counts = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64)
        self.jdata = torch.cat(tensors)
        self.joffsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])

    @classmethod
    def from_data_and_offsets(cls, data, offsets):
        jt = cls.__new__(cls)
        jt.jdata, jt.joffsets = data, offsets.to(torch.int64)
        return jt

    @property
    def jidx(self):
        counts = self.joffsets[1:] - self.joffsets[:-1]
        return torch.repeat_interleave(torch.arange(counts.numel(), dtype=torch.int32), counts)


def _leaf_order(ijk: torch.Tensor) -> torch.Tensor:
    """A NanoVDB-like order: 8^3 leaf blocks by (k, j, i) of the block, then z-fastest inside."""
    blk, loc = torch.div(ijk, 8, rounding_mode="floor"), ijk % 8
    key = [blk[:, 2], blk[:, 1], blk[:, 0], loc[:, 0], loc[:, 1], loc[:, 2]]
    order = torch.arange(ijk.shape[0])
    for col in reversed(key):  # stable sorts, least significant first
        order = order[torch.sort(col[order], stable=True).indices]
    return order


class _FakeGridBatch:
    def __init__(self, items, voxel_sizes, origins):
        self._items = items  # list of (N_b, 3) int32 in fVDB's order
        self.voxel_sizes, self.origins = voxel_sizes, origins

    @classmethod
    def from_ijk(cls, ijk, voxel_sizes=1, origins=0):
        if not isinstance(ijk, _FakeJagged):
            raise TypeError("fvdb.GridBatch.from_ijk takes an fvdb.JaggedTensor")
        items = []
        for b in range(ijk.joffsets.numel() - 1):
            v = torch.unique(ijk.jdata[ijk.joffsets[b]: ijk.joffsets[b + 1]].to(torch.int32), dim=0)
            items.append(v[_leaf_order(v)])
        n = len(items)
        vs = torch.as_tensor(voxel_sizes, dtype=torch.float32).expand(n, 3).clone()
        org = torch.as_tensor(origins, dtype=torch.float32).expand(n, 3).clone()
        return cls(items, vs, org)

    grid_count = property(lambda self: len(self._items))
    total_voxels = property(lambda self: sum(v.shape[0] for v in self._items))
    ijk = property(lambda self: _FakeJagged(self._items))
    joffsets = property(lambda self: self.ijk.joffsets)

    def ijk_to_index(self, ijk, cumulative=False):
        out, starts = [], self.joffsets.tolist()
        for b in range(ijk.joffsets.numel() - 1):
            table = {tuple(v): r + (starts[b] if cumulative else 0) for r, v in enumerate(self._items[b].tolist())}
            q = ijk.jdata[ijk.joffsets[b]: ijk.joffsets[b + 1]].tolist()
            out.append(torch.tensor([table.get(tuple(v), -1) for v in q], dtype=torch.int64))
        return _FakeJagged(out)


class _FakePlan:
    """Dense-semantics reference: conv3d cross-correlation, weights (C_out, C_in, kx, ky, kz)."""

    def __init__(self, ks, stride, src, dst):
        self.ks, self.stride, self.src, self.dst = ks, stride, src, dst

    transposed = False

    @classmethod
    def from_grid_batch(cls, kernel_size, stride, source_grid, target_grid=None):
        ks = [kernel_size] * 3 if isinstance(kernel_size, int) else list(kernel_size)
        return cls(ks, stride, source_grid, target_grid or source_grid)

    @classmethod
    def from_grid_batch_transposed(cls, kernel_size, stride, source_grid, target_grid=None):
        plan = cls.from_grid_batch(kernel_size, stride, source_grid, target_grid)
        plan.transposed = True
        return plan

    def execute(self, data, weights):
        """Forward: output v reads input v * stride + t - lo through tap t. Transposed: input v scatters
        to v * stride + t - lo through the MIRRORED tap (K-1-t), a transposed kernel oriented the other
        way from ours, so the adapter must detect and flip it."""
        x = data.jdata
        out = x.new_zeros(self.dst.total_voxels, weights.shape[0])
        scan, look = (self.src, self.dst) if self.transposed else (self.dst, self.src)
        s0, l0 = scan.joffsets.tolist(), look.joffsets.tolist()
        for b in range(self.dst.grid_count):
            rows = {tuple(v): l0[b] + r for r, v in enumerate(look._items[b].tolist())}
            for q, v in enumerate(scan._items[b].tolist()):
                for a in itertools.product(*(range(k) for k in self.ks)):
                    hit = rows.get(tuple(c * self.stride + t - (k - 1) // 2 for c, t, k in zip(v, a, self.ks)))
                    if hit is None:
                        continue
                    if self.transposed:
                        m = tuple(k - 1 - t for t, k in zip(a, self.ks))
                        out[hit] += x[s0[b] + q] @ weights[:, :, m[0], m[1], m[2]].t()
                    else:
                        out[s0[b] + q] += x[hit] @ weights[:, :, a[0], a[1], a[2]].t()
        return _FakeJagged.from_data_and_offsets(out, self.dst.joffsets)


@pytest.fixture
def fake_fvdb(monkeypatch):
    mod = types.ModuleType("fvdb")
    mod.JaggedTensor, mod.GridBatch, mod.ConvolutionPlan = _FakeJagged, _FakeGridBatch, _FakePlan
    monkeypatch.setitem(sys.modules, "fvdb", mod)
    fvdb_backend.weight_map_for.cache_clear()  # orientation checks belong to the module they probed
    yield mod
    fvdb_backend.weight_map_for.cache_clear()
