"""Distribution metrics for generated shapes: Chamfer distance, MMD, COV, 1-NNA; voxel IoU; class fractions.

Definitions (Achlioptas et al. 2018, "Learning Representations and Generative Models for 3D Point
Clouds"; Yang et al. 2019, "PointFlow"), with ``S_g`` the generated and ``S_r`` the reference set of
point clouds and ``D`` the Chamfer distance:

* Chamfer distance (PointFlow's convention, squared Euclidean, mean per direction):
  ``CD(X, Y) = mean_{x in X} min_{y in Y} |x - y|^2 + mean_{y in Y} min_{x in X} |x - y|^2``.
* MMD (minimum matching distance, fidelity): ``1/|S_r| * sum_{Y in S_r} min_{X in S_g} D(X, Y)``.
* COV (coverage, diversity): the fraction of reference shapes that are the nearest reference of at
  least one generated shape, ``|{argmin_{Y in S_r} D(X, Y) : X in S_g}| / |S_r|``.
* 1-NNA (1-nearest-neighbour accuracy): leave-one-out 1-NN classification of ``S_g ∪ S_r`` into
  "generated" / "reference"; ``(sum_{X in S_g} 1[N_X in S_g] + sum_{Y in S_r} 1[N_Y in S_r]) /
  (|S_g| + |S_r|)``. 50 % is ideal (indistinguishable sets); 100 % means fully separable; values far
  below 50 % mean the generated shapes sit on top of reference shapes (memorisation: an exact copy
  of the reference set scores 0 %). Ties go to the lower index (generated shapes come first).

All pairwise work runs through `pairwise_chamfer`, which chunks over pairs so that hundreds of
2048-point clouds fit in a fixed memory budget.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

from xcube_core.errors import InvalidInputError
from xcube_core.eval.pointclouds import _check_ijk, voxel_keys

log = logging.getLogger(__name__)

DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024  # per chunk of (pairs, P, Q) float32 distance matrices


def _as_cloud_batch(x, name: str) -> torch.Tensor:
    if isinstance(x, (list, tuple)):
        if len(x) == 0:
            raise InvalidInputError(f"{name} is empty; pass at least one point cloud")
        sizes = {int(t.shape[0]) for t in x}
        if len(sizes) != 1:
            raise InvalidInputError(f"{name}: all clouds must have the same number of points, got "
                                    f"{sorted(sizes)}; sample a fixed count (e.g. 2048) per shape")
        x = torch.stack(list(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor (B, P, 3) or a list of (P, 3) tensors, got {type(x).__name__}")
    if x.dim() != 3 or x.shape[-1] != 3 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InvalidInputError(f"{name} must have shape (B, P, 3) with B, P >= 1, got {tuple(x.shape)}")
    return x.to(torch.float32)


def chamfer_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Chamfer distance between matched pairs of clouds (see module docstring for the formula).

    Args:
        x: clouds. Shape: (K, P, 3), float.
        y: clouds. Shape: (K, Q, 3), float.

    Returns:
        ``CD(x[k], y[k])``. Shape: (K,), float32.
    """
    x, y = x.to(torch.float32), y.to(torch.float32)
    # Chamfer is translation invariant; centring each pair keeps the GEMM expansion below exact-ish
    # in float32 also for clouds far from the origin (e.g. unnormalised metres).
    c = x.mean(dim=1, keepdim=True)
    x, y = x - c, y - c
    # |x - y|^2 = |x|^2 + |y|^2 - 2 x.y, computed as one batched GEMM (what torch.cdist does in
    # its "use_mm_for_euclid_dist" mode, without the square root we would only undo).
    xx = (x * x).sum(-1, keepdim=True)  # (K, P, 1)
    yy = (y * y).sum(-1).unsqueeze(1)  # (K, 1, Q)
    d = torch.baddbmm(xx + yy, x, y.transpose(1, 2), alpha=-2.0).clamp_min_(0.0)  # (K, P, Q)
    return d.min(dim=2).values.mean(dim=1) + d.min(dim=1).values.mean(dim=1)


