#!/usr/bin/env bash
# `make ui`: the Dagster UI on loopback, with the two servers its links open: the drift reports over HTTP
# (FTI_REPORTS_PORT, 3001) and the MLflow UI (5000). Ctrl-C stops the UI, and the other two with it.
# Usage: scripts/ui.sh DATA_DIR   (the settings' data_dir: data, data/drift, ...)
set -euo pipefail
data=${1:-data}
bin=${BIN:-.venv/bin}
host=${HOST:-127.0.0.1}
mkdir -p "$data/reports" "$data/mlflow"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
"$bin/python" -m http.server "${FTI_REPORTS_PORT:-3001}" --bind "$host" --directory "$data/reports" \
  >"$data/reports-server.log" 2>&1 &
"$bin/mlflow" ui --host "$host" --port "${FTI_MLFLOW_UI_PORT:-5000}" \
  --backend-store-uri "sqlite:///$(cd "$data" && pwd)/mlflow/mlflow.db" >"$data/mlflow-ui.log" 2>&1 &
echo "drift reports: http://$host:${FTI_REPORTS_PORT:-3001}/  MLflow: http://$host:${FTI_MLFLOW_UI_PORT:-5000}/"
# In the foreground, so Ctrl-C reaches it. It announces that it is superseded by `dg dev` (another
# package); that line is filtered, the rest of its output stays.
PYTHONWARNINGS="ignore:Function \`dev_command\` is superseded" \
  "$bin/dagster" dev -h "$host" -p "${FTI_UI_PORT:-3000}" -w workspace.yaml
