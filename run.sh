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
  cat <<'EOF_USAGE'
Usage: ./run.sh COMMAND

  install        create .venv, install torch (CPU; TORCH_INDEX_URL=... for a CUDA build) first,
                 then requirements.txt, the FSMN-VAD model and the tiny test models
  start          start the service in the background (logs to logs/app.log), wait for /health
  stop           stop the service (SIGTERM, then SIGKILL after STOP_TIMEOUT s); only the PID run.sh started
  restart        stop, then start
  status         running or not, PID, uptime, health
  logs           follow logs/app.log
  test           run the test suite (what CI runs)
  install-cron   write the crontab entries for the ops scripts (idempotent; --remove to delete them)
  -h, --help     this text

Settings come from the environment, then ENV_FILE (default .env; see .env.example). HOST and PORT decide
where /health is checked; LOG_DIR (logs), PID_FILE (LOG_DIR/app.pid), START_TIMEOUT (180 s) and
STOP_TIMEOUT (20 s) tune start and stop.

Exit status: 0 success; 1 failure (message on stderr); 2 usage error;
status: 0 running and healthy, 1 running but not healthy, 3 not running.
EOF_USAGE
}

die() { echo "error: $*" >&2; exit 1; }

# KEY=VALUE lines from ENV_FILE, exported unless the environment already sets the key (the environment wins,
# as for the app). Comments, blank lines, `export ` prefixes and surrounding quotes are handled; nothing is
# executed, so a value like $(cmd) stays text.
read_env_file() {
  local file="$1" line key value
  [[ -f "$file" ]] || return 0
  [[ -r "$file" ]] || die "cannot read $file"
  while IFS= read -r line || [[ -n "$line" ]]; do
    line="${line%$'\r'}"
    [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
    if [[ ! "$line" =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*=[[:space:]]*(.*)$ ]]; then
      echo "warning: $file: ignoring line: $line" >&2
      continue
    fi
    key="${BASH_REMATCH[2]}"
    value="${BASH_REMATCH[3]}"
    if [[ "$value" =~ ^\"(.*)\"[[:space:]]*(#.*)?$ || "$value" =~ ^\'(.*)\'[[:space:]]*(#.*)?$ ]]; then
      value="${BASH_REMATCH[1]}"
    else
      value="${value%%[[:space:]]#*}"                        # inline comment
      value="${value%"${value##*[![:space:]]}"}"             # trailing spaces
    fi
    [[ -v "$key" ]] || export "$key=$value"
  done < "$file"
}

abs_path() {  # relative paths are relative to the project folder, as in asr/settings.py
  case "$1" in /*) echo "$1" ;; *) echo "$ROOT/$1" ;; esac
}

load_env() {
  ENV_FILE="$(abs_path "${ENV_FILE:-.env}")"
  export ENV_FILE                                            # app.py's settings read the same file
  read_env_file "$ENV_FILE"
  HOST="${HOST:-0.0.0.0}"
  PORT="${PORT:-7860}"
  [[ "$PORT" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$PORT'"
  LOG_DIR="$(abs_path "${LOG_DIR:-logs}")"
  export LOG_DIR
  PID_FILE="$(abs_path "${PID_FILE:-$LOG_DIR/app.pid}")"
  APP_LOG="$LOG_DIR/app.log"
  STOPPED_MARKER="$LOG_DIR/app.stopped"                       # the watchdog leaves a stopped app alone
  START_TIMEOUT="${START_TIMEOUT:-180}"
  STOP_TIMEOUT="${STOP_TIMEOUT:-20}"
  [[ "$START_TIMEOUT$STOP_TIMEOUT" =~ ^[0-9]+$ ]] || die "START_TIMEOUT and STOP_TIMEOUT must be whole seconds"
  case "$HOST" in 0.0.0.0|::|"") CHECK_HOST=127.0.0.1 ;; *) CHECK_HOST="$HOST" ;; esac
  HEALTH_URL="http://$CHECK_HOST:$PORT/health"
  [[ -x "$VENV/bin/python" ]] || die "no virtual environment at $VENV: run ./run.sh install"
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

# The PID from PID_FILE, when that process is alive and is our app (not a stranger that reused the PID).
running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid args
  pid="$(tr -dc '0-9' < "$PID_FILE" 2>/dev/null || true)"
  [[ -n "$pid" ]] || return 1
  args="$(ps -o args= -p "$pid" 2>/dev/null || true)"
  [[ "$args" == *"$ROOT/app.py"* ]] || return 1
  echo "$pid"
}

port_in_use() {
  "$VENV/bin/python" - "$CHECK_HOST" "$PORT" <<'EOF_PY'
import socket, sys
with socket.socket() as s:
    s.settimeout(1)
    sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 1)
EOF_PY
}

# One word (ok, loading, error, down, ...), then the detail on error: what /health says right now.
health_status() {
  "$VENV/bin/python" - "$HEALTH_URL" <<'EOF_PY' 2>/dev/null || echo "down"
import json, sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        body = json.loads(r.read() or b"{}")
except urllib.error.HTTPError as e:
    body = json.loads(e.read() or b"{}")
except Exception:
    print("down"); sys.exit(0)
detail = body.get("detail")
print(body.get("status", "unknown") + (f" ({detail})" if detail else ""))
EOF_PY
}

last_log_lines() {
  echo "--- last lines of $APP_LOG ---" >&2
  tail -n "${1:-30}" "$APP_LOG" >&2 || true
  echo "---" >&2
}

cmd_start() {
  local pid
  if pid="$(running_pid)"; then
    die "already running (PID $pid, $HEALTH_URL); use ./run.sh restart"
  fi
  if port_in_use; then
    die "port $PORT on $CHECK_HOST is already in use by another process; stop it or set PORT in $ENV_FILE"
  fi
  mkdir -p "$LOG_DIR" 2>/dev/null || die "cannot create the log dir $LOG_DIR"
  [[ -w "$LOG_DIR" ]] || die "the log dir $LOG_DIR is not writable by $(id -un)"
  touch "$APP_LOG" 2>/dev/null || die "cannot write $APP_LOG"
  rm -f "$STOPPED_MARKER"
  if [[ "$HOST" != "127.0.0.1" && "$HOST" != "localhost" && -z "${API_KEYS:-}" && -z "${WEBUI_AUTH:-}" ]]; then
    echo "warning: listening on $HOST without API_KEYS or WEBUI_AUTH: anyone who can reach this port can use it" >&2
  fi
  echo "$(date '+%F %T,%3N') INFO run.sh: starting app.py on $HOST:$PORT" >> "$APP_LOG"
  # setsid: the app gets its own session, so it outlives this shell and cron's. This script has no job
  # control, so the background job is not a group leader and setsid execs in place: $! is the app's PID.
  # >> (append) lets logrotate's copytruncate truncate the file under the running app.
  PYTHONUNBUFFERED=1 setsid "$VENV/bin/python" "$ROOT/app.py" >>"$APP_LOG" 2>&1 </dev/null &
  pid=$!
  echo "$pid" > "$PID_FILE"
  local deadline=$((SECONDS + START_TIMEOUT)) health
  while (( SECONDS < deadline )); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PID_FILE"
      echo "error: the app (PID $pid) exited during start-up" >&2
      last_log_lines
      exit 1
    fi
    health="$(health_status)"
    case "$health" in
      ok)
        echo "started (PID $pid): http://$CHECK_HOST:$PORT/  (health: ok, logs: $APP_LOG)"
        return 0 ;;
      error*)
        echo "error: the app (PID $pid) failed to load: $health; stopping it" >&2
        last_log_lines
        stop_pid "$pid" >/dev/null
        exit 1 ;;
    esac
    sleep 1
  done
  echo "error: not healthy after ${START_TIMEOUT}s (PID $pid is still running, health: $(health_status));" \
       "raise START_TIMEOUT or see the log" >&2
  last_log_lines
  exit 1
}

# SIGTERM, wait up to STOP_TIMEOUT s, then SIGKILL: the one PID given, never a name or a group.
stop_pid() {
  local pid="$1" waited=0
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && (( waited < STOP_TIMEOUT * 10 )); do
    sleep 0.1
    waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "warning: PID $pid did not exit ${STOP_TIMEOUT}s after SIGTERM: sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$PID_FILE"
  echo "stopped (PID $pid)"
}

cmd_stop() {
  local pid
  mkdir -p "$LOG_DIR"
  touch "$STOPPED_MARKER"
  if ! pid="$(running_pid)"; then
    [[ -f "$PID_FILE" ]] && echo "removing stale PID file $PID_FILE"
    rm -f "$PID_FILE"
    echo "not running"
    return 0
  fi
  echo "$(date '+%F %T,%3N') INFO run.sh: stopping PID $pid" >> "$APP_LOG"
  stop_pid "$pid"
}

cmd_status() {
  local pid uptime health
  if pid="$(running_pid)"; then
    uptime="$(ps -o etime= -p "$pid" | tr -d ' ')"
    health="$(health_status)"
    echo "running: PID $pid, uptime $uptime, health $health ($HEALTH_URL)"
    [[ "$health" == ok ]] && return 0
    return 1
  fi
  if [[ -f "$PID_FILE" ]]; then
    echo "not running (stale PID file $PID_FILE: PID $(cat "$PID_FILE") is gone)"
  else
    echo "not running"
  fi
  return 3
}

main() {
  local cmd="${1:-}"
  case "$cmd" in
    -h|--help|help) usage ;;
    "") usage >&2; exit 2 ;;
    install) cmd_install ;;
    start) load_env; cmd_start ;;
    stop) load_env; cmd_stop ;;
    restart) load_env; cmd_stop; cmd_start ;;
    status) load_env; cmd_status ;;
    logs) load_env; exec tail -n 100 -F "$APP_LOG" ;;
    test) exec "$VENV/bin/python" -m pytest -q "${@:2}" ;;
    install-cron) load_env; exec "$ROOT/ops/install-cron.sh" "${@:2}" ;;
    *) echo "unknown command: $cmd" >&2; usage >&2; exit 2 ;;
  esac
}

main "$@"
