"""`xcube bench server --soak N` (memory over many distinct requests) and `--load C` (C concurrent
mixed clients). Both run a real server on a loopback port in this process.

Soak: N sequential requests, each with a new seed (new voxel counts), through the server; the
process's resident memory (RSS, /proc/self/statm) is printed at steps along the way, and the ratio
RSS(N) / RSS(10) against the target <= 1.3.

Load: C client threads in ONE separate process (no torch there), each running a mix for ``--duration``
seconds: normal generations (most), cancels mid-stream, requests with a bad field, calls with a short
deadline, GetServerInfo + health. Reported: completed generations, outcomes by status code, p50/p95
latency of completed generations, and INTERNAL (must be 0). The per-client stream limit is raised to C
for this run, as if every client were its own machine (on loopback they all share one address).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import threading
import time

STEPS_AT = (1, 10, 20, 50, 100, 200, 300, 400, 500, 750, 1000)


def rss_mb() -> float:
    """Resident memory of this process in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def run_soak(args, pipeline, described: str) -> int:
    from server.app import create_server
    from xcube_client import XCubeClient

    outputs = tuple(o.strip() for o in args.outputs.split(",") if o.strip())
    server, port = create_server(pipeline, port=0, cpu_threads=args.threads or None)
    rows, t0 = [], time.perf_counter()
    try:
        server.wait_until_ready(600)
        client = XCubeClient(f"127.0.0.1:{port}")
        marks = sorted({s for s in STEPS_AT if s <= args.soak} | {args.soak})
        for i in range(1, args.soak + 1):
            for _ in client.generate(f"a village by a river, variant {i}", seed=1000 + i, steps=args.steps,
                                     num_levels=args.levels, outputs=outputs, timeout=3600):
                pass
            if i in marks:
                rows.append({"requests": i, "rss_mb": round(rss_mb(), 1), "seconds": round(time.perf_counter() - t0, 1)})
                print(f"  after {i:5d} requests: RSS {rows[-1]['rss_mb']:8.1f} MB  ({rows[-1]['seconds']:.0f} s)",
                      flush=True)
        client.close()
    finally:
        server.stop(0)
    base = next((r["rss_mb"] for r in rows if r["requests"] == 10), rows[0]["rss_mb"])
    result = {"pipeline": described, "device": str(pipeline.device), "steps": args.steps, "outputs": list(outputs),
              "torch_threads": args.threads or "torch default", "rss": rows,
              "ratio_last_to_10": round(rows[-1]["rss_mb"] / base, 3), "target": 1.3}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"xcube bench server --soak {args.soak}: {described}, {args.steps} steps, outputs {','.join(outputs)}: "
              f"RSS after {rows[-1]['requests']} requests / after 10 = {result['ratio_last_to_10']:.2f} "
              f"(target <= 1.3)")
    return 0


# -- load ------------------------------------------------------------------------------------------------

MIX = (("generate", 0.6), ("cancel", 0.1), ("invalid", 0.1), ("deadline", 0.1), ("info", 0.1))


def _load_client(address: str, index: int, seconds: float, steps: int, out: list, lock: threading.Lock) -> None:
    from xcube_client import XCubeClient, XCubeClientError

    rng = random.Random(index)
    client = XCubeClient(address, timeout=30)
    end = time.monotonic() + seconds
    n = 0
    try:
        while time.monotonic() < end:
            kind = rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
            n += 1
            t0 = time.monotonic()
            code = "OK"
            try:
                if kind == "info":
                    client.info()
                    client.health()
                elif kind == "invalid":
                    list(client.generate("x", steps=100_000, outputs=("raw",)))
                elif kind == "deadline":
                    list(client.generate(f"deadline {index}", seed=n, steps=steps, outputs=("raw",), timeout=0.05))
                elif kind == "cancel":
                    gen = client.generate(f"cancel {index}", seed=n, steps=steps, outputs=("raw",), timeout=120,
                                          progress=lambda *a: client.cancel())
                    list(gen)
                else:
                    list(client.generate(f"a village {index}", seed=index * 100_000 + n, steps=steps,
                                         outputs=("raw",), timeout=120))
            except XCubeClientError as exc:
                code = exc.code
            except Exception as exc:  # noqa: BLE001 - counted, never hidden
                code = f"CLIENT_{type(exc).__name__}"
            with lock:
                out.append((kind, code, time.monotonic() - t0))
            if code == "RESOURCE_EXHAUSTED":
                time.sleep(rng.uniform(0.05, 0.3))  # a polite client backs off
    finally:
        client.close()


def _load_process(address: str, clients: int, seconds: float, steps: int) -> list:
    out: list = []
    lock = threading.Lock()
    threads = [threading.Thread(target=_load_client, args=(address, i, seconds, steps, out, lock))
               for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 300)
    return out


def run_load(args, pipeline, described: str) -> int:
    import multiprocessing

    from server.app import create_server
    from server.flow import FlowLimits

    flow = FlowLimits(max_streams_per_client=args.load)
    server, port = create_server(pipeline, port=0, cpu_threads=args.threads or None, flow=flow)
    try:
        server.wait_until_ready(600)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            records = pool.apply(_load_process, (f"127.0.0.1:{port}", args.load, args.duration, args.steps))
    finally:
        server.stop(0)
    by_code: dict[str, int] = {}
    for _, code, _ in records:
        by_code[code] = by_code.get(code, 0) + 1
    done = sorted(s for kind, code, s in records if kind == "generate" and code == "OK")
    by_kind = {k: {} for k, _ in MIX}
    for kind, code, _ in records:
        by_kind[kind][code] = by_kind[kind].get(code, 0) + 1
    pct = lambda q: done[min(len(done) - 1, int(q * len(done)))] if done else float("nan")  # noqa: E731
    result = {"pipeline": described, "clients": args.load, "duration_s": args.duration, "steps": args.steps,
              "calls": len(records), "completed_generations": len(done), "by_code": by_code, "by_kind": by_kind,
              "p50_s": round(pct(0.5), 3), "p95_s": round(pct(0.95), 3),
              "internal": by_code.get("INTERNAL", 0)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"xcube bench server --load {args.load}: {described}, {args.duration:.0f} s, {args.steps} steps, "
          f"{len(records)} calls")
    print(f"completed generations: {len(done)}; latency p50 {result['p50_s']:.3f} s, p95 {result['p95_s']:.3f} s "
          f"(median of all {statistics.median(done) if done else float('nan'):.3f} s)")
    print("outcomes by code: " + ", ".join(f"{k} {v}" for k, v in sorted(by_code.items())))
    for kind, codes in by_kind.items():
        print(f"  {kind:9s} " + ", ".join(f"{k} {v}" for k, v in sorted(codes.items())))
    print(f"INTERNAL: {result['internal']}")
    return 0
