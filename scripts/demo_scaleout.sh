#!/usr/bin/env bash
# `make demo-scaleout`: the whole FTI graph on real engines, on loopback, switched by configuration only:
#   Dagster instance   PostgreSQL (deploy/dagster.yaml in DAGSTER_HOME, FTI_DAGSTER_PG_URL)
#   steps              Celery workers in their own processes (scripts/workers.sh): `gpu` queue for the PyTorch step,
#                      the default queue for the rest; broker Redis (or RabbitMQ: FTI_CELERY_BROKER_URL=pyamqp://...)
#   MLflow             a tracking server (scripts/mlflow_server.sh) on PostgreSQL, artifacts served by the server
#   Feast              SQL registry on PostgreSQL; online store Redis
#   predictions        a PostgreSQL table
# It creates its own databases (${FTI_SCALEOUT_DB_PREFIX}dagster, ...mlflow, ...feast, ...predictions; dropped and
# created again on every run), its data folder (FTI_SCALEOUT_DIR, default data/scaleout, emptied on every run), starts
# the MLflow server and the workers, runs the graph (python -m fti_assets.demo_scaleout), prints where each piece ran,
# and stops what it started, also on failure or Ctrl-C. PostgreSQL and Redis: this machine's (scripts/services.sh).
# Settings: FTI_CONFIG, default configs/scaleout.yaml (400 customers x 130 days: a few minutes on 2 cores).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
BIN="$(cd "${BIN:-.venv/bin}" && pwd)"; export BIN
export MLFLOW_DISABLE_TELEMETRY=true DAGSTER_DISABLE_TELEMETRY=true MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false

PG="${FTI_SCALEOUT_PG:-postgresql+psycopg2://postgres@127.0.0.1:5432}"   # server; the databases are ours
PREFIX="${FTI_SCALEOUT_DB_PREFIX:-fti_}"
RUN_DIR="${FTI_SCALEOUT_DIR:-$ROOT/data/scaleout}"
PSQL_URL="${PG/+psycopg2/}/postgres"

export FTI_CONFIG="${FTI_CONFIG:-configs/scaleout.yaml}"
export FTI_DATA_DIR="$RUN_DIR"
export DAGSTER_HOME="$RUN_DIR/dagster_home"
export FTI_DAGSTER_PG_URL="$PG/${PREFIX}dagster"
export FTI_MLFLOW_BACKEND_URL="$PG/${PREFIX}mlflow"
export FTI_FEAST_REGISTRY_URL="$PG/${PREFIX}feast"
export FTI_PREDICTIONS_URL="$PG/${PREFIX}predictions"
export FTI_EXECUTOR=celery
export FTI_CELERY_BROKER_URL="${FTI_CELERY_BROKER_URL:-redis://127.0.0.1:6379/5}"
export FTI_ONLINE_STORE=redis
export FTI_REDIS_URL="${FTI_SCALEOUT_REDIS_URL:-127.0.0.1:6379,db=4}"
export FTI_MLFLOW_PORT="${FTI_MLFLOW_PORT:-5050}"
export FTI_MLFLOW_TRACKING_URI="http://127.0.0.1:$FTI_MLFLOW_PORT"
export FTI_MLFLOW_UI_URL="$FTI_MLFLOW_TRACKING_URI"
# Artifacts through the server, not a folder the client writes (effective for a new experiment: a fresh database).
export FTI_MLFLOW_ARTIFACT_LOCATION="mlflow-artifacts:/fti"
export FTI_MLFLOW_SERVER_DIR="$RUN_DIR/mlflow-server"
export FTI_WORKERS_DIR="$RUN_DIR/workers"

step() { echo "[scaleout] $*"; }

# A fresh folder each run; never empty a folder this script did not make.
if [ -d "$RUN_DIR" ] && [ -n "$(ls -A "$RUN_DIR")" ] && [ ! -f "$RUN_DIR/.fti-scaleout" ]; then
  echo "demo_scaleout: $RUN_DIR exists and was not made by this script; set FTI_SCALEOUT_DIR elsewhere" >&2
  exit 2
fi
[ -f "$RUN_DIR/.fti-scaleout" ] && { "$ROOT/scripts/workers.sh" stop >/dev/null 2>&1 || true; "$ROOT/scripts/mlflow_server.sh" stop >/dev/null 2>&1 || true; }
rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR" "$DAGSTER_HOME"
touch "$RUN_DIR/.fti-scaleout"
cp deploy/dagster.yaml "$DAGSTER_HOME/dagster.yaml"

if [ -z "${FTI_SCALEOUT_SKIP_SERVICES:-}" ]; then
  case "$FTI_CELERY_BROKER_URL" in redis*) scripts/services.sh postgres redis ;; *) scripts/services.sh postgres ;; esac
fi
for db in dagster mlflow feast predictions; do
  out=$(psql "$PSQL_URL" -v ON_ERROR_STOP=1 -q -c "DROP DATABASE IF EXISTS ${PREFIX}$db WITH (FORCE)" \
    -c "CREATE DATABASE ${PREFIX}$db" 2>&1) || { echo "$out" >&2; exit 1; }
done
step "databases ${PREFIX}{dagster,mlflow,feast,predictions} on ${PG#*://}; data in $RUN_DIR"

cleanup() {
  local code=$?
  step "stopping what this run started"
  scripts/workers.sh stop || true
  scripts/mlflow_server.sh stop || true
  exit $code
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scripts/mlflow_server.sh start
# Tasks an interrupted earlier run left in the two queues would be taken by the new workers: drop them first.
"$BIN/celery" -A fti_assets.celery_app purge -f -Q dagster,gpu >/dev/null
scripts/workers.sh start
step "running the graph: FTI_EXECUTOR=celery, broker ${FTI_CELERY_BROKER_URL}"
"$BIN/python" -m fti_assets.demo_scaleout ${FTI_SCALEOUT_REPORT:+--report "$FTI_SCALEOUT_REPORT"}
