"""``python -m fti_assets.serving``: the service under uvicorn, in one process or several (``--workers``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from fastapi import FastAPI

from fti_assets.serving.app import create_app
from fti_assets.serving.settings import ServiceSettings
from fti_assets.settings import load_settings

log = logging.getLogger(__name__)

_WORKER_SPEC = "FTI_SERVICE_WORKER_SPEC"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Online churn scores from the MLflow champion and Feast features.")
    parser.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 8000)")
    parser.add_argument("--config", help="settings YAML (default: FTI_CONFIG or configs/simulated.yaml)")
    parser.add_argument("--poll-seconds", type=float, default=None, help="champion alias poll interval (default 5)")
    parser.add_argument("--cors-origin", action="append", default=None, help="allowed CORS origin (repeatable)")
    parser.add_argument("--request-log-dir", default=None, help="request log folder (default: <data_dir>/request_log)")
    parser.add_argument(
        "--store-timeout-seconds", type=float, default=None, help="longest wait for a silent online store (default 1)"
    )
    parser.add_argument(
        "--sqlite-lock-wait-seconds", type=float, default=None, help="longest wait for a SQLite writer (default 5)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes (default 1); each loads the champion, polls the alias and writes its own log file",
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "true")
    if args.config:
        # Worker processes read the settings from FTI_CONFIG: the same file.
        os.environ["FTI_CONFIG"] = str(Path(args.config).resolve())
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import uvicorn

    settings = ServiceSettings.from_project(
        load_settings(args.config),
        host=args.host,
        port=args.port,
        poll_seconds=args.poll_seconds,
        cors_origins=args.cors_origin,
        request_log_dir=args.request_log_dir,
        store_timeout_seconds=args.store_timeout_seconds,
        sqlite_lock_wait_seconds=args.sqlite_lock_wait_seconds,
    )
    log.info(
        f"serving on http://{settings.host}:{settings.port} (docs /docs) with {args.workers} process(es), request "
        f"log {settings.request_log_dir}, token {'required' if settings.bearer_token else 'not configured'}"
    )
    options = dict(
        host=settings.host, port=settings.port, log_level=args.log_level, access_log=False, server_header=False
    )
    if args.workers == 1:
        uvicorn.run(create_app(settings), **options)
        return 0
    # Worker processes import the app: they rebuild these settings from the same sources (the token, if
    # any, stays in FTI_SERVICE_TOKEN and is never written out).
    os.environ[_WORKER_SPEC] = json.dumps(
        {
            "config": os.environ.get("FTI_CONFIG"),
            "poll_seconds": settings.poll_seconds,
            "cors_origins": settings.cors_origins,
            "request_log_dir": str(settings.request_log_dir),
            "max_ids": settings.max_ids,
            "store_timeout_seconds": settings.store_timeout_seconds,
            "sqlite_lock_wait_seconds": settings.sqlite_lock_wait_seconds,
        }
    )
    uvicorn.run(f"{__name__}:app_for_worker", factory=True, workers=args.workers, **options)
    return 0


def app_for_worker() -> FastAPI:
    """The app of one ``--workers`` process (uvicorn factory), from the spec ``main`` put in the environment."""
    spec = json.loads(os.environ[_WORKER_SPEC])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ServiceSettings.from_project(
        load_settings(spec.pop("config")), request_log_writer=f"worker{os.getpid()}", **spec
    )
    return create_app(settings)
