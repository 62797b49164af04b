"""JaggedTensor: construction, offsets, jidx, item access, jagged_like and errors."""

from __future__ import annotations

import pytest
import torch

from xcube_core.sparse import GridBatch, JaggedTensor


def _items(generator, sizes=(3, 0, 5), tail=(2,), dtype=torch.float32):
    return [torch.randn(n, *tail, generator=generator).to(dtype) for n in sizes]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.bool])
def test_list_construction_offsets_jidx_and_items(dtype, generator):
    items = _items(generator, dtype=dtype)
    jt = JaggedTensor(items)
    assert jt.num_tensors == len(jt) == 3
    assert jt.joffsets.tolist() == [0, 3, 3, 8] and jt.joffsets.dtype == torch.int64
    assert jt.lshape == [3, 0, 5] and jt.eshape == (2,) and jt.dtype == dtype
    assert jt.jidx.dtype == torch.int32 and jt.jidx.tolist() == [0] * 3 + [2] * 5
    assert torch.equal(jt.jdata, torch.cat(items))
    for i, t in enumerate(items):
        assert torch.equal(jt[i], t)
        assert torch.equal(jt[i - 3], t)  # negative indices count from the end
    assert all(torch.equal(a, b) for a, b in zip(jt.unbind(), items))
    assert all(torch.equal(a, b) for a, b in zip(iter(jt), items))


def test_single_tensor_is_one_item(generator):
    x = torch.randn(4, 3, 2, generator=generator)
    jt = JaggedTensor(x)
    assert jt.num_tensors == 1 and jt.lshape == [4] and jt.eshape == (3, 2)
    assert torch.equal(jt[0], x) and jt.jidx.tolist() == [0, 0, 0, 0]


def test_from_data_and_offsets_shares_storage(generator):
    data = torch.randn(6, 2, generator=generator)
    jt = JaggedTensor.from_data_and_offsets(data, torch.tensor([0, 2, 2, 6], dtype=torch.int32))
    assert jt.joffsets.dtype == torch.int64 and jt.lshape == [2, 0, 4]
    assert jt.jdata.data_ptr() == data.data_ptr()  # wraps, no copy
    assert jt[1].shape == (0, 2) and torch.equal(jt[2], data[2:])
    assert jt.jidx.tolist() == [0, 0, 2, 2, 2, 2]


def test_from_data_and_jidx_groups_rows(generator):
    data = torch.randn(5, 3, generator=generator)
    jt = JaggedTensor.from_data_and_jidx(data, torch.tensor([0, 0, 2, 2, 2]), 4)
    assert jt.joffsets.tolist() == [0, 2, 2, 5, 5] and jt.lshape == [2, 0, 3, 0]


def test_jagged_like_keeps_layout_and_checks_rows(generator):
    jt = JaggedTensor(_items(generator))
    new = torch.arange(8 * 4).reshape(8, 4)
    like = jt.jagged_like(new)
    assert torch.equal(like.joffsets, jt.joffsets) and like.eshape == (4,) and like.dtype == torch.int64
    assert torch.equal(like[2], new[3:])
    with pytest.raises(ValueError, match="7 rows, layout has 8"):
        jt.jagged_like(new[:7])


def test_conversions(generator):
    jt = JaggedTensor(_items(generator, dtype=torch.float64))
    assert jt.to(torch.float32).dtype == torch.float32 and jt.float().dtype == torch.float32
    assert torch.equal(jt.to(torch.float32).joffsets, jt.joffsets)
    w = jt.jagged_like(jt.jdata.clone().requires_grad_())
    assert w.requires_grad and not w.detach().requires_grad
    assert "lshape=[3, 0, 5]" in repr(jt) and jt.device == torch.device("cpu")


def test_matches_grid_layout(generator):
    grid = GridBatch.from_ijk([torch.randint(0, 4, (30, 3), generator=generator), torch.zeros(0, 3, dtype=torch.int64)])
    ijk = grid.ijk
    assert isinstance(ijk, JaggedTensor) and torch.equal(ijk.joffsets, grid.joffsets)
    assert torch.equal(ijk.jidx, grid.jidx) and ijk[1].shape == (0, 3)


def test_construction_errors(generator):
    with pytest.raises(ValueError, match="at least one tensor"):
        JaggedTensor([])
    with pytest.raises(TypeError, match="torch.Tensor"):
        JaggedTensor([torch.zeros(2, 3), [1, 2, 3]])
    with pytest.raises(ValueError, match="share all dims"):
        JaggedTensor([torch.zeros(2, 3), torch.zeros(2, 4)])
    with pytest.raises(ValueError, match="share all dims"):
        JaggedTensor([torch.zeros(2), torch.tensor(1.0)])  # 0-d item has no rows


def test_offsets_errors():
    data = torch.zeros(4, 2)
    with pytest.raises(TypeError, match="two torch.Tensors"):
        JaggedTensor.from_data_and_offsets(data, [0, 4])
    with pytest.raises(ValueError, match=r"shape \(B \+ 1,\)"):
        JaggedTensor.from_data_and_offsets(data, torch.tensor([4]))
    with pytest.raises(ValueError, match="start at 0 and end at len"):
        JaggedTensor.from_data_and_offsets(data, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="start at 0 and end at len"):
        JaggedTensor.from_data_and_offsets(data, torch.tensor([1, 4]))
    with pytest.raises(ValueError, match="non-decreasing"):
        JaggedTensor.from_data_and_offsets(data, torch.tensor([0, 3, 1, 4]))


def test_indexing_errors(generator):
    jt = JaggedTensor(_items(generator))
    with pytest.raises(IndexError, match="out of range"):
        jt[3]
    with pytest.raises(IndexError, match="out of range"):
        jt[-4]
    with pytest.raises(TypeError, match="must be an int"):
        jt[0:2]
