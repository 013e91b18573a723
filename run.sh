#!/usr/bin/env bash
# Paraformer WebUI: install, start, stop and inspect the service.
# Run `./run.sh --help` for the commands.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

VENV="${VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON_BIN:-python3}"
TORCH_VERSION="2.13.0"
# The CUDA builds of torch $TORCH_VERSION on download.pytorch.org (cu126 = CUDA 12.6): keep in step with it.
TORCH_CUDA_BUILDS="126 128 130"
TORCH_INDEX_BASE="https://download.pytorch.org/whl"

usage() {
  cat <<'EOF_USAGE'
Usage: ./run.sh [--replicas N] COMMAND [REPLICA]

  install        create .venv, install torch first, then requirements.txt, the FSMN-VAD model and the
                 tiny test models. torch: TORCH_INDEX_URL when set; else on a machine whose nvidia-smi
                 lists a GPU, the CUDA build for its driver (checked: torch must see the GPU); else PyPI's
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
  test           run the test suite (what CI runs)
  install-cron   write the crontab entries for the ops scripts (idempotent; --remove to delete them)
  -h, --help     this text

Replicas: REPLICAS (default 1) or --replicas N. Replica I listens on PORT+I and writes logs/app-I.log,
logs/app-I.pid and logs/app-I.stopped; replica 0 keeps logs/app.log, logs/app.pid and logs/app.stopped.
With several replicas and GPUs, replica I gets CUDA_VISIBLE_DEVICES=the I-th GPU of REPLICA_GPUS (default:
every GPU nvidia-smi lists, round robin; "none": leave CUDA_VISIBLE_DEVICES alone).

Settings come from the environment, then ENV_FILE (default .env; see .env.example). HOST and PORT decide
where /health is checked; LOG_DIR (logs), PID_FILE (LOG_DIR/app.pid), START_TIMEOUT (180 s) and
STOP_TIMEOUT (20 s) tune start and stop.

Exit status: 0 success; 1 failure (message on stderr); 2 usage error; check-gpu: 0 the GPU is used or
there is none, 1 a GPU is present that torch cannot use;
status: 0 running and healthy (every replica), 1 running but not healthy (some replica down or not ok),
3 not running (no replica).
EOF_USAGE
}

die() { echo "error: $*" >&2; exit 1; }

# KEY=VALUE lines from ENV_FILE, exported unless the environment already sets the key (the environment wins,
# as for the app). Comments, blank lines, `export ` prefixes and surrounding quotes are handled; nothing is
# executed, so a value like $(cmd) stays text.
read_env_file() {
  local file="$1" line key value
  local -A from_file=()
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
    # The environment wins over the file; within the file the last line wins (as for the app's settings).
    [[ -v "$key" && -z "${from_file[$key]:-}" ]] && continue
    from_file[$key]=1
    export "$key=$value"
  done < "$file"
}

