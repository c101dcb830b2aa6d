"""Online serving latency and throughput: the churn service against Feast's own feature server.

    python bench/serving.py [--requests 2000] [--concurrency 2,8] [--workers 1] [--data-dir DIR]

Builds the small demo (400 simulated customers, as the tests do) into a temporary folder, or reuses
``--data-dir`` when it already holds a champion and an online store, then starts on 127.0.0.1, each in
its own process:

- the service (``python -m fti_assets.serving``): Feast online read + champion model + request log;
- ``feast serve`` on the same registry and online store (one worker, no access log): features only.

For 1 and 100 customer ids per request it sends a fixed number of requests (after a warm-up) from a
minimal asyncio HTTP/1.1 keep-alive client in this process, once one at a time and once per
``--concurrency`` level (that many connections, each sending its next request when the last is answered),
and prints p50/p99 latency and requests per second against the targets: p99 <= 3 ms for 1 id, <= 12 ms
for 100 ids, >= 1,000 requests/s. With a fixed number of connections the mean latency is connections /
throughput, so p99 <= 3 ms and 1,000 req/s can only hold together at 3 connections or fewer: the report
says at which levels each target holds, and whether one level meets all of them. The client shares the
machine's cores with the servers; every number is from this machine, nothing is extrapolated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fti_assets_tests.processes import free_port, start, stop, wait_for_http  # noqa: E402

TARGET_P99_MS = {1: 3.0, 100: 12.0}
TARGET_RPS = 1000.0
FEATURE_SERVICE = "customer_churn_v1"


# --------------------------------------------------------------------------------------------- setup


def build_demo(data_dir: Path) -> None:
    """The tests' small demo (fti_assets_tests.conftest.small_settings) materialized into data_dir."""
    from fti_assets.demo import run_demo
    from fti_assets_tests.conftest import dagster_instance, small_settings

    settings = small_settings(data_dir)
    instance = dagster_instance(data_dir / "dagster_home")
    started = time.perf_counter()
    run_demo(settings, instance, out=lambda line: print(f"  {line}", flush=True))
    instance.dispose()
    print(f"demo built in {time.perf_counter() - started:.0f} s", flush=True)


def has_demo(data_dir: Path) -> bool:
    return (data_dir / "mlflow" / "mlflow.db").exists() and (data_dir / "feast" / "registry.db").exists()


def online_ids(data_dir: Path) -> list[str]:
    """Customers the online store holds: the last materialized day's feature rows."""
    last = sorted((data_dir / "lake" / "customer_features").glob("*.parquet"))[-1]
    return [str(c) for c in pd.read_parquet(last, columns=["customer_id"])["customer_id"]]


def feast_repo(data_dir: Path, folder: Path) -> Path:
    """A feature_store.yaml for `feast serve` on the demo's registry and online store (what FeastResource
    builds in code, written as the CLI wants it)."""
    from fti_assets.resources.build import build_resources, resolve_env_vars
    from fti_assets.settings import load_settings

    feast = resolve_env_vars(build_resources(load_settings(data_dir=str(data_dir)))["feast"])
    if feast.online_store == "redis":
        online = f"  type: redis\n  connection_string: {json.dumps(feast.redis_connection_string)}\n"
    else:
        online = f"  type: sqlite\n  path: {json.dumps(feast.sqlite_path)}\n"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "feature_store.yaml").write_text(
        f"project: {feast.project}\n"
        "provider: local\n"
        f"registry: {json.dumps(feast.registry_path)}\n"
        f"online_store:\n{online}"
        "offline_store:\n  type: duckdb\n"
        "entity_key_serialization_version: 3\n"
    )
    return folder


