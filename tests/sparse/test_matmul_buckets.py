"""Bucketed row counts for CPU low-precision matmuls (the server's memory growth, issue 13)."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from xcube_core.sparse.ops.matmul import bucket_rows, linear_rows, mm_rows


def test_buckets_are_tight_and_few():
    for n in list(range(1, 5000)) + [65_537, 1_000_003]:
        m = bucket_rows(n)
        assert m >= n and bucket_rows(m) == m
        assert m <= max(64, n + n // 8), (n, m)  # at most 12.5 % padding above 64 rows
    octave = {bucket_rows(n) for n in range(4097, 8193)}
    assert len(octave) == 8


def test_bucketed_products_match_the_plain_ones():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 16, generator=gen)
    w = torch.randn(16, 24, generator=gen)
    index = torch.randint(0, 1000, (333,), generator=gen)
    want = x[index].double() @ w.double()
    got = mm_rows(x.bfloat16(), w.bfloat16(), index)
    assert got.shape == (333, 24) and got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), want, rtol=2e-2, atol=0.15)
    assert torch.equal(mm_rows(x, w, index), x[index] @ w)  # float32: the plain product, untouched
    lin = torch.nn.Linear(16, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_rows(x[:333], lin.weight, lin.bias)
    assert got.shape == (333, 5)
    torch.testing.assert_close(got.double(), lin(x[:333]).double(), rtol=2e-2, atol=0.1)


class _MatmulRows(TorchDispatchMode):
    """Row counts of every bfloat16 mm/addmm that runs under it."""

    def __init__(self):
        super().__init__()
        self.rows: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if name.startswith(("aten.mm", "aten.addmm")):
            a = args[1] if name.startswith("aten.addmm") else args[0]
            if a.dtype == torch.bfloat16:
                self.rows.add(int(a.shape[0]))
        return func(*args, **(kwargs or {}))


def test_a_bf16_pipeline_only_multiplies_bucketed_row_counts():
    """Every scene has new voxel counts; before the fix each became a new matmul shape (a new oneDNN
    primitive, cached for good) and the server's RSS grew with every distinct seed."""
    from xcube_core.pipeline import XCubePipeline

    pipe = XCubePipeline.tiny(seed=0)
    pipe.precision = "bf16"
    per_seed, voxels = [], set()
    for seed in (1, 2, 3):
        seen = _MatmulRows()
        with seen:
            voxels.add(tuple(level.num_voxels for level in pipe.generate("a village", seed=seed, steps=2)))
        per_seed.append(seen.rows)
    assert all(per_seed), "no bfloat16 matmul ran"
    assert len(voxels) == 3, "the scenes did not differ"
    fixed = set.intersection(*per_seed)  # batch-sized products (time and text embeddings): same every scene
    varying = set.union(*per_seed) - fixed
    off_bucket = sorted(n for n in varying if bucket_rows(n) != n)
    assert not off_bucket, f"matmuls whose row count follows the scene, unbucketed: {off_bucket[:10]}"