abs_path() {  # relative paths are relative to the project folder, as in config/settings.py
  case "$1" in /*) echo "$1" ;; *) echo "$ROOT/$1" ;; esac
}

load_env() {
  ENV_FILE="$(abs_path "${ENV_FILE:-.env}")"
  export ENV_FILE                                            # app.py's settings read the same file
  read_env_file "$ENV_FILE"
  HOST="${HOST:-0.0.0.0}"
  PORT="${PORT:-7860}"
  [[ "$PORT" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$PORT'"
  BASE_PORT="$PORT"
  REPLICAS="${REPLICAS_FLAG:-${REPLICAS:-1}}"
  [[ "$REPLICAS" =~ ^[1-9][0-9]*$ ]] || die "REPLICAS must be a whole number >= 1, got '$REPLICAS'"
  LOG_DIR="$(abs_path "${LOG_DIR:-logs}")"
  export LOG_DIR
  BASE_PID_FILE="$(abs_path "${PID_FILE:-$LOG_DIR/app.pid}")"
  START_TIMEOUT="${START_TIMEOUT:-180}"
  STOP_TIMEOUT="${STOP_TIMEOUT:-20}"
  [[ "$START_TIMEOUT$STOP_TIMEOUT" =~ ^[0-9]+$ ]] || die "START_TIMEOUT and STOP_TIMEOUT must be whole seconds"
  case "$HOST" in 0.0.0.0|::|"") CHECK_HOST=127.0.0.1 ;; *) CHECK_HOST="$HOST" ;; esac
  [[ -x "$VENV/bin/python" ]] || die "no virtual environment at $VENV: run ./run.sh install"
  detect_gpus
  select_replica 0
}

# GPUS: the GPU ids replicas are spread over (round robin). REPLICA_GPUS=0,1 names them; "none" or a single
# replica without REPLICA_GPUS: none (CUDA_VISIBLE_DEVICES is left as it is, today's behaviour); otherwise the
# GPUs `nvidia-smi -L` lists.
detect_gpus() {
  GPUS=()
  local setting="${REPLICA_GPUS:-}" line
  if [[ "$setting" == none ]]; then
    return 0
  elif [[ -n "$setting" ]]; then
    IFS=',' read -r -a GPUS <<< "${setting// /}"
  elif (( REPLICAS > 1 )) && command -v nvidia-smi >/dev/null 2>&1; then
    while IFS= read -r line; do
      [[ "$line" =~ ^GPU[[:space:]]+([0-9]+): ]] && GPUS+=("${BASH_REMATCH[1]}")
    done < <(nvidia-smi -L 2>/dev/null || true)
  fi
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
# --- GPU: what nvidia-smi sees and whether the venv's torch can use it ---------------------------------------

# NVIDIA_GPUS (one "GPU N: name" line each), DRIVER_CUDA (the newest CUDA the driver runs, "12.8", or empty)
# and NVIDIA_SMI_ERROR (nvidia-smi is there but fails: no driver loaded). 0 when nvidia-smi lists a GPU.
nvidia_facts() {
  NVIDIA_GPUS="" DRIVER_CUDA="" NVIDIA_SMI_ERROR=""
  command -v nvidia-smi >/dev/null 2>&1 || return 1
  local out
  if ! out="$(nvidia-smi -L 2>&1)"; then
    NVIDIA_SMI_ERROR="$(head -n 1 <<< "$out")"
    return 1
  fi
  NVIDIA_GPUS="$(grep -E '^GPU [0-9]+:' <<< "$out" | sed -E 's/ \(UUID: [^)]*\)$//' || true)"
  [[ -n "$NVIDIA_GPUS" ]] || return 1
  DRIVER_CUDA="$(nvidia-smi 2>/dev/null | sed -nE 's/.*CUDA Version: *([0-9]+\.[0-9]+).*/\1/p' | head -n 1 || true)"
  return 0
}

gpu_names() { sed -E 's/^GPU [0-9]+: //' <<< "$NVIDIA_GPUS" | paste -sd, - | sed 's/,/, /g'; }

# The index of the torch CUDA build for a driver that runs CUDA $1 ("12.8"): the newest build it runs; within
# its major version, the oldest build also runs on an older minor driver (CUDA minor version compatibility).
# Prints nothing and returns 1 when the driver is older than every build.
torch_index_for_cuda() {
  local major="${1%%.*}" minor="${1#*.}" build best="" oldest_same="" newest=""
  [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] || return 1
  for build in $TORCH_CUDA_BUILDS; do
    local b_major="${build:0:${#build}-1}" b_minor="${build: -1}"
    newest="$build"
    if (( b_major == major )); then
      [[ -z "$oldest_same" ]] && oldest_same="$build"
      (( b_minor <= minor )) && best="$build"
    elif (( b_major < major )); then
      best="$build"
    fi
  done
  best="${best:-$oldest_same}"
  [[ -n "$best" ]] || return 1
  echo "$TORCH_INDEX_BASE/cu$best"
}

# torch's version, CUDA build, usable (1/0), GPU count, GPU names and why CUDA is unusable, |-separated
# (`version` as argument: the version alone).
TORCH_PROBE='
import sys
import torch
if sys.argv[1:] == ["version"]:
    print(torch.__version__)
    sys.exit(0)
build, ok, names, why = torch.version.cuda or "", False, [], ""
try:
    ok = torch.cuda.is_available()
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if ok else []
except Exception as exc:
    ok, why = False, str(exc)
if build and not ok and not why:
    try:
        torch.cuda.init()
        why = "no CUDA GPU is visible"
    except Exception as exc:
        why = str(exc)
why = (why.strip().splitlines() or [""])[0][:200]
print("|".join([torch.__version__, build, str(int(ok)), str(len(names)), ", ".join(names), why.replace("|", "/")]))
'

