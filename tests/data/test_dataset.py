"""VoxelDataset + collate: GridBatch per level with attributes in the engine's voxel order."""

from __future__ import annotations

import pytest
import torch

from xcube_core.data.dataset import VoxelDataset, collate_voxel_batch
from xcube_core.data.procedural import SceneConfig, generate_scene
from xcube_core.data.storage import manifest_row, save_sample, write_manifest
from xcube_core.errors import DataError

CONFIG = SceneConfig(extent=(24.0, 24.0), height=16.0, voxel_size=0.5)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    rows = []
    for i in range(4):
        s = generate_scene(100 + i, CONFIG, num_levels=3)
        name = f"s{i}.safetensors"
        rows.append(manifest_row(s, name, "train" if i < 3 else "val", save_sample(s, root / name)))
    write_manifest(rows, root)
    return root


def _by_ijk(ijk, values):
    return {tuple(k): v for k, v in zip(ijk.tolist(), values.tolist())}


def test_collate_orders_attributes_like_the_grid(dataset_dir):
    ds = VoxelDataset(dataset_dir, split="train")
    assert len(ds) == 3
    items = [ds[i] for i in range(3)]
    batch = collate_voxel_batch(items)
    assert len(batch["grids"]) == 3 and batch["captions"] == [it["caption"] for it in items]
    for lvl, grid in enumerate(batch["grids"]):
        assert grid.grid_count == 3
        assert grid.voxel_sizes[0].tolist() == [items[0]["voxel_sizes"][lvl]] * 3
        for b in range(3):
            ijk = grid.ijk[b]
            n = batch["normals"][lvl][b]
            s = batch["semantics"][lvl][b]
            assert n.dtype == torch.float32 and s.dtype == torch.int64
            ref_n = _by_ijk(items[b]["ijk"][lvl], items[b]["normals"][lvl])
            ref_s = _by_ijk(items[b]["ijk"][lvl], items[b]["semantics"][lvl])
            assert len(ref_n) == len(ijk)
            for key, nv, sv in zip(ijk.tolist(), n.tolist(), s.tolist()):
                assert ref_n[tuple(key)] == nv and ref_s[tuple(key)] == sv
    # early-dilation targets contain the plain coarse grids
    assert len(batch["dilated"]) == 2
    for lvl, dil in enumerate(batch["dilated"]):
        assert (dil.num_voxels >= batch["grids"][lvl].num_voxels).all()
        found = dil.ijk_to_index(batch["grids"][lvl].ijk)
        assert (found.jdata >= 0).all()


def test_dataloader_with_workers_and_augmentation(dataset_dir):
    ds = VoxelDataset(dataset_dir, augment=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_voxel_batch)
    seen = 0
    for batch in loader:
        seen += batch["grids"][0].grid_count
        fine, coarse = batch["grids"][2], batch["grids"][1]
        for b in range(fine.grid_count):
            parents = torch.div(fine.ijk[b], 2, rounding_mode="floor")
            assert (coarse.grid_at(b).ijk_to_index(parents) >= 0).all()  # nesting survives augmentation
    assert seen == 4


def test_corrupt_sample_error_names_the_file(dataset_dir, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(dataset_dir, root)
    (root / "s1.safetensors").write_bytes(b"\x00" * 100)
    ds = VoxelDataset(root)
    ds[0]
    with pytest.raises(DataError, match="s1.safetensors"):
        ds[1]
    with pytest.raises(DataError, match="manifest"):
        VoxelDataset(tmp_path / "nowhere")
