"""Server memory under the largest bodies and uploads of the reliability report (issue 23): the peak RSS of a
real `server.py` (and any process it starts) while each request is answered, sampled every 20 ms.

    python bench/server_memory.py [--limit-gib 1]

Cases: a 30 MiB upload that is one line, a 59 MiB JSON body to /api/live (declared, then chunked), the
largest JSON body a route takes (8 MiB, parsed; once, then 4 at once), a ~600 KB gzip holding 400 MB of rows,
and an ordinary 10,000-row upload. Prints one table row per case (status, seconds, peak RSS, growth over the idle server) and
exits 1 when any peak is over the limit (default 1 GiB); with the load average at start and end. (A memory check,
not a timing: nothing to alternate against.)
"""

from __future__ import annotations

import argparse
import gzip
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anomaly import service, synthetic  # noqa: E402
from anomaly.store import ModelStore  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Peak:
    """The highest RSS of a process and its children while the block runs."""

    def __init__(self, pid: int):
        self.proc, self.peak, self.running = psutil.Process(pid), 0, False

    def rss(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.02)

    def __enter__(self):
        self.peak, self.running = self.rss(), True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.rss())


def chunked(data: bytes, size: int = 1 << 20):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def cases(folder: Path) -> list[tuple[str, str, str, dict]]:
    """(name, method, path, httpx arguments) for each request."""
    features = ["sensor_0", "sensor_1", "sensor_2", "sensor_3"]
    live = b'{"points": [' + b",".join([b"[1.5, 2.5]"] * (31_000_000 // 2)) + b"]}"  # 31 M numbers, ~59 MiB
    largest = b'{"points": [' + b",".join([b"[0.1, 0.2, 0.3, 0.4]"] * 380_000) + b"]}"  # just under 8 MiB
    bomb = gzip.compress((",".join(features) + "\n").encode() + b"0,0,0,0\n" * (50 << 20), 9)  # 400 MB of rows
    normal = (folder / "test.csv").read_bytes()
    return [
        ("upload: 30 MiB, one line", "POST", "/api/detect/upload?version=v1",
         {"content": b"1.5," * (30 << 18), "headers": {"Content-Type": "text/csv"}}),
        ("live JSON: 59 MiB, declared length", "POST", "/api/live/x",
         {"content": live, "headers": {"Content-Type": "application/json"}}),
        ("live JSON: 59 MiB, chunked", "POST", "/api/live/x",
         {"content": chunked(live), "headers": {"Content-Type": "application/json"}}),
        ("live JSON: 7.9 MiB (largest taken)", "POST", "/api/live/x",
         {"content": largest, "headers": {"Content-Type": "application/json"}}),
        ("live JSON: 4 x 7.9 MiB at once", "POST", "/api/live/x",
         {"content": largest, "headers": {"Content-Type": "application/json"}, "parallel": 4}),
        (f"upload: gzip bomb {len(bomb) >> 10} KiB -> 400 MB", "POST",
         "/api/detect/upload?version=v1&max_results=0", {"content": bomb}),
        ("upload: 10,000 rows (ordinary)", "POST", "/api/detect/upload?version=v1&max_results=0",
         {"content": normal, "headers": {"Content-Type": "text/csv"}}),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit-gib", type=float, default=1.0)
    args = ap.parse_args()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="server-memory-") as tmp:
        folder = Path(tmp)
        synthetic.make_series(2000, seed=0).to_csv(folder / "train.csv", index=False, float_format="%.5f")
        synthetic.make_series(10_000, seed=1).to_csv(folder / "test.csv", index=False, float_format="%.5f")
        service.train(str(folder / "train.csv"), version="v1", store=ModelStore(folder / "models"),
                      model_type="dense", window=1, epochs=2)
        port = free_port()
        env = dict(os.environ, OMP_NUM_THREADS="1")
        server = subprocess.Popen([sys.executable, str(REPO / "server.py"), "--port", str(port), "--data-root",
                                   str(folder), "--model-dir", str(folder / "models"), "--results-dir",
                                   str(folder / "results")], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            idle = Peak(server.pid).rss()
            rows = []
            with httpx.Client(base_url=url, timeout=600) as http:
                for name, method, path, kwargs in cases(folder):
                    started = time.perf_counter()
                    parallel = kwargs.pop("parallel", 1)

                    def one(_, method=method, path=path, kwargs=kwargs) -> str:
                        try:
                            return str(http.request(method, path, **kwargs).status_code)
                        except httpx.HTTPError as exc:  # a refusal before the whole body was sent
                            return type(exc).__name__
                    with Peak(server.pid) as peak, ThreadPoolExecutor(parallel) as pool:
                        status = "/".join(sorted(set(pool.map(one, range(parallel)))))
                    rows.append((name, status, time.perf_counter() - started, peak.peak))
        finally:
            server.terminate()
            server.wait(15)
    limit = args.limit_gib * (1 << 30)
    print(f"{'case':<40} {'status':>8} {'seconds':>8} {'peak RSS MiB':>13} {'over idle MiB':>14}")
    print(f"{'idle server':<40} {'':>8} {'':>8} {idle / (1 << 20):>13.0f} {0:>14.0f}")
    for name, status, seconds, peak in rows:
        print(f"{name:<40} {status:>8} {seconds:>8.2f} {peak / (1 << 20):>13.0f} {(peak - idle) / (1 << 20):>14.0f}")
    over = [name for name, _, _, peak in rows if peak > limit]
    print(f"limit {args.limit_gib:g} GiB: " + ("all under" if not over else "OVER in " + ", ".join(over))
          + f"; load average {load_start:.2f} -> {os.getloadavg()[0]:.2f}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