# What nvidia-smi lists against what the venv's torch can use. 0: torch uses the GPU, or there is none;
# 1: a GPU is present and torch cannot use it (the message says what to install).
cmd_check_gpu() {
  if ! nvidia_facts; then
    if [[ -n "$NVIDIA_SMI_ERROR" ]]; then
      echo "nvidia-smi is installed but fails: $NVIDIA_SMI_ERROR"
      echo "no GPU can be used until the NVIDIA driver works; the service runs on the CPU meanwhile (DEVICE=auto)"
      return 1
    fi
    echo "no NVIDIA GPU (nvidia-smi not found or lists none): the service runs on the CPU"
    return 0
  fi
  echo "NVIDIA GPU: $(gpu_names); the driver runs CUDA ${DRIVER_CUDA:-(unknown)}"
  [[ -x "$VENV/bin/python" ]] || { echo "no virtual environment at $VENV: run ./run.sh install"; return 1; }
  local probe version build ok count names why index
  if ! probe="$("$VENV/bin/python" -c "$TORCH_PROBE" 2>/dev/null)"; then
    echo "torch is not installed in $VENV: run ./run.sh install"
    return 1
  fi
  IFS='|' read -r version build ok count names why <<< "$probe"
  if [[ "$ok" == 1 ]]; then
    echo "torch $version (CUDA $build) uses it: $count GPU(s): $names"
    return 0
  fi
  index="$(torch_index_for_cuda "$DRIVER_CUDA" || true)"
  if [[ -z "$build" ]]; then
    echo "torch $version is a CPU-only build: it cannot use the GPU, and the service runs on the CPU"
  else
    echo "torch $version (CUDA $build) cannot use the GPU: ${why:-unknown reason}"
  fi
  if [[ -n "$index" ]]; then
    echo "install the CUDA build for this driver: TORCH_INDEX_URL=$index ./run.sh install"
  elif [[ -n "$DRIVER_CUDA" ]]; then
    echo "the driver (CUDA $DRIVER_CUDA) is older than every CUDA build of torch $TORCH_VERSION (cu${TORCH_CUDA_BUILDS// /, cu}): upgrade the NVIDIA driver"
  else
    echo "pick the build for this driver (nvidia-smi shows its CUDA version): TORCH_INDEX_URL=$TORCH_INDEX_BASE/cuNNN ./run.sh install"
  fi
  return 1
}