def pairwise_chamfer(
    a: torch.Tensor | Sequence[torch.Tensor],
    b: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    backend: str = "auto",
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    progress: bool = False,
    desc: str = "chamfer",
) -> torch.Tensor:
    """Chamfer distance between every cloud of ``a`` and every cloud of ``b``.

    Two exact backends give the same numbers (up to float rounding):

    * ``"torch"``: brute force, all pairwise squared distances by batched GEMM (like ``torch.cdist``),
      chunked over pairs so one chunk's (pairs, P, Q) tensors stay within ``memory_bytes``. Best on
      a GPU.
    * ``"kdtree"``: one ``scipy.spatial.cKDTree`` per cloud and nearest-neighbour queries of all other
      clouds' points at once. On CPU about 25x faster than brute force for 2048-point clouds
      (measured here: 9 ms vs 200+ ms per pair on 2 busy cores).

    ``"auto"`` picks ``"torch"`` for CUDA tensors and ``"kdtree"`` otherwise.

    Args:
        a: clouds. Shape: (Na, P, 3), float, or a list of (P, 3).
        b: clouds. Shape: (Nb, Q, 3); ``None`` means ``b = a`` (symmetric; diagonal 0).
        backend: ``"auto"``, ``"torch"`` or ``"kdtree"``.
        memory_bytes: budget for one chunk of the torch backend.
        progress: show a tqdm bar.
        desc: label of the bar.

    Returns:
        ``D[i, j] = CD(a[i], b[j])``. Shape: (Na, Nb), float32, on ``a``'s device.
    """
    a = _as_cloud_batch(a, "a")
    symmetric = b is None
    b = a if symmetric else _as_cloud_batch(b, "b").to(a.device)
    if backend == "auto":
        backend = "torch" if a.is_cuda else "kdtree"
    if backend == "kdtree":
        return _pairwise_chamfer_kdtree(a, None if symmetric else b, progress=progress, desc=desc)
    if backend != "torch":
        raise InvalidInputError(f"backend must be 'auto', 'torch' or 'kdtree', got {backend!r}")
    na, nb = a.shape[0], b.shape[0]
    if symmetric:
        ii, jj = torch.triu_indices(na, na, offset=1, device=a.device)
    else:
        ii = torch.arange(na, device=a.device).repeat_interleave(nb)
        jj = torch.arange(nb, device=a.device).repeat(na)
    out = torch.zeros(na, nb, dtype=torch.float32, device=a.device)
    per_pair = 4 * a.shape[1] * b.shape[1] * 3  # distance matrix + temporaries of the same size
    chunk = max(1, int(memory_bytes) // per_pair)
    starts = _bar(range(0, ii.numel(), chunk), progress, desc, math.ceil(ii.numel() / chunk))
    with torch.no_grad():
        for s in starts:
            i, j = ii[s:s + chunk], jj[s:s + chunk]
            out[i, j] = chamfer_distance(a[i], b[j])
    return out + out.T if symmetric else out


def _bar(it, progress: bool, desc: str, total: int):
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, total=total, leave=False)


def _mean_sq_nn(tree, query, n_clouds: int, n_points: int):
    """Mean over each query cloud's points of the squared distance to the tree's cloud. Shape: (n_clouds,)."""
    import numpy as np

    dist, _ = tree.query(query, k=1, workers=-1)
    return np.square(dist).reshape(n_clouds, n_points).mean(axis=1)


def _pairwise_chamfer_kdtree(a: torch.Tensor, b: torch.Tensor | None, *, progress: bool,
                             desc: str) -> torch.Tensor:
    import numpy as np
    from scipy.spatial import cKDTree

    an = a.detach().cpu().numpy().astype(np.float64)
    na, p = an.shape[:2]
    a_flat = an.reshape(-1, 3)
    if b is None:
        # m[i, j] = mean over points of cloud j of the squared distance to cloud i
        m = np.stack([_mean_sq_nn(cKDTree(an[i]), a_flat, na, p)
                      for i in _bar(range(na), progress, desc, na)])
        out = m + m.T
        np.fill_diagonal(out, 0.0)
    else:
        bn = b.detach().cpu().numpy().astype(np.float64)
        nb, q = bn.shape[:2]
        b_flat = bn.reshape(-1, 3)
        bar = iter(_bar(range(na + nb), progress, desc, na + nb))
        # b_to_a[i, j] = mean_{y in b_j} min_{x in a_i} |x-y|^2 ; a_to_b[i, j] = mean_{x in a_i} min_{y in b_j}
        b_to_a = np.stack([_mean_sq_nn(cKDTree(an[i]), b_flat, nb, q) for i, _ in zip(range(na), bar)])
        a_to_b = np.stack([_mean_sq_nn(cKDTree(bn[j]), a_flat, na, p) for j, _ in zip(range(nb), bar)]).T
        out = a_to_b + b_to_a
    return torch.from_numpy(out.astype(np.float32)).to(a.device)


