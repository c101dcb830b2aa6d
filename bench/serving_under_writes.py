"""Online serving while the online store is being written: errors, p99 and max latency of /predict.

    python bench/serving_under_writes.py [--requests 3000] [--seconds 120] [--entities 50000] [--data-dir DIR]

Builds (or reuses, with ``--data-dir``) the small demo as ``bench/serving.py`` does, starts the service on
127.0.0.1 in its own process, and sends the same bounded load twice over ``--concurrency`` keep-alive
connections, 1 id a request: once with the store idle, once while another process rewrites the store the
way the ``online_features`` asset does (``write_online_features`` of every view, in a loop) with the latest
day's rows plus made-up customers up to ``--entities``. Each load stops at ``--requests`` or ``--seconds``,
whichever comes first. Target: no errors while writing. The SQLite online store (the embedded default)
holds a lock while a write commits: reads wait for it, up to the service's store timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from serving import build_demo, has_demo, online_ids, read_response, request_bytes  # noqa: E402

from fti_assets_tests.processes import free_port, start, stop, wait_for_http  # noqa: E402


def write_loop(data_dir: str, entities: int, ready, done, results) -> None:
    """In its own process: rewrite the online store until ``done`` is set; put (writes, seconds each)."""
    from fti_assets.features.online_write import write_online_features
    from fti_assets.resources.build import build_resources, resolve_env_vars
    from fti_assets.settings import load_settings

    store = resolve_env_vars(build_resources(load_settings(data_dir=data_dir))["feast"]).store()
    last = sorted(Path(data_dir, "lake", "customer_features").glob("*.parquet"))[-1]
    frame = pd.read_parquet(last)
    # The served customers, then made-up ones with their values: a write the size of a bigger day.
    extra = frame.sample(max(0, entities - len(frame)), replace=True, random_state=0)
    extra["customer_id"] = [f"bench-{i}" for i in range(len(extra))]
    frame = pd.concat([frame, extra], ignore_index=True)
    views = [view.name for view in store.list_feature_views()]
    seconds: list[float] = []
    ready.set()
    while not done.is_set():
        started = time.perf_counter()
        for view in views:
            write_online_features(store, view, frame)
        seconds.append(time.perf_counter() - started)
    results.put((len(frame), seconds))


async def bounded_load(port: int, bodies: list[bytes], requests: int, seconds: float, concurrency: int) -> dict:
    """Up to ``requests`` POSTs /predict within ``seconds``, over ``concurrency`` connections."""
    payloads = [request_bytes(port, "POST", "/predict", b) for b in bodies]
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    counter = iter(range(requests))

    async def worker():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in counter:
                if time.monotonic() > deadline:
                    break
                started = time.perf_counter()
                writer.write(payloads[i % len(payloads)])
                status, body = await asyncio.wait_for(read_response(reader), timeout=30)
                latencies.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    errors.append(f"{status}: {body[:160]!r}")
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    values = np.array(latencies)
    return {
        "requests": len(values),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:3],
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "max_ms": float(values.max()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="most requests per load (default 3000)")
    parser.add_argument("--seconds", type=float, default=120, help="most seconds per load (default 120)")
    parser.add_argument("--concurrency", type=int, default=2, help="connections (default 2)")
    parser.add_argument("--entities", type=int, default=50_000, help="rows per write (default 50,000)")
    parser.add_argument("--data-dir", type=Path, help="demo folder to reuse (built there when empty)")
    args = parser.parse_args(argv)
    if min(args.requests, args.concurrency, args.entities) < 1 or args.seconds <= 0:
        parser.error("--requests, --concurrency, --entities and --seconds must be positive")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("FEAST_USAGE", "False")

    scratch = Path(tempfile.mkdtemp(prefix="fti-bench-writes-"))
    data_dir = (args.data_dir or scratch / "data").resolve()
    service = None
    try:
        if not has_demo(data_dir):
            print(f"building the small demo in {data_dir} ...", flush=True)
            build_demo(data_dir)
        bodies = [json.dumps({"customer_ids": [i]}).encode() for i in online_ids(data_dir)]
        env = {**os.environ, "FTI_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
        env.pop("FTI_CONFIG", None)
        env.pop("FTI_SERVICE_TOKEN", None)
        port, log_path = free_port(), scratch / "service.log"
        command = [sys.executable, "-m", "fti_assets.serving", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--request-log-dir", str(scratch / "request_log"), "--log-level", "warning"]
        service = start(command, env, log_path)
        wait_for_http(f"http://127.0.0.1:{port}/health", service, log_path)

        def measure() -> dict:
            return asyncio.run(bounded_load(port, bodies, args.requests, args.seconds, args.concurrency))

        asyncio.run(bounded_load(port, bodies, 200, 30, args.concurrency))  # warm-up
        idle = measure()
        context = multiprocessing.get_context("spawn")
        ready, done, results = context.Event(), context.Event(), context.Queue()
        writer = context.Process(target=write_loop, args=(str(data_dir), args.entities, ready, done, results))
        writer.start()
        if not ready.wait(timeout=300):
            raise RuntimeError("the writer process did not start")
        writing = measure()
        done.set()
        rows, write_seconds = results.get(timeout=300)
        writer.join(timeout=60)

        print(f"\n/predict, 1 id, {args.concurrency} connections, the service's default timeouts; loopback only")
        for name, r in (("store idle", idle), (f"store rewritten ({rows:,} rows a write)", writing)):
            samples = f"  {r['error_samples']}" if r["errors"] else ""
            print(
                f"  {name:36s} {r['requests']:>6} requests  errors {r['errors']}  p50 {r['p50_ms']:7.2f} ms  "
                f"p99 {r['p99_ms']:7.2f} ms  max {r['max_ms']:8.2f} ms{samples}"
            )
        if write_seconds:
            print(f"  {len(write_seconds)} writes during the load, {np.mean(write_seconds):.2f} s each on average")
        print(f"Target while writing: 0 errors -> {'met' if writing['errors'] == 0 else 'MISSED'}")
        return 0 if writing["errors"] == 0 else 1
    finally:
        if service is not None:
            stop(service)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
