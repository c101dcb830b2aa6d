#!/usr/bin/env bash
# Celery workers of the scale-out profile (FTI_EXECUTOR=celery), on this machine, in their own processes:
#   scripts/workers.sh start|stop|status
# One worker per entry of FTI_WORKERS (name:queue[,queue] ...), default "default:dagster gpu:gpu": `fti-default` takes
# every step of the default queue, `fti-gpu` only the steps tagged dagster-celery/queue: gpu (the PyTorch step),
# standing for the GPU machines. Each is `celery -A fti_assets.celery_app worker`, detached, with a pid file and a log
# under FTI_WORKERS_DIR (default data/scaleout/workers), FTI_WORKER_CONCURRENCY steps at a time (default 1), each step
# killed after FTI_WORKER_TIME_LIMIT seconds (default 3600). `start` waits at most FTI_WORKER_START_TIMEOUT seconds
# (default 90) for every worker to be ready; `stop` lets running steps end for FTI_WORKER_STOP_TIMEOUT seconds
# (default 60), then kills what is left of that worker's own process group.
#
# The workers inherit this environment: FTI_CELERY_BROKER_URL (required) and FTI_CELERY_BACKEND_URL, and what the
# steps need: DAGSTER_HOME (with deploy/dagster.yaml) + FTI_DAGSTER_PG_URL, FTI_CONFIG, FTI_DATA_DIR, the URLs of
# MLflow, the Feast registry, the online store and the predictions table.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$(cd "$ROOT" && cd "${BIN:-.venv/bin}" && pwd)"
DIR="${FTI_WORKERS_DIR:-$ROOT/data/scaleout/workers}"
WORKERS="${FTI_WORKERS:-default:dagster gpu:gpu}"
CONCURRENCY="${FTI_WORKER_CONCURRENCY:-1}"
TIME_LIMIT="${FTI_WORKER_TIME_LIMIT:-3600}"
START_TIMEOUT="${FTI_WORKER_START_TIMEOUT:-90}"
STOP_TIMEOUT="${FTI_WORKER_STOP_TIMEOUT:-60}"

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { [ -s "$DIR/$1.pid" ] && tr -dc '0-9' <"$DIR/$1.pid" || true; }

start() {
  : "${FTI_CELERY_BROKER_URL:?workers.sh: set FTI_CELERY_BROKER_URL (redis://127.0.0.1:6379/5 or pyamqp://guest:guest@127.0.0.1:5672//)}"
  mkdir -p "$DIR"
  local entry name queues pid started=()
  for entry in $WORKERS; do
    name="${entry%%:*}" queues="${entry#*:}"
    pid="$(pid_of "$name")"
    if alive "$pid"; then
      echo "workers: fti-$name already running (pid $pid, queues $queues)"
      continue
    fi
    rm -f "$DIR/$name.pid"
    [ -f "$DIR/$name.log" ] && mv -f "$DIR/$name.log" "$DIR/$name.log.1"
    # --workdir: a detached worker would otherwise run from /, where relative paths of the settings break.
    "$BIN/celery" --workdir "$ROOT" -A fti_assets.celery_app worker --detach \
      -Q "$queues" -n "fti-$name@%h" --concurrency "$CONCURRENCY" --prefetch-multiplier 1 \
      --time-limit "$TIME_LIMIT" --without-gossip --without-mingle --loglevel INFO \
      --pidfile "$DIR/$name.pid" --logfile "$DIR/$name.log"
    started+=("$name:$queues")
  done
  local deadline=$((SECONDS + START_TIMEOUT)) item
  for item in "${started[@]}"; do
    name="${item%%:*}" queues="${item#*:}"
    until grep -q "fti-$name@.* ready\." "$DIR/$name.log" 2>/dev/null; do
      pid="$(pid_of "$name")"
      if [ $SECONDS -ge $deadline ] || { [ -n "$pid" ] && ! alive "$pid"; }; then
        echo "workers: fti-$name did not become ready (log $DIR/$name.log):" >&2
        tail -n 30 "$DIR/$name.log" >&2 2>/dev/null || true
        return 1
      fi
      sleep 0.5
    done
    echo "workers: fti-$name ready (pid $(pid_of "$name"), queues $queues, log $DIR/$name.log)"
  done
}

stop() {
  local entry name pid deadline
  for entry in $WORKERS; do
    name="${entry%%:*}"
    pid="$(pid_of "$name")"
    if ! alive "$pid"; then
      rm -f "$DIR/$name.pid"
      continue
    fi
    # TERM: a warm shutdown, the step in progress ends first.
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
    if alive "$pid"; then
      echo "workers: fti-$name (pid $pid) still running after ${STOP_TIMEOUT}s: killing its process group" >&2
      # A detached worker leads its own session and process group: only its own pool processes are in it.
      [ "$(ps -o pgid= -p "$pid" | tr -d ' ')" = "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$DIR/$name.pid"
    echo "workers: fti-$name stopped"
  done
}

status() {
  local entry name pid code=0
  for entry in $WORKERS; do
    name="${entry%%:*}"
    pid="$(pid_of "$name")"
    if alive "$pid"; then echo "fti-$name running (pid $pid, queues ${entry#*:})"; else echo "fti-$name stopped"; code=3; fi
  done
  return $code
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