def mmd_from_matrix(d_gr: torch.Tensor) -> float:
    """MMD: mean over reference shapes of the distance to their closest generated shape.

    Args:
        d_gr: distances generated x reference. Shape: (Ng, Nr).
    """
    return float(d_gr.min(dim=0).values.mean())


def cov_from_matrix(d_gr: torch.Tensor) -> float:
    """COV: fraction of reference shapes matched as nearest by at least one generated shape.

    Args:
        d_gr: distances generated x reference. Shape: (Ng, Nr).
    """
    return float(torch.unique(d_gr.argmin(dim=1)).numel()) / d_gr.shape[1]


def one_nna_from_matrices(d_gg: torch.Tensor, d_rr: torch.Tensor, d_gr: torch.Tensor) -> dict[str, float]:
    """1-NNA: leave-one-out 1-NN accuracy on the union of generated and reference sets.

    Args:
        d_gg: generated x generated distances. Shape: (Ng, Ng).
        d_rr: reference x reference distances. Shape: (Nr, Nr).
        d_gr: generated x reference distances. Shape: (Ng, Nr).

    Returns:
        ``{"1-NNA": accuracy, "1-NNA_gen": accuracy on generated, "1-NNA_ref": accuracy on reference}``,
        each in [0, 1].
    """
    ng, nr = d_gr.shape
    if ng + nr < 2 or d_gg.shape != (ng, ng) or d_rr.shape != (nr, nr):
        raise InvalidInputError(f"1-NNA needs matrices (Ng,Ng), (Nr,Nr), (Ng,Nr) with Ng+Nr >= 2; got "
                                f"{tuple(d_gg.shape)}, {tuple(d_rr.shape)}, {tuple(d_gr.shape)}")
    full = torch.cat([torch.cat([d_gg, d_gr], 1), torch.cat([d_gr.T, d_rr], 1)], 0).clone()
    full.fill_diagonal_(float("inf"))  # leave one out
    nn = full.argmin(dim=1)  # first minimum on ties, i.e. generated shapes win ties
    is_gen = torch.arange(ng + nr, device=full.device) < ng
    correct = is_gen[nn] == is_gen
    return {
        "1-NNA": float(correct.float().mean()),
        "1-NNA_gen": float(correct[:ng].float().mean()) if ng else float("nan"),
        "1-NNA_ref": float(correct[ng:].float().mean()) if nr else float("nan"),
    }


def distribution_metrics(
    generated: torch.Tensor | Sequence[torch.Tensor],
    reference: torch.Tensor | Sequence[torch.Tensor],
    *,
    backend: str = "auto",
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    progress: bool = False,
) -> dict[str, float]:
    """MMD, COV and 1-NNA with Chamfer distance between two sets of (already normalised) clouds.

    Args:
        generated: clouds. Shape: (Ng, P, 3) or a list of (P, 3).
        reference: clouds. Shape: (Nr, P, 3) or a list of (P, 3).
        backend: Chamfer backend of `pairwise_chamfer`.
        memory_bytes: chunk budget of `pairwise_chamfer`'s torch backend.
        progress: show progress bars.

    Returns:
        ``{"MMD-CD", "COV-CD", "1-NNA-CD", "1-NNA-CD_gen", "1-NNA-CD_ref"}``; COV and 1-NNA as
        fractions in [0, 1], MMD in squared normalised units.
    """
    g, r = _as_cloud_batch(generated, "generated"), _as_cloud_batch(reference, "reference")
    kw = dict(backend=backend, memory_bytes=memory_bytes, progress=progress)
    d_gr = pairwise_chamfer(g, r, desc="chamfer gen x ref", **kw)
    d_gg = pairwise_chamfer(g, desc="chamfer gen x gen", **kw)
    d_rr = pairwise_chamfer(r, desc="chamfer ref x ref", **kw)
    nna = one_nna_from_matrices(d_gg, d_rr, d_gr)
    return {
        "MMD-CD": mmd_from_matrix(d_gr),
        "COV-CD": cov_from_matrix(d_gr),
        "1-NNA-CD": nna["1-NNA"],
        "1-NNA-CD_gen": nna["1-NNA_gen"],
        "1-NNA-CD_ref": nna["1-NNA_ref"],
    }


