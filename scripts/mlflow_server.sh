#!/usr/bin/env bash
# The MLflow tracking server of the scale-out profile, on loopback: scripts/mlflow_server.sh start|stop|status
# Runs, metrics and the model registry in FTI_MLFLOW_BACKEND_URL (required; a SQLAlchemy URL, e.g.
# postgresql+psycopg2://postgres@127.0.0.1:5432/fti_mlflow); artifacts served by the server itself (mlflow-artifacts:/)
# from FTI_MLFLOW_ARTIFACTS_DIR (default: artifacts/ beside the pid file). Clients use
# FTI_MLFLOW_TRACKING_URI=http://127.0.0.1:$FTI_MLFLOW_PORT (default port 5050; `make ui`'s MLflow keeps 5000).
# Pid file and log in FTI_MLFLOW_SERVER_DIR (default data/scaleout/mlflow-server). `start` waits at most
# FTI_MLFLOW_START_TIMEOUT seconds (default 120: the first start creates the schema) for /health.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$(cd "$ROOT" && cd "${BIN:-.venv/bin}" && pwd)"
DIR="${FTI_MLFLOW_SERVER_DIR:-$ROOT/data/scaleout/mlflow-server}"
PORT="${FTI_MLFLOW_PORT:-5050}"
HOST="${HOST:-127.0.0.1}"
ARTIFACTS="${FTI_MLFLOW_ARTIFACTS_DIR:-$DIR/artifacts}"
START_TIMEOUT="${FTI_MLFLOW_START_TIMEOUT:-120}"
PIDFILE="$DIR/server.pid"
LOG="$DIR/server.log"

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid() { [ -s "$PIDFILE" ] && tr -dc '0-9' <"$PIDFILE" || true; }
healthy() { "$BIN/python" - "$HOST" "$PORT" <<'EOF'
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(f"http://{sys.argv[1]}:{sys.argv[2]}/health", timeout=2).read().strip() == b"OK" else 1)
except OSError:
    sys.exit(1)
EOF
}

start() {
  : "${FTI_MLFLOW_BACKEND_URL:?mlflow_server.sh: set FTI_MLFLOW_BACKEND_URL (postgresql+psycopg2://user@host:5432/fti_mlflow)}"
  mkdir -p "$DIR" "$ARTIFACTS"
  if alive "$(pid)"; then
    echo "mlflow server: already running (pid $(pid)) on http://$HOST:$PORT"
    return 0
  fi
  [ -f "$LOG" ] && mv -f "$LOG" "$LOG.1"
  # Its own session, so `stop` can end the server and its workers together, and nothing else.
  MLFLOW_DISABLE_TELEMETRY=true setsid "$BIN/mlflow" server --host "$HOST" --port "$PORT" --workers 1 \
    --backend-store-uri "$FTI_MLFLOW_BACKEND_URL" --serve-artifacts --artifacts-destination "$ARTIFACTS" \
    --default-artifact-root mlflow-artifacts:/ >"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  local deadline=$((SECONDS + START_TIMEOUT))
  until healthy; do
    if ! alive "$(pid)" || [ $SECONDS -ge $deadline ]; then
      echo "mlflow server: not healthy on http://$HOST:$PORT (log $LOG):" >&2
      tail -n 30 "$LOG" >&2 || true
      stop >/dev/null 2>&1 || true
      return 1
    fi
    sleep 1
  done
  echo "mlflow server: ready (pid $(pid)) on http://$HOST:$PORT, backend $(redacted "$FTI_MLFLOW_BACKEND_URL"), artifacts $ARTIFACTS"
}

redacted() { sed -E 's#(://[^:/@]+:)[^@]*@#\1***@#' <<<"$1"; }

stop() {
  local p
  p="$(pid)"
  if alive "$p"; then
    kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while alive "$p" && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
    alive "$p" && { kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true; }
    echo "mlflow server: stopped"
  fi
  rm -f "$PIDFILE"
}

status() {
  if alive "$(pid)"; then echo "mlflow server running (pid $(pid)) on http://$HOST:$PORT"; else echo "mlflow server stopped"; return 3; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
