"""gRPC server overhead vs the in-process pipeline, time to first level, and throughput; with
``--soak N`` memory over N distinct requests, with ``--load C`` C concurrent mixed clients
(`server.bench_hostile`).

The same requests (prompt, seeds, steps, levels) run three ways: directly on the pipeline in this
process; one at a time through a real server on a loopback port (client in this process, levels
reassembled and checksum-verified); and from N concurrent clients. Overhead = how much longer a
request takes through the server than in-process (target <= 5 %). By default the shipped model is
used, else the tiny random-weight model (``--pipeline tiny``); ``--pipeline synthetic`` is a
stand-in that only sleeps per step, to measure pure transport cost.
"""

from __future__ import annotations

import concurrent.futures
import logging
import statistics
import time

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("--pipeline", choices=("auto", "shipped", "tiny", "synthetic"), default="auto",
                        help="model to serve: auto = shipped if present else tiny (default %(default)s)")
    parser.add_argument("--model", default=None, help="model folder for --pipeline shipped (default: the shipped one)")
    parser.add_argument("--requests", type=int, default=5, help="timed requests per mode (default %(default)s)")
    parser.add_argument("--steps", type=int, default=10, help="diffusion steps per level (default %(default)s)")
    parser.add_argument("--levels", type=int, default=0, help="levels per request, 0 = all (default %(default)s)")
    parser.add_argument("--outputs", default="raw", help="comma list of raw, vdb, mesh (default %(default)s)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients for throughput (default %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads, both ways (0 = as `python -m server`: cores - 1 on the CPU)")
    parser.add_argument("--soak", type=int, default=0, metavar="N",
                        help="instead: N sequential requests with distinct seeds, RSS at steps (target: RSS after "
                             "N <= 1.3 x RSS after 10)")
    parser.add_argument("--load", type=int, default=0, metavar="C",
                        help="instead: C concurrent mixed clients for --duration s (completions, codes, p50/p95)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of --load (default %(default)s)")