def voxel_iou(ijk_a: torch.Tensor, ijk_b: torch.Tensor) -> float:
    """Intersection over union of two sets of active voxels of the same grid.

    Args:
        ijk_a: voxel coordinates (unique). Shape: (Na, 3), integer.
        ijk_b: voxel coordinates (unique). Shape: (Nb, 3), integer.

    Returns:
        ``|A ∩ B| / |A ∪ B|``; 1.0 when both are empty.
    """
    ijk_a, ijk_b = _check_ijk(ijk_a), _check_ijk(ijk_b)
    if ijk_a.shape[0] == 0 and ijk_b.shape[0] == 0:
        return 1.0
    if ijk_a.shape[0] == 0 or ijk_b.shape[0] == 0:
        return 0.0
    both = torch.cat([ijk_a, ijk_b])
    lo = both.min(dim=0).values
    dims = both.max(dim=0).values - lo + 1
    ka = torch.unique(voxel_keys(ijk_a, lo, dims))
    kb = torch.unique(voxel_keys(ijk_b, lo, dims))
    inter = int(torch.isin(ka, kb).sum())
    return inter / (ka.numel() + kb.numel() - inter)


def batched_voxel_iou(a, b) -> torch.Tensor:
    """`voxel_iou` grid by grid for two batches of voxel sets.

    Args:
        a: B voxel sets: a list of (N_i, 3) integer tensors or a `JaggedTensor` of ijk (e.g. ``grid.ijk``).
        b: B voxel sets, same form; grid i of ``a`` is compared with grid i of ``b``.

    Returns:
        IoU per grid. Shape: (B,), float64.
    """
    la = a.unbind() if hasattr(a, "unbind") and not isinstance(a, torch.Tensor) else list(a)
    lb = b.unbind() if hasattr(b, "unbind") and not isinstance(b, torch.Tensor) else list(b)
    if len(la) != len(lb):
        raise InvalidInputError(f"both batches need the same number of grids, got {len(la)} and {len(lb)}")
    return torch.tensor([voxel_iou(x, y) for x, y in zip(la, lb)], dtype=torch.float64)


def matched_semantic_accuracy(ijk_a: torch.Tensor, sem_a: torch.Tensor,
                              ijk_b: torch.Tensor, sem_b: torch.Tensor) -> float:
    """Fraction of voxels present in both sets whose class ids agree (NaN when none are shared).

    Voxels whose class in ``sem_a`` (the reference) is unknown (negative) are left out.

    Args:
        ijk_a, ijk_b: voxel coordinates (unique). Shape: (Na, 3), (Nb, 3), integer.
        sem_a, sem_b: class ids in the same order as the coordinates. Shape: (Na,), (Nb,), integer.
    """
    ijk_a, ijk_b = _check_ijk(ijk_a), _check_ijk(ijk_b)
    if ijk_a.shape[0] == 0 or ijk_b.shape[0] == 0:
        return float("nan")
    both = torch.cat([ijk_a, ijk_b])
    lo = both.min(dim=0).values
    dims = both.max(dim=0).values - lo + 1
    ka, kb = voxel_keys(ijk_a, lo, dims), voxel_keys(ijk_b, lo, dims)
    kb_sorted, order = torch.sort(kb)
    pos = torch.searchsorted(kb_sorted, ka).clamp_(max=kb.numel() - 1)
    hit = kb_sorted[pos] == ka
    mine = sem_a.reshape(-1).to(torch.int64)
    hit &= mine >= 0  # unknown classes (-1) in the reference are not scored
    if not bool(hit.any()):
        return float("nan")
    other = sem_b.reshape(-1)[order[pos[hit]]].to(torch.int64)
    return float((mine[hit] == other).float().mean())


def class_fractions(semantics: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """Per-class voxel fractions (a normalised semantic histogram).

    Args:
        semantics: class id per voxel. Shape: (N,), integer; negative ids (-1 = unknown) are left out;
            ``None`` or no known ids give all zeros.
        num_classes: number of classes C; ids >= C raise.

    Returns:
        Fractions of the known voxels, summing to 1 (or all 0). Shape: (C,), float64.
    """
    if semantics is None:
        return torch.zeros(num_classes, dtype=torch.float64)
    s = semantics.reshape(-1).to(torch.int64)
    s = s[s >= 0]
    if s.numel() == 0:
        return torch.zeros(num_classes, dtype=torch.float64)
    if int(s.max()) >= num_classes:
        raise InvalidInputError(f"class ids must lie in [0, {num_classes}), got max {int(s.max())}; "
                                "check the level's class_names")
    counts = torch.bincount(s, minlength=num_classes).to(torch.float64)
    return counts / counts.sum()


def histogram_distance(p: torch.Tensor, q: torch.Tensor) -> float:
    """Total-variation distance ``0.5 * sum |p - q|`` between two class-fraction vectors (0..1)."""
    return float(0.5 * (p.to(torch.float64) - q.to(torch.float64)).abs().sum())
