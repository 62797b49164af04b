"""Sparse engine speed and memory vs spconv 2.3.8 (CPU) and the GEMM floor, measured in one run.

Workload: ~400k voxels on analytic surfaces (4 spheres and a torus) in a 512^3 box, submanifold
3x3x3 convolution 64 -> 64 with the kernel map built once and reused (as inside a network).
Contenders run interleaved round by round, so load from other processes hits all of them alike;
each row is the median over --repeats rounds after one warm-up round. Reports wall seconds and
process CPU seconds (all threads), and the ratios the targets are stated in.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time


def add_arguments(parser) -> None:
    parser.add_argument("--voxels", type=int, default=400_000, help="target active voxels (default 400000)")
    parser.add_argument("--channels", type=int, default=64, help="input = output channels (default 64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after warm-up (default 5)")
    parser.add_argument("--points", type=int, default=1_000_000,
                        help="points for the grid-build timing (default 1000000)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--backward", action="store_true",
                        help="also time forward+backward of ours in f32 (spconv 2.3.8 has no CPU backward)")
    parser.add_argument("--no-spconv", action="store_true", help="skip the spconv rows")
    parser.add_argument("--seed", type=int, default=0, help="seed of the surface sampling (default 0)")


# --- machine ------------------------------------------------------------------------------------
def cpu_capabilities() -> dict:
    """What this CPU and torch build offer for bf16: detected, never assumed."""
    import torch

    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    amx_fn = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "amx_tile_torch": bool(amx_fn()) if amx_fn else None,
        "amx_bf16_flag": "amx_bf16" in flags,
        "avx512_bf16_flag": "avx512_bf16" in flags,
        "avx512f_flag": "avx512f" in flags,
    }


# --- workload -----------------------------------------------------------------------------------
_SPHERES = (((150, 150, 150), 100), ((360, 340, 300), 110), ((260, 380, 120), 70), ((330, 140, 380), 90))
_TORUS = ((256.0, 256.0, 400.0), 120, 30)


def surface_points(scale: float, per_area: float, generator, box: int = 512):
    """Random points on 4 spheres and a torus, radii times ``scale``, ``per_area`` points per unit area."""
    import torch

    pts = []
    for c, r in _SPHERES:
        r = r * scale
        v = torch.randn(int(4 * math.pi * r * r * per_area), 3, generator=generator)
        pts.append(torch.tensor(c, dtype=torch.float32) + r * v / v.norm(dim=1, keepdim=True))
    c, big, small = _TORUS
    big, small = big * scale, small * scale
    m = int(4 * math.pi ** 2 * big * small * per_area)
    u = torch.rand(m, generator=generator) * 2 * math.pi
    w = torch.rand(m, generator=generator) * 2 * math.pi
    ring = big + small * torch.cos(w)
    pts.append(torch.tensor(c) + torch.stack([ring * torch.cos(u), ring * torch.sin(u), small * torch.sin(w)], 1))
    p = torch.cat(pts)
    return p[((p >= 0) & (p < box - 1)).all(dim=1)]


def surface_grid(voxels: int, seed: int):
    """A GridBatch of about ``voxels`` surface voxels (unit voxels, ijk = round(point))."""
    import torch

    from xcube_core.sparse import GridBatch

    g = torch.Generator().manual_seed(seed)
    scale = 0.75
    for _ in range(2):  # voxel count grows with area: one correction step lands within a few %
        grid = GridBatch.from_points(surface_points(scale, 6.0, g), voxel_sizes=1.0, origins=0.0)
        scale = min(scale * math.sqrt(voxels / max(grid.total_voxels, 1)), 1.15)
    return grid


# --- timing -------------------------------------------------------------------------------------
def _clock(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(contenders: dict, repeats: int, progress=None) -> dict:
    """Median wall and CPU seconds of each callable, run round-robin: 1 warm-up + ``repeats`` rounds."""
    samples = {name: [] for name in contenders}
    for r in range(repeats + 1):
        for name, fn in contenders.items():
            t = _clock(fn)
            if r:
                samples[name].append(t)
            if progress:
                progress.update(1)
    return {name: {"wall_s": statistics.median(w for w, _ in s), "cpu_s": statistics.median(c for _, c in s),
                   "all_wall_s": [round(w, 4) for w, _ in s]} for name, s in samples.items()}


# --- contenders ---------------------------------------------------------------------------------
def _spconv_parts(grid, x, weight, channels: int):
    """(index build fn, conv fn reusing the built indices, conv output) for spconv, or None."""
    import torch

    try:
        import spconv.pytorch as spconv
        from spconv.core import ConvAlgo
        from spconv.pytorch import ops as sops
    except Exception:  # noqa: BLE001 - spconv is optional: any import failure means "absent"
        return None
    idx = torch.cat([grid.jidx.int()[:, None], grid.ijk.jdata.int()], dim=1).contiguous()
    shape = [int(grid.bbox()[0, 1].max()) + 2] * 3
    layer = spconv.SubMConv3d(channels, channels, 3, bias=False, indice_key="bench")
    k = 3
    with torch.no_grad():  # ours (K, Cin, Cout), x-major -> spconv (Cout, kx, ky, kz, Cin)
        layer.weight.copy_(weight.reshape(k, k, k, channels, channels).permute(4, 0, 1, 2, 3))
        first = layer(spconv.SparseConvTensor(x, idx, shape, 1))
    indice_dict = first.indice_dict

    def build():
        sops.get_indice_pairs(idx, 1, shape, ConvAlgo.Native, [k] * 3, [1] * 3, [1] * 3, [1] * 3, [0] * 3,
                              True, False)

    def conv(inp=x):
        st = spconv.SparseConvTensor(inp, idx, shape, 1)
        st.indice_dict = indice_dict  # reuse the submanifold indices, as a network does
        return layer(st).features

    return build, conv, first.features, layer


def _gemm_floor(pairs: int, channels: int, dtype):
    """One (pairs x C) @ (C x C) worth of multiply-adds, as matmuls of at most 2^20 rows."""
    import torch

    rows = max(1, min(pairs, 1 << 20))
    a = torch.randn(rows, channels).to(dtype)
    b = (torch.randn(channels, channels) * 0.1).to(dtype)
    out = torch.empty(rows, channels, dtype=dtype)
    full, rest = divmod(pairs, rows)

    def run():
        for _ in range(full):
            torch.mm(a, b, out=out)
        if rest:
            torch.mm(a[:rest], b, out=out[:rest])

    return run


def _conv_contenders(plan, x, weight, peer):
    import torch

    def ours_f32():
        with torch.no_grad():
            return plan.execute(x, weight)

    def ours_bf16():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return plan.execute(x, weight)

    def naive_f32():  # one full-size gather, GEMM and index_add_ per offset (the untiled baseline)
        with torch.no_grad():
            out = x @ weight[plan.center]
            for k in range(plan.num_offsets):
                if k != plan.center:
                    i, o = plan.pairs(k)
                    out.index_add_(0, o, x.index_select(0, i) @ weight[k])
            return out

    c = x.shape[1]
    contenders = {"ours_f32": ours_f32, "ours_bf16": ours_bf16, "naive_f32": naive_f32}
    if peer is not None:
        def spconv_f32():
            with torch.no_grad():
                return peer[1]()
        contenders["spconv_f32"] = spconv_f32
    contenders["gemm_floor_f32"] = _gemm_floor(plan.num_pairs, c, torch.float32)
    contenders["gemm_floor_bf16"] = _gemm_floor(plan.num_pairs, c, torch.bfloat16)
    return contenders


def _backward_contenders(plan, x, weight):
    import torch

    g = torch.randn(plan.target_grid.total_voxels, weight.shape[2])

    def ours():
        xi, wi = x.clone().requires_grad_(), weight.clone().requires_grad_()
        plan.execute(xi, wi).backward(g)

    # spconv 2.3.8's CPU backward calls torch.cuda.current_stream() and fails on CPU-only torch
    # ("Torch not compiled with CUDA enabled"), so there is no peer row for training.
    return {"ours_f32_fwd_bwd": ours, "ours_f32_fwd": lambda: plan.execute(x, weight)}


def _rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def measure(args) -> dict:
    """Run every measurement; returns the result dict that --json prints."""
    import torch
    from tqdm import tqdm

    from xcube_core.sparse import ConvolutionPlan, GridBatch

    if args.threads:
        torch.set_num_threads(args.threads)
    caps = cpu_capabilities()
    load = [os.getloadavg()[0]]
    grid = surface_grid(args.voxels, args.seed)
    n, c = grid.total_voxels, args.channels
    plan = ConvolutionPlan.from_grid_batch(3, 1, grid)
    gen = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randn(n, c, generator=gen)
    weight = torch.randn(27, c, c, generator=gen) / math.sqrt(27 * c)
    peer = None if args.no_spconv else _spconv_parts(grid, x, weight, c)
    points = surface_points(1.0, 1.0, gen)
    points = points[torch.randperm(points.shape[0], generator=gen)[: args.points]]

    maps = {"ours": lambda: ConvolutionPlan.from_grid_batch(3, 1, grid)}
    if peer is not None:
        maps["spconv"] = peer[0]
    jobs = {"kernel_map": maps,
            "grid_from_points": {"ours": lambda: GridBatch.from_points(points, voxel_sizes=1.0, origins=0.0)},
            "conv_forward": _conv_contenders(plan, x, weight, peer)}
    if args.backward:
        jobs["conv_forward_backward"] = _backward_contenders(plan, x, weight)
    total = (args.repeats + 1) * sum(len(v) for v in jobs.values())
    with tqdm(total=total, desc="bench sparse", unit="run", leave=False) as bar:
        timings = {name: interleaved(fns, args.repeats, bar) for name, fns in jobs.items()}
    load.append(os.getloadavg()[0])

    f32 = jobs["conv_forward"]["ours_f32"]()
    bf16 = jobs["conv_forward"]["ours_bf16"]()
    accuracy = {"bf16_rel_err_vs_f32": _rel(bf16, f32)}
    if peer is not None:
        accuracy["ours_f32_rel_diff_vs_spconv"] = _rel(f32, peer[2])
    return _summarise(args, caps, load, grid, plan, timings, accuracy, points.shape[0])


def _ratio(timings, a, b, key="wall_s"):
    if a not in timings or b not in timings:
        return None
    return timings[a][key] / timings[b][key]


def _summarise(args, caps, load, grid, plan, timings, accuracy, n_points) -> dict:
    n = grid.total_voxels
    conv, maps = timings["conv_forward"], timings["kernel_map"]
    ratios = {}
    for key in ("wall_s", "cpu_s"):
        tag = key[:-2]
        ratios[f"ours_f32_over_spconv_f32_{tag}"] = _ratio(conv, "ours_f32", "spconv_f32", key)
        ratios[f"spconv_f32_over_ours_bf16_{tag}"] = _ratio(conv, "spconv_f32", "ours_bf16", key)
        ratios[f"naive_f32_over_ours_f32_{tag}"] = _ratio(conv, "naive_f32", "ours_f32", key)
        ratios[f"ours_f32_over_gemm_floor_f32_{tag}"] = _ratio(conv, "ours_f32", "gemm_floor_f32", key)
        ratios[f"ours_bf16_over_gemm_floor_bf16_{tag}"] = _ratio(conv, "ours_bf16", "gemm_floor_bf16", key)
        ratios[f"kernel_map_ours_over_spconv_{tag}"] = _ratio(maps, "ours", "spconv", key)
    bpv = grid.nbytes / max(n, 1)
    per_voxel = grid.keys.element_size()  # the only per-voxel array; the rest is 40 B per grid
    result = {
        "command": "xcube bench sparse " + " ".join(
            f"--{k} {v}" for k, v in (("voxels", args.voxels), ("channels", args.channels),
                                      ("repeats", args.repeats), ("points", args.points), ("threads", args.threads))
            if v is not None) + (" --backward" if args.backward else "") + (" --no-spconv" if args.no_spconv else ""),
        "machine": caps, "load_average_1min": load,
        "grid": {"voxels": n, "box": 512, "pairs_incl_centre": plan.num_pairs,
                 "avg_neighbours": (plan.num_pairs - n) / max(n, 1), "channels": args.channels},
        "timings": timings, "accuracy": accuracy, "ratios": ratios,
        "grid_build_points": n_points,
        "bytes_per_voxel": {"ours_per_voxel": per_voxel, "ours_total_incl_per_grid": bpv,
                            "ours_per_grid_constant": grid.nbytes - per_voxel * n, "spconv_indices_int32": 16.0},
    }
    r = ratios
    result["targets"] = {
        "f32_no_slower_than_spconv": None if r["ours_f32_over_spconv_f32_wall"] is None
        else r["ours_f32_over_spconv_f32_wall"] <= 1.0,
        "bf16_1.5x_faster_than_spconv_f32": None if r["spconv_f32_over_ours_bf16_wall"] is None
        else r["spconv_f32_over_ours_bf16_wall"] >= 1.5,
        "kernel_map_faster_than_spconv": None if r["kernel_map_ours_over_spconv_wall"] is None
        else r["kernel_map_ours_over_spconv_wall"] < 1.0,
        "structure_le_8_bytes_per_voxel": per_voxel <= 8,
    }
    return result


def _print_table(res: dict) -> None:
    m, g = res["machine"], res["grid"]
    print(f"xcube bench sparse: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads, "
          f"{m['torch_cpu_capability']}), load {res['load_average_1min'][0]:.1f} -> {res['load_average_1min'][1]:.1f}")
    print(f"  bf16 hardware: avx512_bf16={m['avx512_bf16_flag']} amx_bf16={m['amx_bf16_flag']} "
          f"amx_tile(torch)={m['amx_tile_torch']} mkldnn={m['mkldnn']}")
    print(f"  grid: {g['voxels']} voxels in a 512^3 box, {g['avg_neighbours']:.2f} neighbours per voxel, "
          f"{g['pairs_incl_centre']} pairs, {g['channels']}->{g['channels']} channels")
    print(f"{'measurement':46}{'wall (median)':>15}{'cpu':>10}")
    for job, rows in res["timings"].items():
        for name, t in rows.items():
            print(f"  {job + ' / ' + name:44}{t['wall_s']:14.3f}s{t['cpu_s']:9.3f}s")
    for name, v in {**res["accuracy"], **res["ratios"]}.items():
        if v is not None:
            print(f"  {name:52}{v:10.4g}")
    b = res["bytes_per_voxel"]
    print(f"  structure: ours {b['ours_per_voxel']} B per voxel + {b['ours_per_grid_constant']} B per batch "
          f"= {b['ours_total_incl_per_grid']:.4f} B/voxel here (spconv's int32 (b,i,j,k) indices: 16 B/voxel)")
    for name, ok in res["targets"].items():
        print(f"  target {name:45}{'n/a' if ok is None else ('met' if ok else 'MISSED'):>8}")


def run(args) -> int:
    from xcube_core.errors import InvalidInputError

    if args.voxels < 1000 or args.channels < 1 or args.repeats < 1 or args.points < 1:
        raise InvalidInputError("--voxels >= 1000, --channels >= 1, --repeats >= 1 and --points >= 1 expected, "
                                f"got {args.voxels}, {args.channels}, {args.repeats}, {args.points}")
    res = measure(args)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        _print_table(res)
    return 0
