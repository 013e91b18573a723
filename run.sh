#!/usr/bin/env bash
# Paraformer WebUI: install, start, stop and inspect the service.
# Run `./run.sh --help` for the commands.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

VENV="${VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON_BIN:-python3}"
TORCH_VERSION="2.13.0"

usage() {
  cat <<'EOF'
Usage: ./run.sh COMMAND

  install        create .venv, install torch (CPU; TORCH_INDEX_URL=... for a CUDA build) first,
                 then requirements.txt, the FSMN-VAD model and the tiny test models
  start          start the service in the background (logs to logs/app.log), wait for /health
  stop           stop the service (SIGTERM, then SIGKILL after STOP_TIMEOUT s)
  restart        stop, then start
  status         running or not, PID, uptime, health
  logs           follow logs/app.log
  test           run the test suite (what CI runs)
  install-cron   write the crontab entries for the ops scripts (idempotent)
  -h, --help     this text

Settings come from .env (see .env.example); HOST and PORT decide where /health is checked.
EOF
}

load_env() {
  if [[ -f "$ROOT/.env" ]]; then
    set -a
    # shellcheck disable=SC1091
    source "$ROOT/.env"
    set +a
  fi
  HOST="${HOST:-0.0.0.0}"
  PORT="${PORT:-7860}"
  LOG_DIR="${LOG_DIR:-$ROOT/logs}"
  PID_FILE="${PID_FILE:-$LOG_DIR/app.pid}"
  APP_LOG="${APP_LOG:-$LOG_DIR/app.log}"
  START_TIMEOUT="${START_TIMEOUT:-180}"
  STOP_TIMEOUT="${STOP_TIMEOUT:-20}"
  case "$HOST" in 0.0.0.0|::|"") CHECK_HOST=127.0.0.1 ;; *) CHECK_HOST="$HOST" ;; esac
  HEALTH_URL="http://$CHECK_HOST:$PORT/health"
}

cmd_install() {
  if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON_BIN" -m venv "$VENV"
  fi
  local pip=("$VENV/bin/python" -m pip)
  "${pip[@]}" install -q --upgrade pip
  # torch first, alone, so nothing else can choose its build.
  if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
    "${pip[@]}" install -q "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"
  else
    "${pip[@]}" install -q "torch==$TORCH_VERSION"
  fi
  "${pip[@]}" install -q -r requirements.txt
  if "${pip[@]}" show torchaudio >/dev/null 2>&1; then
    echo "error: torchaudio got installed; it breaks funasr on this setup: pip uninstall torchaudio" >&2
    exit 1
  fi
  "${pip[@]}" check
  "$VENV/bin/python" -m asr.testmodels --vad --tiny
  [[ -f .env ]] || cp .env.example .env
  echo "installed: start with ./run.sh start, test with ./run.sh test"
}

pid_alive() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null)"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null
}

port_in_use() {
  "$VENV/bin/python" - "$CHECK_HOST" "$PORT" <<'EOF'
import socket, sys
s = socket.socket()
s.settimeout(1)
sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 1)
EOF
}

health_status() {
  curl -s -m 5 "$HEALTH_URL" 2>/dev/null | "$VENV/bin/python" -c \
    'import json,sys; print(json.load(sys.stdin).get("status","unknown"))' 2>/dev/null || echo "down"
}

cmd_start() {
  if pid_alive; then
    echo "already running (PID $(cat "$PID_FILE")); use ./run.sh restart" >&2
    exit 1
  fi
  if port_in_use; then
    echo "port $PORT on $CHECK_HOST is in use by another process; set PORT in .env or stop it" >&2
    exit 1
  fi
  mkdir -p "$LOG_DIR"
  if [[ ! -w "$LOG_DIR" ]]; then
    echo "log dir $LOG_DIR is not writable" >&2
    exit 1
  fi
  if [[ "$HOST" != "127.0.0.1" && "$HOST" != "localhost" && -z "${API_KEYS:-}" && -z "${WEBUI_AUTH:-}" ]]; then
    echo "warning: listening on $HOST without API_KEYS or WEBUI_AUTH: anyone who can reach this port can use it" >&2
  fi
  # setsid: the app gets its own session, so it outlives this shell and cron's.
  setsid "$VENV/bin/python" "$ROOT/app.py" >>"$APP_LOG" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid" > "$PID_FILE"
  local waited=0
  while (( waited < START_TIMEOUT )); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "the app exited during start-up; last log lines:" >&2
      tail -n 30 "$APP_LOG" >&2
      rm -f "$PID_FILE"
      exit 1
    fi
    if [[ "$(health_status)" == "ok" ]]; then
      echo "started (PID $pid): http://$CHECK_HOST:$PORT/"
      return 0
    fi
    sleep 1
    waited=$((waited + 1))
  done
  echo "not healthy after ${START_TIMEOUT}s (PID $pid still running); last log lines:" >&2
  tail -n 30 "$APP_LOG" >&2
  exit 1
}

cmd_stop() {
  if ! pid_alive; then
    rm -f "$PID_FILE"
    echo "not running"
    return 0
  fi
  local pid
  pid="$(cat "$PID_FILE")"
  kill -TERM "$pid"
  local waited=0
  while kill -0 "$pid" 2>/dev/null && (( waited < STOP_TIMEOUT )); do
    sleep 1
    waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "no exit after ${STOP_TIMEOUT}s: sending SIGKILL to $pid" >&2
    kill -KILL "$pid"
  fi
  rm -f "$PID_FILE"
  echo "stopped (PID $pid)"
}

cmd_status() {
  if pid_alive; then
    local pid uptime
    pid="$(cat "$PID_FILE")"
    uptime="$(ps -o etime= -p "$pid" | tr -d ' ')"
    echo "running: PID $pid, uptime $uptime, health $(health_status) ($HEALTH_URL)"
    return 0
  fi
  echo "not running"
  return 3
}

main() {
  local cmd="${1:-}"
  case "$cmd" in
    -h|--help|help|"") usage; [[ -n "$cmd" ]] ;;
    install) cmd_install ;;
    start) load_env; cmd_start ;;
    stop) load_env; cmd_stop ;;
    restart) load_env; cmd_stop; cmd_start ;;
    status) load_env; cmd_status ;;
    logs) load_env; tail -n 100 -F "$APP_LOG" ;;
    test) exec "$VENV/bin/python" -m pytest -q "${@:2}" ;;
    install-cron) load_env; exec "$ROOT/ops/install-cron.sh" ;;
    *) echo "unknown command: $cmd" >&2; usage >&2; exit 2 ;;
  esac
}

main "$@"
