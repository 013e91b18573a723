#!/usr/bin/env bash
# Paraformer WebUI: install, start, stop and inspect the service.
# Run `./run.sh --help` for the commands.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

VENV="${VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON_BIN:-python3}"

usage() {
  cat <<'EOF_USAGE'
Usage: ./run.sh [--replicas N] COMMAND [REPLICA]

  install [--dev]
                 create .venv, install torch first, then requirements.txt (the runtime set), the FSMN-VAD
                 model and the tiny test models; --dev adds requirements-dev.txt (tests, lint, benchmarks;
                 `test` and `lint` install it when missing). torch: TORCH_INDEX_URL when set; else on a
                 machine whose nvidia-smi lists a GPU, the CUDA build for its driver (checked: torch must
                 see the GPU); else PyPI's
  check-gpu      the NVIDIA GPUs nvidia-smi lists, the driver's CUDA version, and whether the venv's torch
                 can use them; when it cannot, the TORCH_INDEX_URL to install (exit 1)
  start [I]      start every replica (or replica I) in the background, wait for /health
  stop [I]       stop every replica (or replica I): SIGTERM, then SIGKILL after STOP_TIMEOUT s;
                 only the PIDs run.sh started
  restart [I]    one replica: stop, then start. All: a rolling restart, one replica at a time, each back to
                 health (and ROLLING_PAUSE_S, 10 s, for nginx to take it back) before the next is stopped
                 (with one replica: stop, then start)
  status [I]     every replica (or replica I): running or not, PID, uptime, GPU, health, the device the
                 model runs on; a warning when nvidia-smi lists a GPU the model does not use
  logs [I]       follow the log of replica I (default 0: logs/app.log)
  replicas       one line per replica, tab-separated, for the ops scripts:
                 index port health_url gpu pid_file log_file stopped_file
  nginx-config [--listen ADDR:PORT] [--upstreams H:P,H:P...] [--standalone DIR] [-o FILE]
                 write the nginx config for the replicas (template: ops/nginx/paraformer-webui.conf.template)
                 to stdout or FILE; --standalone DIR writes DIR/nginx.conf, a complete config nginx can
                 run as this user from DIR (prints the command)
  test [ARGS]    run the test suite (what CI runs; ARGS go to pytest); installs requirements-dev.txt
                 first when the venv lacks it
  lint [PATH...] ruff check and ruff format --check (the whole tree by default; config: pyproject.toml)
  install-cron   write the crontab entries for the ops scripts (idempotent; --remove to delete them)
  -h, --help     this text

Replicas: REPLICAS (default 1) or --replicas N. Replica I listens on PORT+I and writes logs/app-I.log,
logs/app-I.pid and logs/app-I.stopped; replica 0 keeps logs/app.log, logs/app.pid and logs/app.stopped.
With several replicas and GPUs, replica I gets CUDA_VISIBLE_DEVICES=the I-th GPU of REPLICA_GPUS (default:
every GPU nvidia-smi lists, round robin; "none": leave CUDA_VISIBLE_DEVICES alone).

Settings come from the environment, then ENV_FILE (default .env; see .env.example), read by the app's own
settings class (ops/settings.py; `.venv/bin/python -m ops.settings` lists them). HOST and PORT decide where
/health is checked; LOG_DIR (logs), PID_FILE (LOG_DIR/app.pid), START_TIMEOUT (180 s) and STOP_TIMEOUT
(20 s) tune start and stop. A bad value stops every command but stop, status, logs and replicas, which
warn and use its default.

Exit status: 0 success; 1 failure (message on stderr); 2 usage error; check-gpu: 0 the GPU is used or
there is none, 1 a GPU is present that torch cannot use;
status: 0 running and healthy (every replica), 1 running but not healthy (some replica down or not ok),
3 not running (no replica).
EOF_USAGE
}

die() { echo "error: $*" >&2; exit 1; }

need_venv() { [[ -x "$VENV/bin/python" ]] || die "no virtual environment at $VENV: run ./run.sh install"; }