class SyntheticPipeline:
    """Sleeps ``step_seconds`` per step and yields nested random levels (no model)."""

    model_id = "synthetic"

    def __init__(self, step_seconds: float = 0.01, voxels: tuple[int, ...] = (4000, 30000, 200000)) -> None:
        import torch

        from xcube_core.classes import CLASS_NAMES

        self.class_names = CLASS_NAMES
        self.num_levels = len(voxels)
        self.voxels = voxels
        self.voxel_sizes = [1.0 / 2**i for i in range(self.num_levels)]
        self.coarse_shape = (64, 64, 32)
        self.device = torch.device("cpu")
        self.step_seconds = step_seconds

    def generate(self, prompt, *, seed=0, steps=25, guidance=3.0, num_levels=None, condition=None,
                 callback=None, cancel=None, class_prior=None):
        import torch

        from xcube_core.errors import CancelledError
        from xcube_core.level import Level

        gen = torch.Generator().manual_seed(seed)
        for index in range(num_levels or self.num_levels):
            t0 = time.perf_counter()
            for step in range(1, steps + 1):
                if cancel is not None and cancel.is_set():
                    raise CancelledError("cancelled")
                time.sleep(self.step_seconds)
                if callback:
                    callback(index, step, steps)
            side = 64 * 2**index
            ijk = torch.randint(0, side // 2, (self.voxels[index], 3), generator=gen, dtype=torch.int32)
            normals = torch.nn.functional.normalize(torch.randn(ijk.shape[0], 3, generator=gen), dim=1)
            sem = torch.randint(0, len(self.class_names), (ijk.shape[0],), generator=gen)
            yield Level(index, ijk, self.voxel_sizes[index], normals=normals, semantics=sem,
                        seconds=time.perf_counter() - t0)


def load_pipeline(args):
    """(pipeline, description) for ``--pipeline``."""
    if args.pipeline == "synthetic":
        return SyntheticPipeline(), "synthetic (10 ms sleep per step, 4k/30k/200k voxels)"
    from xcube_core.pipeline import XCubePipeline

    if args.pipeline in ("auto", "shipped"):
        try:
            return XCubePipeline.from_pretrained(args.model, device=args.device), "shipped model"
        except Exception as exc:  # noqa: BLE001 - auto falls back, shipped reports
            if args.pipeline == "shipped":
                raise
            log.warning("shipped model unavailable (%s); using XCubePipeline.tiny()", exc)
    return XCubePipeline.tiny(device=args.device), "tiny random-weight model"


def _in_process(pipeline, requests, outputs):
    """Run requests directly, encoding the outputs the server would send (as a script would, serially).

    Returns (totals, firsts, pipeline_only): seconds per request with encoding, to the first encoded
    level, and per request without the encoding time.
    """
    from server import artifacts

    totals, firsts, bare = [], [], []
    for req in requests:
        t0 = time.perf_counter()
        first, encode = None, 0.0
        for level in pipeline.generate(req["prompt"], seed=req["seed"], steps=req["steps"],
                                       num_levels=req["num_levels"] or None):
            t_enc = time.perf_counter()
            artifacts.level_blobs(level, outputs)
            encode += time.perf_counter() - t_enc
            first = first or time.perf_counter() - t0
        totals.append(time.perf_counter() - t0)
        firsts.append(first)
        bare.append(totals[-1] - encode)
    return totals, firsts, bare


def _through_server(client, requests, outputs):
    totals, firsts = [], []
    for req in requests:
        t0 = time.perf_counter()
        first = None
        for _ in client.generate(req["prompt"], seed=req["seed"], steps=req["steps"],
                                 num_levels=req["num_levels"], outputs=outputs):
            first = first or time.perf_counter() - t0
        totals.append(time.perf_counter() - t0)
        firsts.append(first)
    return totals, firsts


def _client_process(address: str, chunk: list[dict], outputs: tuple[str, ...]) -> str:
    """One concurrent client, in its own process as real clients are (imports no torch)."""
    from xcube_client import XCubeClient

    client = XCubeClient(address)
    try:
        _through_server(client, chunk, outputs)
        return ""
    except Exception as exc:  # noqa: BLE001 - reported in the result
        return repr(exc)
    finally:
        client.close()


def _throughput(address, requests, outputs, clients):
    """Requests per second with ``clients`` client processes sharing ``requests``."""
    import multiprocessing

    chunks = [requests[i::clients] for i in range(clients)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(clients) as pool:
        pool.apply(_client_process, (address, [], outputs))  # start the processes before timing
        t0 = time.perf_counter()
        results = pool.starmap(_client_process, [(address, c, outputs) for c in chunks])
        seconds = time.perf_counter() - t0
    return len(requests) / seconds, [r for r in results if r]


def _set_threads(threads: int) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def run(args) -> int:
    import json

    import tqdm

    from server.app import create_server
    from xcube_client import XCubeClient

    logging.getLogger("xcube.server").setLevel(logging.WARNING)
    logging.getLogger("xcube_core.pipeline").setLevel(logging.WARNING)
    from server.__main__ import cpu_threads

    args.threads = cpu_threads(args, args.device) or 0
    _set_threads(args.threads)
    pipeline, described = load_pipeline(args)
    if args.soak or args.load:
        from server import bench_hostile

        return (bench_hostile.run_soak if args.soak else bench_hostile.run_load)(args, pipeline, described)
    outputs = tuple(o.strip() for o in args.outputs.split(",") if o.strip())
    requests = [dict(prompt=f"a village by a river, variant {i}", seed=i, steps=args.steps,
                     num_levels=args.levels) for i in range(args.requests)]
    warm = [dict(requests[0], seed=10_000)]
    server, port = create_server(pipeline, port=0, max_queue=max(16, args.clients), cpu_threads=args.threads or None)
    try:
        server.wait_until_ready(600)
        client = XCubeClient(f"127.0.0.1:{port}")
        _through_server(client, warm, outputs)
        # interleave the two ways request by request, so drifting machine load hits both alike
        direct_totals, direct_firsts, direct_bare, served_totals, served_firsts = [], [], [], [], []
        # in-process runs on a worker thread too: torch's CPU threading behaves differently on the
        # main thread (measured: 2-threaded OpenMP on a busy machine is up to 10x slower there)
        in_thread = concurrent.futures.ThreadPoolExecutor(1, initializer=_set_threads, initargs=(args.threads,))
        in_thread.submit(_in_process, pipeline, warm, outputs).result()
        for req in tqdm.tqdm(requests, desc="in-process vs server", leave=False):
            total, first, bare = in_thread.submit(_in_process, pipeline, [req], outputs).result()
            direct_totals += total
            direct_firsts += first
            direct_bare += bare
            total, first = _through_server(client, [req], outputs)
            served_totals += total
            served_firsts += first
        in_thread.shutdown()
        client.close()
        many = [dict(r, seed=100 + i) for i, r in enumerate(requests * max(1, args.clients))]
        rps, errors = _throughput(f"127.0.0.1:{port}", many, outputs, args.clients)
    finally:
        server.stop(0)

    med = statistics.median
    result = {
        "pipeline": described, "model_id": getattr(pipeline, "model_id", ""), "device": str(pipeline.device),
        "requests": args.requests, "steps": args.steps, "levels": args.levels or pipeline.num_levels,
        "outputs": list(outputs), "torch_threads": args.threads or "torch default",
        "pipeline_only_s": med(direct_bare), "in_process_s": med(direct_totals), "server_s": med(served_totals),
        "overhead_pct": 100.0 * (med(served_totals) - med(direct_totals)) / med(direct_totals),
        "overhead_vs_pipeline_only_pct": 100.0 * (med(served_totals) - med(direct_bare)) / med(direct_bare),
        "first_level_in_process_s": med(direct_firsts), "first_level_server_s": med(served_firsts),
        "in_process_rps": 1.0 / med(direct_totals), "clients": args.clients, "server_rps": rps,
        "throughput_errors": errors,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"xcube bench server: {described} on {result['device']}, {result['levels']} levels x {args.steps} steps, "
          f"outputs {','.join(outputs)}, median of {args.requests}")
    rows = [("full request", result["in_process_s"], result["server_s"]),
            ("  vs pipeline only", result["pipeline_only_s"], result["server_s"]),
            ("time to first level", result["first_level_in_process_s"], result["first_level_server_s"])]
    print(f"{'':24}{'in-process':>12}{'server':>12}{'overhead':>10}   (in-process = pipeline + encoding the same outputs, serially)")
    for name, a, b in rows:
        print(f"{name:24}{a:11.3f}s{b:11.3f}s{100 * (b - a) / a:9.1f}%")
    print(f"throughput: in-process {result['in_process_rps']:.2f} req/s (1 at a time); server with "
          f"{args.clients} concurrent clients {rps:.2f} req/s" + (f"; errors: {errors}" if errors else ""))
    return 0