def group_cpu_seconds(pgid: int) -> float | None:
    """CPU seconds (user + system) of every live process in a process group (a server and its workers), from
    /proc; None where there is no /proc. Less sensitive to other load on the machine than wall-clock latency."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ...
            total += int(fields[11]) + int(fields[12])
    return total / ticks


# -------------------------------------------------------------------------------------------- client


def request_bytes(port: int, method: str, path: str, body: bytes) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, bytes(body)
            body += chunk[:-2]
    raise RuntimeError("response without Content-Length or chunked encoding")


async def one_request(port: int, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_bytes(port, method, path, body))
        await writer.drain()
        return await asyncio.wait_for(read_response(reader), timeout=30)
    finally:
        writer.close()


async def load(port: int, path: str, bodies: list[bytes], requests: int, concurrency: int) -> dict:
    """``requests`` POSTs (bodies cycled) over ``concurrency`` keep-alive connections; latencies in ms."""
    payloads = [request_bytes(port, "POST", path, b) for b in bodies]
    latencies = np.empty(requests)
    errors: list[str] = []
    counter = iter(range(requests))

    async def worker():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in counter:
                started = time.perf_counter()
                writer.write(payloads[i % len(payloads)])
                status, body = await asyncio.wait_for(read_response(reader), timeout=30)
                latencies[i] = (time.perf_counter() - started) * 1000
                if status != 200 and len(errors) < 5:
                    errors.append(f"{status}: {body[:200]!r}")
                elif status != 200:
                    errors.append("")
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    return {
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "rps": requests / seconds,
        "errors": len(errors),
        "error_samples": [e for e in errors if e][:3],
    }


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement (default 2000)")
    parser.add_argument(
        "--concurrency",
        type=lambda text: sorted({int(c) for c in text.split(",")}),
        default=[2, 8],
        help="comma-separated connection counts measured besides 1 (default 2,8)",
    )
    parser.add_argument("--data-dir", type=Path, help="demo folder to reuse (built there when empty)")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured requests before each measurement")
    parser.add_argument("--workers", type=int, default=1, help="service processes (default 1; feast serve: 1)")
    args = parser.parse_args(argv)
    if args.requests < 1 or min(args.concurrency) < 1:
        parser.error("--requests and --concurrency must be at least 1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("FEAST_USAGE", "False")

    scratch = Path(tempfile.mkdtemp(prefix="fti-bench-serving-"))
    data_dir = (args.data_dir or scratch / "data").resolve()
    processes: list[subprocess.Popen] = []
    try:
        if has_demo(data_dir):
            print(f"reusing the demo in {data_dir}", flush=True)
        else:
            print(f"building the small demo in {data_dir} ...", flush=True)
            build_demo(data_dir)
        ids = online_ids(data_dir)
        rng = np.random.default_rng(0)
        bodies = {
            1: [json.dumps({"customer_ids": [i]}).encode() for i in ids],
            100: [json.dumps({"customer_ids": list(rng.choice(ids, 100))}).encode() for _ in range(50)],
        }
        feast_bodies = {
            n: [
                json.dumps(
                    {
                        "feature_service": FEATURE_SERVICE,
                        "entities": {"customer_id": json.loads(b)["customer_ids"]},
                        "full_feature_names": False,
                    }
                ).encode()
                for b in bs
            ]
            for n, bs in bodies.items()
        }

        env = {**os.environ, "FTI_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
        env.pop("FTI_CONFIG", None)  # paths come from FTI_DATA_DIR with the default settings file
        env.pop("FTI_SERVICE_TOKEN", None)
        service_port, feast_port = free_port(), free_port()
        service_log, feast_log = scratch / "service.log", scratch / "feast.log"
        service = start(
            [
                sys.executable,
                "-m",
                "fti_assets.serving",
                "--host",
                "127.0.0.1",
                "--port",
                str(service_port),
                "--request-log-dir",
                str(scratch / "request_log"),
                "--log-level",
                "warning",
                "--workers",
                str(args.workers),
            ],
            env,
            service_log,
        )
        processes.append(service)
        repo = feast_repo(data_dir, scratch / "feast_repo")
        feast_cli = str(Path(sys.executable).with_name("feast"))
        feast = start(
            [
                feast_cli,
                "-c",
                str(repo),
                "serve",
                "-h",
                "127.0.0.1",
                "-p",
                str(feast_port),
                "-w",
                "1",
                "--no-access-log",
                "--max-requests",
                "0",
                "--registry_ttl_sec",
                "600",
            ],
            env,
            feast_log,
        )
        processes.append(feast)
        wait_for_http(f"http://127.0.0.1:{service_port}/health", service, service_log)
        wait_for_http(f"http://127.0.0.1:{feast_port}/health", feast, feast_log)
        print(
            f"service on :{service_port}, feast serve on :{feast_port}; {len(ids)} customers online; "
            f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})\n",
            flush=True,
        )

        servers = [
            (f"service, {args.workers} process(es)", service_port, "/predict", bodies, service.pid),
            ("feast serve, 1 worker (features only)", feast_port, "/get-online-features", feast_bodies, feast.pid),
        ]
        rows = []
        load_before = os.getloadavg()
        for name, port, path, server_bodies, pgid in servers:
            for n in (1, 100):
                for concurrency in sorted({1, *args.concurrency}):
                    asyncio.run(load(port, path, server_bodies[n], args.warmup, concurrency))
                    cpu_before = group_cpu_seconds(pgid)
                    result = asyncio.run(load(port, path, server_bodies[n], args.requests, concurrency))
                    cpu_after = group_cpu_seconds(pgid)
                    result["cpu_ms"] = (
                        (cpu_after - cpu_before) / args.requests * 1000 if cpu_before is not None else float("nan")
                    )
                    rows.append({"server": name, "ids": n, "concurrency": concurrency, **result})
                    print(
                        f"  {name:38s} {n:>3} ids  c={concurrency:<3} p50 {result['p50_ms']:7.2f} ms  "
                        f"p99 {result['p99_ms']:7.2f} ms  {result['rps']:8.0f} req/s  "
                        f"server CPU {result['cpu_ms']:6.2f} ms/req  errors {result['errors']}"
                        + (f" {result['error_samples']}" if result["errors"] else ""),
                        flush=True,
                    )
        print()
        print(report(rows, args))
        print(
            f"Load average (1 min) with both servers idle, just before the first measurement: {load_before[0]:.2f} "
            f"on {os.cpu_count()} CPUs. That is other work on this machine competing for the same cores as the "
            "servers and the client; it inflates every number above."
        )
        return 0 if all(r["errors"] == 0 for r in rows) else 1
    finally:
        for process in processes:
            stop(process)
        # Server logs, the request log, feast serve's repo and (without --data-dir) the demo itself.
        shutil.rmtree(scratch, ignore_errors=True)


def report(rows: list[dict], args) -> str:
    from tabulate import tabulate

    table = tabulate(
        [
            [
                r["server"],
                r["ids"],
                r["concurrency"],
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                f"{r['rps']:.0f}",
                f"{r['cpu_ms']:.2f}",
                r["errors"],
            ]
            for r in rows
        ],
        headers=["server", "ids/request", "concurrency", "p50 ms", "p99 ms", "req/s", "server CPU ms/req", "errors"],
        tablefmt="github",
    )
    service = [r for r in rows if r["server"].startswith("service")]
    lines = [
        table,
        "",
        f"{args.requests} measured requests per row after {args.warmup} warm-up; client in the same machine.",
        "Targets for the service:",
    ]
    for n, target in TARGET_P99_MS.items():
        for r in (r for r in service if r["ids"] == n):
            verdict = "met" if r["p99_ms"] <= target else "MISSED"
            lines.append(
                f"  p99 <= {target:g} ms for {n} id{'s' if n > 1 else ''} at concurrency {r['concurrency']}: "
                f"{r['p99_ms']:.2f} ms -> {verdict}"
            )
    for r in (r for r in service if r["ids"] == 1):
        verdict = "met" if r["rps"] >= TARGET_RPS else "MISSED"
        lines.append(
            f"  >= {TARGET_RPS:,.0f} req/s for 1 id at concurrency {r['concurrency']}: "
            f"{r['rps']:.0f} req/s -> {verdict}"
        )
    lines.append(
        "  (server CPU ms/request is what the server processes used per request, whatever else the machine ran: "
        "one process reaches 1,000 req/s only under 1 ms)"
    )
    by_level = {}
    for r in service:
        met = r["p99_ms"] <= TARGET_P99_MS[r["ids"]] and (r["ids"] != 1 or r["rps"] >= TARGET_RPS)
        by_level.setdefault(r["concurrency"], []).append(met)
    levels = [c for c, met in sorted(by_level.items()) if all(met)]
    lines.append(
        "All three targets at one concurrency: "
        + (f"met at {', '.join(map(str, levels))}" if levels else "MISSED at every level measured")
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