# The settings, read by ops/settings.py (the app's settings class: environment, then ENV_FILE, then defaults) and
# eval'ed from its quoted assignments: ENV_FILE HOST PORT CHECK_HOST REPLICAS LOG_DIR BASE_PID_FILE START_TIMEOUT
# STOP_TIMEOUT ROLLING_PAUSE_S ACCESS_PROTECTED, and the arrays GPUS (the GPU ids replicas are spread over, round
# robin) and APP_ENV (the file's KEY=VALUE pairs the environment does not set, for the app's environment).
# $1: --lenient (a bad value is a warning; for commands that must work whatever .env holds).
load_env() {
  need_venv
  local assignments
  assignments="$("$VENV/bin/python" -m ops.settings --shell "$@")" || exit 1
  eval "$assignments"
  export ENV_FILE LOG_DIR                                     # the app reads the same file; install-cron uses both
  BASE_PORT="$PORT"
  select_replica 0
}

# Point the per-replica globals (PORT, PID_FILE, APP_LOG, STOPPED_MARKER, HEALTH_URL, GPU, P) at replica $1.
# Replica 0 keeps the single-instance names (logs/app.log, logs/app.pid), replica I uses app-I.*.
select_replica() {
  local i="$1" suffix=""
  (( i > 0 )) && suffix="-$i"
  R="$i"
  PORT=$((BASE_PORT + i))
  PID_FILE="$BASE_PID_FILE"
  (( i > 0 )) && PID_FILE="${BASE_PID_FILE%.pid}$suffix.pid"
  APP_LOG="$LOG_DIR/app$suffix.log"
  STOPPED_MARKER="$LOG_DIR/app$suffix.stopped"                # the watchdog leaves a stopped replica alone
  HEALTH_URL="http://$CHECK_HOST:$PORT/health"
  GPU=""
  (( ${#GPUS[@]} > 0 )) && GPU="${GPUS[$((i % ${#GPUS[@]}))]}"
  P=""                                                      # message prefix, only with several replicas
  (( REPLICAS > 1 || i > 0 )) && P="replica $i: "
  return 0
}

# The configured replicas (0..REPLICAS-1), plus any other whose PID file names a live app (started with a
# larger --replicas), so `stop` and `status` never lose track of one.
replica_indexes() {
  local i f n
  local -A seen=()
  for ((i = 0; i < REPLICAS; i++)); do seen[$i]=1; echo "$i"; done
  for f in "${BASE_PID_FILE%.pid}"-*.pid; do
    [[ -f "$f" ]] || continue
    n="${f##*-}"; n="${n%.pid}"
    [[ "$n" =~ ^[0-9]+$ && -z "${seen[$n]:-}" ]] || continue
    select_replica "$n"
    if running_pid >/dev/null; then seen[$n]=1; echo "$n"; fi
  done | sort -n
}

check_index() {
  [[ "$1" =~ ^[0-9]+$ ]] || { echo "error: the replica must be a number, got '$1'" >&2; exit 2; }
  (( $1 < REPLICAS )) || [[ -f "${BASE_PID_FILE%.pid}-$1.pid" ]] || {
    echo "error: no replica $1 (REPLICAS=$REPLICAS: replicas 0..$((REPLICAS - 1)))" >&2; exit 2; }
}
# --- GPU: what nvidia-smi sees and whether the venv's torch can use it (ops/cuda.py) ---------------------------

# 0: torch uses the GPU, or there is none; 1: a GPU is present and torch cannot use it (the message says what to
# install). Without the venv the system's python3 still reports the driver's side.
cmd_check_gpu() {
  local python="$VENV/bin/python"
  [[ -x "$python" ]] || python="$PYTHON_BIN"
  "$python" -m ops.cuda check --venv "$VENV"
}

# torch $TORCH_VERSION from index $1 (empty: pip's default). pip takes any installed 2.13.0 build as
# satisfying ==2.13.0, so a different build (+cpu when +cu128 is wanted) is removed first.
install_torch() {
  local index="$1" pip=("$VENV/bin/python" -m pip) installed want
  if [[ -z "$index" ]]; then
    "${pip[@]}" install -q "torch==$TORCH_VERSION"
    return
  fi
  installed="$("$VENV/bin/python" -m ops.cuda torch-version 2>/dev/null || true)"
  want="${index%/}"
  want="${want##*/}"
  if [[ -n "$installed" && "$installed" != "$TORCH_VERSION+$want" ]]; then
    echo "replacing torch $installed with the $want build"
    "${pip[@]}" uninstall -y -q torch
  fi
  if ! "${pip[@]}" install -q "torch==$TORCH_VERSION" --index-url "$index"; then
    die "could not install torch $TORCH_VERSION from $index. Set TORCH_INDEX_URL to an index or mirror that has" \
        "this build (or PIP_FIND_LINKS to a folder with its wheel); TORCH_INDEX_URL=$TORCH_INDEX_BASE/cpu installs" \
        "the CPU build"
  fi
}

cmd_install() {
  local dev=0 arg
  for arg in "$@"; do
    case "$arg" in
      --dev) dev=1 ;;
      *) echo "unknown install option: $arg (only --dev)" >&2; exit 2 ;;
    esac
  done
  if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON_BIN" -m venv "$VENV"
  fi
  local pip=("$VENV/bin/python" -m pip) index="${TORCH_INDEX_URL:-}" gpu=0
  "${pip[@]}" install -q --upgrade pip
  # TORCH_VERSION, TORCH_INDEX_BASE and the driver's GPU_NAMES, DRIVER_CUDA, SMI_ERROR, DRIVER_INDEX, DRIVER_TOO_OLD
  eval "$("$VENV/bin/python" -m ops.cuda --shell)"
  # torch first, alone, so nothing else can choose its build. On a GPU machine: the CUDA build its driver runs.
  if [[ -n "$GPU_NAMES" ]]; then
    gpu=1
    echo "NVIDIA GPU found: $GPU_NAMES (the driver runs CUDA ${DRIVER_CUDA:-(unknown)})"
    if [[ -z "$index" && -n "$DRIVER_CUDA" ]]; then
      [[ -n "$DRIVER_INDEX" ]] || die "$DRIVER_TOO_OLD: upgrade the driver, or install the CPU build:" \
        "TORCH_INDEX_URL=$TORCH_INDEX_BASE/cpu ./run.sh install"
      index="$DRIVER_INDEX"
      echo "installing torch $TORCH_VERSION for CUDA from $index (TORCH_INDEX_URL=... picks another build)"
    fi
  elif [[ -n "$SMI_ERROR" ]]; then
    echo "warning: nvidia-smi fails ($SMI_ERROR): no GPU can be used until the NVIDIA driver works;" \
         "installing torch ${index:+from $index }without a GPU check (./run.sh check-gpu once the driver works)" >&2
  fi
  install_torch "$index"
  "${pip[@]}" install -q -r requirements.txt
  (( dev )) && "${pip[@]}" install -q -r requirements-dev.txt
  # The check asks torch through asr/device.py, so it runs once the requirements are in.
  if (( gpu )) && ! cmd_check_gpu; then
    if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
      echo "warning: keeping the torch build TORCH_INDEX_URL asked for; the service will run on the CPU" >&2
    else
      die "torch cannot use the GPU (above): install the build it names"
    fi
  fi
  if "${pip[@]}" show torchaudio >/dev/null 2>&1; then
    echo "error: torchaudio got installed; it breaks funasr on this setup: pip uninstall torchaudio" >&2
    exit 1
  fi
  "${pip[@]}" check
  "$VENV/bin/python" -m testmodels --vad --tiny --tiny-online --tiny-sensevoice
  local env_file="${ENV_FILE:-.env}"
  [[ "$env_file" == /* ]] || env_file="$ROOT/$env_file"     # relative to the project folder, as for the app
  [[ -f "$env_file" ]] || cp .env.example "$env_file"
  echo "installed: start with ./run.sh start, test with ./run.sh test"
}

# The development requirements (tests, lint, benchmarks), installed when the venv lacks one of their pins.
ensure_dev() {
  need_venv
  if ! "$VENV/bin/python" -m ops.requirements requirements-dev.txt >/dev/null; then
    echo "installing the development requirements (requirements-dev.txt)" >&2
    "$VENV/bin/python" -m pip install -q -r requirements-dev.txt
  fi
}

cmd_lint() {
  local rc=0
  ensure_dev
  (( $# )) || set -- .
  "$VENV/bin/python" -m ruff check "$@" || rc=1
  "$VENV/bin/python" -m ruff format --check "$@" || rc=1
  return "$rc"
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

# What /health says right now, in three lines: one word (ok, loading, error, down, ...) with the detail on
# error; the device the model runs on (empty before the load); a warning about a GPU the model does not use.
health_fields() {
  "$VENV/bin/python" -m ops.health "$HEALTH_URL" 2>/dev/null || printf 'down\n\n\n'
}

health_status() { health_fields | head -n 1; }

warn_gpu_unused() { [[ -z "$1" ]] || echo "warning: $P$1" >&2; }

last_log_lines() {
  echo "--- last lines of $APP_LOG ---" >&2
  tail -n "${1:-30}" "$APP_LOG" >&2 || true
  echo "---" >&2
}

fail() { echo "error: $P$*" >&2; return 1; }

# Start the selected replica in the background; its PID goes to PID_FILE. Returns 1 (with the reason on
# stderr) when it is already running, its port is taken or LOG_DIR is unusable.
launch_replica() {
  local pid
  if pid="$(running_pid)"; then
    fail "already running (PID $pid, $HEALTH_URL); use ./run.sh restart${P:+ $R}"
    return 1
  fi
  if port_in_use; then
    fail "port $PORT on $CHECK_HOST is already in use by another process; stop it or set PORT in $ENV_FILE"
    return 1
  fi
  mkdir -p "$LOG_DIR" 2>/dev/null || die "cannot create the log dir $LOG_DIR"
  [[ -w "$LOG_DIR" ]] || die "the log dir $LOG_DIR is not writable by $(id -un)"
  touch "$APP_LOG" 2>/dev/null || die "cannot write $APP_LOG"
  rm -f "$STOPPED_MARKER"
  echo "$(date '+%F %T,%3N') INFO run.sh: starting app.py on $HOST:$PORT${P:+ (replica $R${GPU:+, GPU $GPU})}" \
    >> "$APP_LOG"
  # setsid: the app gets its own session, so it outlives this shell and cron's. This script has no job
  # control, so the background job is not a group leader and setsid execs in place: $! is the app's PID.
  # >> (append) lets logrotate's copytruncate truncate the file under the running app.
  # The app's environment: the settings file's pairs (APP_ENV, as systemd's EnvironmentFile would give them),
  # then PORT (it wins over .env in the app's settings) and, only when a GPU is assigned, CUDA_VISIBLE_DEVICES
  # (with one, the app's DEVICE=auto or cuda means that GPU), numbered as nvidia-smi and NVML number them (PCI
  # bus order; CUDA's own default order can differ). env execs setsid, which execs python: one process.
  local -a gpu_env=()
  [[ -z "$GPU" ]] || gpu_env=(CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES="$GPU")
  env "${APP_ENV[@]}" PORT="$PORT" REPLICA="$R" "${gpu_env[@]}" PYTHONUNBUFFERED=1 \
    setsid "$VENV/bin/python" "$ROOT/app.py" >>"$APP_LOG" 2>&1 </dev/null &
  pid=$!
  echo "$pid" > "$PID_FILE"
}

# Wait until the selected replica (PID $1) says ok, until the clock passes $2 (SECONDS). 0 ok, 1 not.
wait_replica() {
  local pid="$1" deadline="$2" health device gpu_warning
  while (( SECONDS < deadline )); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PID_FILE"
      fail "the app (PID $pid) exited during start-up"
      last_log_lines
      return 1
    fi
    { read -r health; read -r device; read -r gpu_warning; } < <(health_fields)
    case "$health" in
      ok)
        echo "${P}started (PID $pid): http://$CHECK_HOST:$PORT/  (health: ok, ${GPU:+GPU $GPU, }device $device," \
             "logs: $APP_LOG)"
        warn_gpu_unused "$gpu_warning"
        return 0 ;;
      error*)
        fail "the app (PID $pid) failed to load: $health; stopping it"
        last_log_lines
        stop_pid "$pid" >/dev/null
        return 1 ;;
    esac
    sleep 1
  done
  fail "not healthy after ${START_TIMEOUT}s (PID $pid is still running, health: $(health_status));" \
       "raise START_TIMEOUT or see the log"
  last_log_lines
  return 1
}

# Start the given replicas: launch them all (they load their models side by side), then wait for each.
start_replicas() {
  local i pid failed=0 deadline=$((SECONDS + START_TIMEOUT))
  local -a launched=()
  if (( ${#GPUS[@]} > 0 && $# > ${#GPUS[@]} )); then
    echo "warning: $# replicas on ${#GPUS[@]} GPU(s) (${GPUS[*]}): some share a GPU" >&2
  fi
  for i in "$@"; do
    select_replica "$i"
    if launch_replica; then launched+=("$i"); else failed=1; fi
  done
  for i in "${launched[@]}"; do
    select_replica "$i"
    pid="$(tr -dc '0-9' < "$PID_FILE")"
    wait_replica "$pid" "$deadline" || failed=1
  done
  return "$failed"
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
    echo "warning: ${P}PID $pid did not exit ${STOP_TIMEOUT}s after SIGTERM: sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$PID_FILE"
  echo "${P}stopped (PID $pid)"
}

stop_replica() {
  local pid
  mkdir -p "$LOG_DIR"
  touch "$STOPPED_MARKER"
  if ! pid="$(running_pid)"; then
    [[ -f "$PID_FILE" ]] && echo "${P}removing stale PID file $PID_FILE"
    rm -f "$PID_FILE"
    echo "${P}not running"
    return 0
  fi
  echo "$(date '+%F %T,%3N') INFO run.sh: stopping PID $pid" >> "$APP_LOG"
  stop_pid "$pid"
}

# 0 running and ok, 1 running but not ok, 3 not running.
status_replica() {
  local pid uptime health device gpu_warning
  if pid="$(running_pid)"; then
    uptime="$(ps -o etime= -p "$pid" | tr -d ' ')"
    { read -r health; read -r device; read -r gpu_warning; } < <(health_fields)
    echo "${P}running: PID $pid, uptime $uptime, ${GPU:+GPU $GPU, }health $health${device:+, device $device}" \
         "($HEALTH_URL)"
    warn_gpu_unused "$gpu_warning"
    [[ "$health" == ok ]] && return 0
    return 1
  fi
  if [[ -f "$PID_FILE" ]]; then
    echo "${P}not running (stale PID file $PID_FILE: PID $(cat "$PID_FILE") is gone)"
  else
    echo "${P}not running"
  fi
  return 3
}
cmd_start() {
  local -a targets
  if [[ -n "${1:-}" ]]; then
    check_index "$1"; targets=("$1")
  else
    mapfile -t targets < <(seq 0 $((REPLICAS - 1)))
  fi
  if [[ "$HOST" != "127.0.0.1" && "$HOST" != "localhost" && "$ACCESS_PROTECTED" == 0 ]]; then
    echo "warning: listening on $HOST without API_KEYS or WEBUI_AUTH: anyone who can reach this port can use it" >&2
  fi
  start_replicas "${targets[@]}" || exit 1
}

cmd_stop() {
  local i
  if [[ -n "${1:-}" ]]; then
    check_index "$1"; select_replica "$1"; stop_replica
    return 0
  fi
  for i in $(replica_indexes); do
    select_replica "$i"; stop_replica
  done
}

# One replica: stop, start. All of them: one at a time, each back to ok before the next goes down, so the
# others keep serving (behind nginx, nothing is refused); a replica that does not come back stops the round.
# Between two replicas it waits ROLLING_PAUSE_S (10 s): nginx stops sending to a replica for fail_timeout (5 s)
# after it failed (down, or 503 while loading), and must have taken the restarted one back before the next
# one goes down, or it would see no live replica for those seconds.
cmd_restart() {
  local i pause="$ROLLING_PAUSE_S"
  if [[ -n "${1:-}" ]]; then
    check_index "$1"; select_replica "$1"; stop_replica; start_replicas "$1" || exit 1
    return 0
  fi
  for ((i = 0; i < REPLICAS; i++)); do
    select_replica "$i"
    if (( i > 0 )); then
      echo "waiting ${pause}s (ROLLING_PAUSE_S) for the proxy to take replica $((i - 1)) back"
      sleep "$pause"
    fi
    (( REPLICAS > 1 )) && echo "${P}restarting ($((i + 1)) of $REPLICAS)"
    stop_replica
    if ! start_replicas "$i"; then
      (( REPLICAS > 1 )) && echo "error: rolling restart stopped at replica $i; the others were left as they are" >&2
      exit 1
    fi
  done
}

cmd_status() {
  local i rc total=0 ok=0 running=0
  if [[ -n "${1:-}" ]]; then
    check_index "$1"; select_replica "$1"
    status_replica && rc=0 || rc=$?
    return "$rc"
  fi
  for i in $(replica_indexes); do
    select_replica "$i"
    status_replica && rc=0 || rc=$?
    total=$((total + 1))
    if (( rc == 0 )); then ok=$((ok + 1)); fi
    if (( rc != 3 )); then running=$((running + 1)); fi
  done
  (( total > 1 )) && echo "$ok of $total replicas healthy"
  (( ok == total )) && return 0
  (( running == 0 )) && return 3
  return 1
}

cmd_replicas() {
  local i
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' index port health_url gpu pid_file log_file stopped_file
  for i in $(replica_indexes); do
    select_replica "$i"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$i" "$PORT" "$HEALTH_URL" "${GPU:--}" "$PID_FILE" "$APP_LOG" \
      "$STOPPED_MARKER"
  done
}

main() {
  local -a args=()
  REPLICAS_FLAG=""
  while (( $# )); do                      # --replicas N may come anywhere
    case "$1" in
      --replicas) REPLICAS_FLAG="${2:-}"; shift 2 || { echo "--replicas needs a number" >&2; exit 2; } ;;
      --replicas=*) REPLICAS_FLAG="${1#--replicas=}"; shift ;;
      *) args+=("$1"); shift ;;
    esac
  done
  if [[ -n "$REPLICAS_FLAG" ]]; then
    [[ "$REPLICAS_FLAG" =~ ^[1-9][0-9]*$ ]] || { echo "--replicas needs a whole number >= 1, got '$REPLICAS_FLAG'" >&2; exit 2; }
    export REPLICAS="$REPLICAS_FLAG"      # the environment wins over .env, here and in the ops scripts run.sh runs
  fi
  set -- "${args[@]+"${args[@]}"}"
  local cmd="${1:-}"
  case "$cmd" in
    -h|--help|help) usage ;;
    "") usage >&2; exit 2 ;;
    install) cmd_install "${@:2}" ;;
    check-gpu) cmd_check_gpu ;;
    start) load_env; cmd_start "${2:-}" ;;
    stop) load_env --lenient; cmd_stop "${2:-}" ;;
    restart) load_env; cmd_restart "${2:-}" ;;
    status) load_env --lenient; cmd_status "${2:-}" ;;
    replicas) load_env --lenient; cmd_replicas ;;
    logs) load_env --lenient; [[ -z "${2:-}" ]] || { check_index "$2"; select_replica "$2"; }; exec tail -n 100 -F "$APP_LOG" ;;
    nginx-config) need_venv; exec "$VENV/bin/python" -m ops.nginx "${@:2}" ;;
    test) ensure_dev; exec "$VENV/bin/python" -m pytest -q "${@:2}" ;;
    lint) cmd_lint "${@:2}" ;;
    install-cron) load_env; exec "$ROOT/ops/install-cron.sh" "${@:2}" ;;
    *) echo "unknown command: $cmd" >&2; usage >&2; exit 2 ;;
  esac
}

main "$@"