# torch $TORCH_VERSION from index $1 (empty: pip's default). pip takes any installed 2.13.0 build as
# satisfying ==2.13.0, so a different build (+cpu when +cu128 is wanted) is removed first.
install_torch() {
  local index="$1" pip=("$VENV/bin/python" -m pip) installed want
  if [[ -z "$index" ]]; then
    "${pip[@]}" install -q "torch==$TORCH_VERSION"
    return
  fi
  installed="$("$VENV/bin/python" -c "$TORCH_PROBE" version 2>/dev/null || true)"
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
  if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON_BIN" -m venv "$VENV"
  fi
  local pip=("$VENV/bin/python" -m pip) index="${TORCH_INDEX_URL:-}" gpu=0
  "${pip[@]}" install -q --upgrade pip
  # torch first, alone, so nothing else can choose its build. On a GPU machine: the CUDA build its driver runs.
  if nvidia_facts; then
    gpu=1
    echo "NVIDIA GPU found: $(gpu_names) (the driver runs CUDA ${DRIVER_CUDA:-(unknown)})"
    if [[ -z "$index" && -n "$DRIVER_CUDA" ]]; then
      index="$(torch_index_for_cuda "$DRIVER_CUDA")" || die "the NVIDIA driver runs CUDA $DRIVER_CUDA, older" \
        "than every CUDA build of torch $TORCH_VERSION (cu${TORCH_CUDA_BUILDS// /, cu}): upgrade the driver, or" \
        "install the CPU build: TORCH_INDEX_URL=$TORCH_INDEX_BASE/cpu ./run.sh install"
      echo "installing torch $TORCH_VERSION for CUDA from $index (TORCH_INDEX_URL=... picks another build)"
    fi
  elif [[ -n "$NVIDIA_SMI_ERROR" ]]; then
    echo "warning: nvidia-smi fails ($NVIDIA_SMI_ERROR): no GPU can be used until the NVIDIA driver works;" \
         "installing torch ${index:+from $index }without a GPU check (./run.sh check-gpu once the driver works)" >&2
  fi
  install_torch "$index"
  if (( gpu )) && ! cmd_check_gpu; then
    if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
      echo "warning: keeping the torch build TORCH_INDEX_URL asked for; the service will run on the CPU" >&2
    else
      die "torch cannot use the GPU (above); the rest was not installed"
    fi
  fi
  "${pip[@]}" install -q -r requirements.txt
  if "${pip[@]}" show torchaudio >/dev/null 2>&1; then
    echo "error: torchaudio got installed; it breaks funasr on this setup: pip uninstall torchaudio" >&2
    exit 1
  fi
  "${pip[@]}" check
  "$VENV/bin/python" -m testmodels --vad --tiny --tiny-online
  local env_file
  env_file="$(abs_path "${ENV_FILE:-.env}")"
  [[ -f "$env_file" ]] || cp .env.example "$env_file"
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

# What /health says right now, in three lines: one word (ok, loading, error, down, ...) with the detail on
# error; the device the model runs on (empty before the load); the app's warning about an unused GPU.
health_fields() {
  "$VENV/bin/python" - "$HEALTH_URL" <<'EOF_PY' 2>/dev/null || printf 'down\n\n\n'
import json, sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        body = json.loads(r.read() or b"{}")
except urllib.error.HTTPError as e:
    body = json.loads(e.read() or b"{}")
except Exception:
    print("down\n\n"); sys.exit(0)
detail = body.get("detail")
print(body.get("status", "unknown") + (f" ({detail})" if detail else ""))
print(body.get("device") or "")
print(" ".join(str(body.get("gpu_warning") or "").split()))
EOF_PY
}

health_status() { health_fields | head -n 1; }

# Warn (stderr) when the selected replica runs on the CPU while this machine has an NVIDIA GPU: the app's
# own reason when it gives one ($2), else what nvidia-smi lists.
warn_gpu_unused() {
  local device="$1" app_warning="$2"
  [[ -n "$device" && "$device" != cuda* ]] || return 0
  if [[ -n "$app_warning" ]]; then
    echo "warning: ${P}$app_warning" >&2
  elif nvidia_facts; then
    echo "warning: ${P}nvidia-smi lists $(gpu_names) but the model runs on $device: see ./run.sh check-gpu" \
         "and docs/gpu.md" >&2
  fi
}

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
  # PORT in the environment wins over .env in the app's settings; CUDA_VISIBLE_DEVICES only when a GPU is
  # assigned (with one, the app's DEVICE=auto or cuda means that GPU), numbered as nvidia-smi and NVML number
  # them (PCI bus order; CUDA's own default order can differ).
  if [[ -n "$GPU" ]]; then
    PORT="$PORT" REPLICA="$R" CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES="$GPU" PYTHONUNBUFFERED=1 \
      setsid "$VENV/bin/python" "$ROOT/app.py" >>"$APP_LOG" 2>&1 </dev/null &
  else
    PORT="$PORT" REPLICA="$R" PYTHONUNBUFFERED=1 \
      setsid "$VENV/bin/python" "$ROOT/app.py" >>"$APP_LOG" 2>&1 </dev/null &
  fi
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
        warn_gpu_unused "$device" "$gpu_warning"
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
    warn_gpu_unused "$device" "$gpu_warning"
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
  if [[ "$HOST" != "127.0.0.1" && "$HOST" != "localhost" && -z "${API_KEYS:-}" && -z "${WEBUI_AUTH:-}" ]]; then
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
  local i pause="${ROLLING_PAUSE_S:-10}"
  [[ "$pause" =~ ^[0-9]+$ ]] || die "ROLLING_PAUSE_S must be whole seconds, got '$pause'"
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

# nginx in front of the replicas: the template with this box's replicas (or NGINX_UPSTREAMS / --upstreams,
# for replicas on several boxes) filled in. See ops/nginx/ and docs/scaling.md.
cmd_nginx_config() {
  local listen="${NGINX_LISTEN:-80}" upstreams="${NGINX_UPSTREAMS:-}" standalone="" out="" i addr body_mb
  while (( $# )); do
    case "$1" in
      --listen) listen="${2:?--listen needs ADDR:PORT}"; shift 2 ;;
      --upstreams) upstreams="${2:?--upstreams needs HOST:PORT,...}"; shift 2 ;;
      --standalone) standalone="${2:?--standalone needs a folder}"; shift 2 ;;
      -o|--output) out="${2:?-o needs a file}"; shift 2 ;;
      *) echo "unknown nginx-config option: $1" >&2; exit 2 ;;
    esac
  done
  local -a addrs=()
  if [[ -n "$upstreams" ]]; then
    IFS=',' read -r -a addrs <<< "${upstreams// /}"
  else
    for i in $(replica_indexes); do addrs+=("$CHECK_HOST:$((BASE_PORT + i))"); done
  fi
  local addr_re='^[][A-Za-z0-9._:-]+:[0-9]+$'
  for addr in "${addrs[@]}"; do
    [[ "$addr" =~ $addr_re ]] || die "not HOST:PORT: '$addr'"
  done
  # The app's own limit plus 1 MB for the multipart envelope, so the app (not nginx) answers an oversized
  # upload, with its clear message.
  body_mb="$(awk -v m="${MAX_UPLOAD_MB:-200}" 'BEGIN { if (m !~ /^[0-9]+(\.[0-9]+)?$/) exit 1;
    n = int(m); if (n < m) n++; print n + 1 }')" || die "MAX_UPLOAD_MB must be a number, got '${MAX_UPLOAD_MB}'"
  local servers="" locations="" n=0
  for addr in "${addrs[@]}"; do
    servers+="    server $addr max_fails=1 fail_timeout=5s;"$'\n'
    locations+="    location = /replica/$n/health  { proxy_pass http://$addr/health; }"$'\n'
    locations+="    location = /replica/$n/metrics { proxy_pass http://$addr/metrics; }"$'\n'
    n=$((n + 1))
  done
  local conf
  conf="$(< "$ROOT/ops/nginx/paraformer-webui.conf.template")"
  conf="${conf//'{{LISTEN}}'/$listen}"
  conf="${conf//'{{CLIENT_MAX_BODY_SIZE}}'/${body_mb}m}"
  conf="${conf//'{{SERVERS}}'/${servers%$'\n'}}"
  conf="${conf//'{{REPLICA_LOCATIONS}}'/${locations%$'\n'}}"
  conf="${conf//'{{GENERATED}}'/"./run.sh nginx-config: ${#addrs[@]} replica(s) ${addrs[*]}, listen $listen"}"
  if [[ -z "$standalone" ]]; then
    if [[ -n "$out" ]]; then printf '%s\n' "$conf" > "$out"; echo "wrote $out" >&2; else printf '%s\n' "$conf"; fi
    return 0
  fi
  # A complete nginx.conf that runs from DIR as this user: logs, temp files and the site config inside DIR.
  standalone="$(abs_path "$standalone")"
  mkdir -p "$standalone/tmp"
  printf '%s\n' "$conf" > "$standalone/paraformer-webui.conf"
  local main user_line=""
  # As root, nginx would run its workers as "nobody", who cannot read a private DIR: keep this user.
  (( EUID == 0 )) && user_line="user $(id -un) $(id -gn);"
  main="$(< "$ROOT/ops/nginx/standalone.conf.template")"
  main="${main//'{{DIR}}'/$standalone}"
  main="${main//'{{USER}}'/$user_line}"
  printf '%s\n' "$main" > "$standalone/nginx.conf"
  echo "wrote $standalone/nginx.conf and $standalone/paraformer-webui.conf; run nginx with:"
  echo "  nginx -p $standalone -c $standalone/nginx.conf -g 'daemon off; pid $standalone/nginx.pid;'"
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
  if [[ -n "$REPLICAS_FLAG" && ! "$REPLICAS_FLAG" =~ ^[1-9][0-9]*$ ]]; then
    echo "--replicas needs a whole number >= 1, got '$REPLICAS_FLAG'" >&2; exit 2
  fi
  set -- "${args[@]+"${args[@]}"}"
  local cmd="${1:-}"
  case "$cmd" in
    -h|--help|help) usage ;;
    "") usage >&2; exit 2 ;;
    install) cmd_install ;;
    check-gpu) cmd_check_gpu ;;
    start) load_env; cmd_start "${2:-}" ;;
    stop) load_env; cmd_stop "${2:-}" ;;
    restart) load_env; cmd_restart "${2:-}" ;;
    status) load_env; cmd_status "${2:-}" ;;
    replicas) load_env; cmd_replicas ;;
    logs) load_env; [[ -z "${2:-}" ]] || { check_index "$2"; select_replica "$2"; }; exec tail -n 100 -F "$APP_LOG" ;;
    nginx-config) load_env; cmd_nginx_config "${@:2}" ;;
    test) exec "$VENV/bin/python" -m pytest -q "${@:2}" ;;
    install-cron) load_env; exec "$ROOT/ops/install-cron.sh" "${@:2}" ;;
    *) echo "unknown command: $cmd" >&2; usage >&2; exit 2 ;;
  esac
}

main "$@"
