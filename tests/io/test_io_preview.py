"""PNG previews: sky background, object pixels in class colours, shading, sizes and empty levels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from io_levels import box_ijk, make_level, sphere_ijk
from PIL import Image

from xcube_core.classes import CLASS_COLORS
from xcube_core.errors import InvalidInputError
from xcube_core.io import preview


def _sky_mask(image: np.ndarray) -> np.ndarray:
    sky = preview._downsample(preview._sky(image.shape[1], image.shape[0]), 1)
    return np.all(np.abs(image.astype(int) - sky.astype(int)) <= 1, axis=2)


def test_preview_shows_the_level_in_its_class_colour_over_sky(tmp_path):
    level = make_level(box_ijk((0, 0, 0), (20, 20, 8)), voxel_size=0.25)
    level.semantics = torch.full((level.num_voxels,), 6)  # vehicle blue
    path = preview.save_preview(level, tmp_path / "level.png", width=320, height=240)
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (240, 320, 3)
    sky = _sky_mask(image)
    assert sky[0, 0] and sky[-1, -1] and sky[0, -1]  # corners show the sky
    assert 0.1 < (~sky).mean() < 0.9  # the box fills a good part of the frame, centred
    ys, xs = np.nonzero(~sky)
    assert abs(xs.mean() - 160) < 30 and abs(ys.mean() - 120) < 30
    obj = image[~sky].astype(float)
    hue = obj / np.maximum(obj.sum(1, keepdims=True), 1)
    want = np.asarray(CLASS_COLORS[6], float) / sum(CLASS_COLORS[6])
    assert np.median(np.abs(hue - want).sum(1)) < 0.08  # shaded, but the class colour's hue
    # three visible faces of the box get three different brightnesses (lambert + sky light)
    levels = np.unique((obj.sum(1) // 12).astype(int))
    assert len(levels) >= 3


def test_preview_of_empty_and_large_levels_and_bad_sizes():
    empty = make_level(np.zeros((0, 3), np.int32))
    assert _sky_mask(preview.render_preview(empty, width=64, height=48)).all()
    sphere = make_level(sphere_ijk(30.0), voxel_size=0.1)  # ~113k voxels
    image = preview.render_preview(sphere, width=200, height=150, supersample=1)
    assert image.dtype == np.uint8 and image.shape == (150, 200, 3) and (~_sky_mask(image)).any()
    with pytest.raises(InvalidInputError, match="preview size"):
        preview.render_preview(sphere, width=8, height=8)
