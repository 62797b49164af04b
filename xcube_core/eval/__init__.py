"""Evaluation: distribution metrics (MMD / COV / 1-NNA on Chamfer), voxel IoU, class fractions,
prompt control, and the runners behind ``xcube eval``.

Modules: `pointclouds` (surface sampling, per-shape normalisation), `metrics` (Chamfer, MMD, COV,
1-NNA, IoU, class fractions), `prompt_control` (attribute statistics, prompt pairs, scoring),
`runners` (generation / VAE / prompt evaluations over a pipeline), `report` (tables and JSON).
"""

from xcube_core.eval.metrics import (  # noqa: F401
    batched_voxel_iou,
    chamfer_distance,
    class_fractions,
    cov_from_matrix,
    distribution_metrics,
    histogram_distance,
    matched_semantic_accuracy,
    mmd_from_matrix,
    one_nna_from_matrices,
    pairwise_chamfer,
    voxel_iou,
)
from xcube_core.eval.pointclouds import (  # noqa: F401
    exposed_faces,
    level_point_cloud,
    normalize_points,
    sample_surface_points,
    surface_voxel_mask,
)
