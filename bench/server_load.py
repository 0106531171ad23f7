"""MCP server load: N concurrent MCP clients calling `run_detection` on a 10,000-row file, compared with
the same call made directly in-process in the same run (same file, same model, same per-row CSV output,
the same reply: `mcp_app.lean_detection`, which is what the MCP tool runs; the same malloc settings as the
server's).

    python bench/server_load.py [--clients 4] [--calls 5] [--rows 10000] [--transport sse http]
                                [--max-results N]   # default: the tool's default reply
                                [--load-pairs 5] [--live-points 500] [--skip-live]

Reports requests/s and p50/p99 latency for: the call made directly (one caller, then N threads) and the
MCP server (one client, then N concurrent clients, each with its own session), for each transport. The
overhead figure is MCP p50 / direct p50 with one caller, where the only difference is the MCP round trip;
those direct and MCP calls are interleaved so that both see the same load on a shared machine. The throughput
figure (N MCP clients against the direct call on --workers threads, the same number of requests) is measured
--load-pairs times, MCP and direct alternately, and printed as min / median / max of the ratio of throughputs
with the load average (bench/pairs.py).

Live stream: the same server's `POST /api/live/{channel}` with one point per request (one keep-alive HTTP
client, points sent one after another), against `LiveScorer.push` of one point at a time in this process, in
points/s, alternately (--load-pairs pairs, --live-points points each, a fresh channel and scorer each time).

BENCH_QUICK=1: 3 pairs, http transport only, 200 live points.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import pairs  # noqa: E402

from anomaly import memory, service, synthetic  # noqa: E402
from anomaly.server.core import to_json  # noqa: E402
from anomaly.server.mcp_app import lean_detection  # noqa: E402
from anomaly.server.toolbox import Toolbox  # noqa: E402
from anomaly.store import ModelStore  # noqa: E402


def stats(latencies: list[float], wall: float) -> dict:
    lat = np.asarray(latencies) * 1000
    return {"requests": len(lat), "req_per_s": round(len(lat) / wall, 2), "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1), "mean_ms": round(float(lat.mean()), 1)}


MAX_RESULTS: int | None = None  # per-row results in each reply (--max-results); None: the tool's default


def arguments(file: Path) -> dict:
    return {"file_path": file.name} | ({} if MAX_RESULTS is None else {"max_results": MAX_RESULTS})


def direct_call(file: Path, toolbox: Toolbox) -> float:
    """The MCP tool's work called in-process: the detection with its per-row CSV, the reply shaped as the tool
    shapes it and encoded as JSON text."""
    t0 = time.perf_counter()
    text, result = to_json(lean_detection(toolbox, **arguments(file)))
    assert result["total_rows"] > 0 and text
    return time.perf_counter() - t0


def direct(file: Path, toolbox: Toolbox, callers: int, calls: int) -> dict:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        latencies = list(pool.map(lambda i: direct_call(file, toolbox), range(callers * calls)))
    return stats(latencies, time.perf_counter() - t0)


def mcp_target(url: str, transport: str):
    from mcp.client.sse import sse_client
    return sse_client(url + "/sse", sse_read_timeout=600) if transport == "sse" else url + "/mcp"


async def one_caller(url: str, transport: str, file: Path, toolbox: Toolbox, pairs: int) -> dict:
    """Direct and MCP calls interleaved, so both see the same machine load (the host may be shared)."""
    from mcp import Client

    direct_lat, mcp_lat, sizes = [], [], []
    async with Client(mcp_target(url, transport)) as client:
        for i in range(pairs + 1):
            d = direct_call(file, toolbox)
            t0 = time.perf_counter()
            result = await client.call_tool("run_detection", arguments(file))
            m = time.perf_counter() - t0
            assert not result.is_error, result.content[0].text
            sizes.append(len(result.model_dump_json(by_alias=True, exclude_none=True)))
            if i:  # the first pair warms both (model loaded and cached)
                direct_lat.append(d)
                mcp_lat.append(m)
    wall = sum(direct_lat) + sum(mcp_lat)
    return {"direct_1": stats(direct_lat, sum(direct_lat)), "mcp_1": stats(mcp_lat, sum(mcp_lat)), "wall_s": wall,
            "reply_chars": max(sizes)}


async def mcp_load(url: str, transport: str, clients: int, calls: int) -> dict:
    from mcp import Client

    latencies: list[float] = []

    async def client_loop():
        async with Client(mcp_target(url, transport)) as client:
            for _ in range(calls):
                t0 = time.perf_counter()
                result = await client.call_tool("run_detection", arguments(Path("load.csv")))
                latencies.append(time.perf_counter() - t0)
                assert not result.is_error, result.content[0].text

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(clients):
            tg.start_soon(client_loop)
    return stats(latencies, time.perf_counter() - t0)


def live_http(url: str, points: list[list[float]], channel: str) -> tuple[float, list[float]]:
    """Points/s of one point per POST (after one unrecorded point that creates the channel's scorer)."""
    latencies = []
    with httpx.Client(base_url=url, timeout=60) as http:
        http.post(f"/api/live/{channel}", json={"points": [points[0]]}).raise_for_status()
        t0 = time.perf_counter()
        for point in points:
            t = time.perf_counter()
            r = http.post(f"/api/live/{channel}", json={"points": [point]})
            latencies.append(time.perf_counter() - t)
            r.raise_for_status()
    return len(points) / (time.perf_counter() - t0), latencies


def live_direct(store: ModelStore, points: list[list[float]]) -> float:
    """Points/s of `LiveScorer.push` with one point at a time, in this process."""
    from anomaly.service.live import LiveScorer

    scorer = LiveScorer("bench", store)
    scorer.push([points[0]])
    t0 = time.perf_counter()
    for point in points:
        scorer.push([point])
    return len(points) / (time.perf_counter() - t0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--calls", type=int, default=5, help="calls per client")
    p.add_argument("--pairs", type=int, default=20, help="interleaved direct/MCP call pairs with one caller")
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--transport", choices=("sse", "http"), nargs="+",
                   default=["http"] if pairs.QUICK else ["sse", "http"])
    p.add_argument("--load-pairs", type=int, default=pairs.DEFAULT_PAIRS,
                   help="alternated MCP/direct throughput pairs and live-stream pairs")
    p.add_argument("--live-points", type=int, default=200 if pairs.QUICK else 500, help="points per live run")
    p.add_argument("--skip-live", action="store_true")
    p.add_argument("--workers", type=int, default=2, help="server scoring threads (and direct threads)")
    p.add_argument("--max-results", type=int, help="per-row results per reply (default: the tool's default)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    global MAX_RESULTS
    MAX_RESULTS = args.max_results
    # The in-process twin allocates as the server does (`anomaly serve`'s malloc settings): otherwise whether
    # either process faults its arrays in again on every call depends on what each allocated before.
    memory.keep_freed_heap()

    with tempfile.TemporaryDirectory(prefix="server_load-") as tmp:
        tmp = Path(tmp)
        synthetic.make_series(2000, seed=0).to_csv(tmp / "train.csv", index=False, float_format="%.5f")
        # Unlabelled, as a user's new data is (a label column would add the evaluation metrics' cost).
        synthetic.inject(synthetic.make_series(args.rows, seed=3), n_anomalies=50).drop(columns="label").to_csv(
            tmp / "load.csv", index=False, float_format="%.5f")
        store = ModelStore(tmp / "models")
        service.train(str(tmp / "train.csv"), version="bench", store=store, epochs=5)
        # The in-process twin of the server's toolbox: same store, data root and results folder kind.
        toolbox = Toolbox(tmp / "models", tmp / "direct", [tmp])

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, PYTHONPATH=str(REPO))
        server = subprocess.Popen([sys.executable, str(REPO / "server.py"), "--port", str(port), "--data-root", str(tmp),
                                   "--model-dir", str(tmp / "models"), "--results-dir", str(tmp / "results"),
                                   "--workers", str(args.workers)], cwd=tmp, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        figures = {"setup": {"rows": args.rows, "clients": args.clients, "calls_per_client": args.calls,
                             "pairs": args.pairs, "workers": args.workers, "cpus": os.cpu_count(),
                             "max_results": args.max_results, "load_avg_start": os.getloadavg()[0]}}
        try:
            for _ in range(300):
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            for transport in args.transport:
                single = anyio.run(one_caller, url, transport, tmp / "load.csv", toolbox, args.pairs)
                f = {"direct_1": single["direct_1"], "mcp_1": single["mcp_1"], "reply_chars": single["reply_chars"]}
                if args.clients:  # alternately, so both see the same load
                    load_start, mcp_runs, direct_runs = pairs.loadavg(), [], []
                    for _ in range(args.load_pairs):
                        mcp_runs.append(anyio.run(mcp_load, url, transport, args.clients, args.calls))
                        direct_runs.append(direct(tmp / "load.csv", toolbox, args.workers,
                                                  args.clients * args.calls // args.workers))
                    f[f"direct_{args.workers}t"] = min(direct_runs, key=lambda r: r["req_per_s"])
                    f[f"mcp_{args.clients}c"] = min(mcp_runs, key=lambda r: r["req_per_s"])
                    f["throughput_pairs"] = pairs.record(
                        f"{transport}: {args.clients} MCP clients vs {args.workers} direct threads, throughput",
                        [r["req_per_s"] for r in mcp_runs], [r["req_per_s"] for r in direct_runs], load_start)
                f["overhead_p50"] = round(f["mcp_1"]["p50_ms"] / f["direct_1"]["p50_ms"] - 1, 3)
                if args.clients:
                    f["throughput_ratio"] = round(statistics.median(f["throughput_pairs"].ratios), 3)
                figures[transport] = f
            if not args.skip_live:
                frame = synthetic.make_series(args.live_points + 1, seed=5)
                points = frame.drop(columns="timestamp").to_numpy().tolist()
                store = ModelStore(tmp / "models")
                load_start, http_rates, direct_rates, lat = pairs.loadavg(), [], [], []
                for i in range(args.load_pairs):
                    rate, latencies = live_http(url, points, f"bench-{i}")
                    http_rates.append(rate)
                    lat += latencies
                    direct_rates.append(live_direct(store, points))
                figures["live"] = {"pairs": pairs.record("live stream, one point per POST vs in-process push",
                                                         http_rates, direct_rates, load_start),
                                   "p50_ms": round(float(np.percentile(np.asarray(lat) * 1000, 50)), 1)}
            figures["setup"]["load_avg_end"] = os.getloadavg()[0]
        finally:
            server.terminate()
            server.wait(15)
    lines = []
    print(f"rows {args.rows}, max_results {args.max_results or 'default'}, load average "
          f"{figures['setup']['load_avg_start']:.1f} -> {figures['setup']['load_avg_end']:.1f}")
    for transport in args.transport:
        f = figures[transport]
        print(f"\n{transport} (largest reply {f['reply_chars']} characters)")
        print(f"{'':<12} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for name in [k for k in f if k.startswith(("direct_", "mcp_"))]:
            s = f[name]
            print(f"{name:<12} {s['requests']:>8} {s['req_per_s']:>8} {s['p50_ms']:>8} {s['p99_ms']:>8}")
        print(f"MCP overhead at p50 (one caller): {100 * f['overhead_p50']:+.1f}%  (target <= +20%)")
        if "throughput_ratio" in f:  # the slowest of the alternated runs are in the table above
            lines.append(f.pop("throughput_pairs").line("req/s"))
    if "live" in figures:
        live = figures["live"]
        lines.append(live.pop("pairs").line("points/s") + f"; HTTP p50 {live['p50_ms']} ms per point")
    print("\n" + "\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
