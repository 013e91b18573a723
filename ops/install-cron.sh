#!/usr/bin/env bash
# Write this checkout's crontab entries (run through `./run.sh install-cron`, which loads the settings).
# The entries live in a marked block that is replaced on every run, so running it again changes nothing;
# other crontab lines are kept. Remove them with: ./run.sh install-cron --remove
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
# Both resolved by run.sh from the settings (ops/settings.py), so their defaults live in one place.
: "${LOG_DIR:?run this through ./run.sh install-cron}" "${ENV_FILE:?run this through ./run.sh install-cron}"
BEGIN="# >>> paraformer-webui $ROOT (written by run.sh install-cron; edits inside this block are replaced) >>>"
END="# <<< paraformer-webui $ROOT <<<"

command -v crontab >/dev/null 2>&1 || {
  echo "error: no crontab command: install cron (sudo apt-get install cron) or use the systemd units in ops/" >&2
  exit 1
}
for p in "$ROOT" "$VENV" "$LOG_DIR" "$ENV_FILE"; do
  [[ "$p" != *%* ]] || { echo "error: '$p' contains %, which crontab treats as a newline" >&2; exit 1; }
done
mkdir -p "$LOG_DIR"

q() { printf '%q' "$1"; }
cd_env="cd $(q "$ROOT") && ENV_FILE=$(q "$ENV_FILE") LOG_DIR=$(q "$LOG_DIR")"
py="$(q "$VENV/bin/python")"
errors="2>>$(q "$LOG_DIR/cron.log")"   # the scripts log to LOG_DIR/ops.log; cron.log catches crashes

block="$BEGIN
# watchdog: every minute; restarts the app after WATCHDOG_FAILURES (3) failed /health checks in a row
* * * * * $cd_env $py ops/watchdog.py --quiet $errors
# uploads unused for CLEANUP_MAX_AGE_H (1) h, results older than OUTPUT_RETENTION_H (168) h: every 2 hours
0 */2 * * * $cd_env $py ops/cleanup.py --quiet $errors
# GPU memory alert: every 15 minutes
*/15 * * * * $cd_env $py ops/gpu_alert.py --quiet $errors
# start the app at boot
@reboot $cd_env ./run.sh start >>$(q "$LOG_DIR/ops.log") 2>&1
$END"

current="$(crontab -l 2>/dev/null || true)"   # `crontab -l` fails when the user has no crontab yet
# Drop our old block (from BEGIN to END), keep everything else as it was.
others="$(printf '%s\n' "$current" | awk -v b="$BEGIN" -v e="$END" '
  $0 == b {skip = 1; next}
  $0 == e {skip = 0; next}
  !skip')"   # $(...) drops the trailing blank lines

if [[ "${1:-}" == "--remove" ]]; then
  printf '%s\n' "$others" | crontab -
  echo "removed the paraformer-webui entries for $ROOT from the crontab"
  exit 0
fi
{
  [[ -n "$others" ]] && printf '%s\n\n' "$others"
  printf '%s\n' "$block"
} | crontab -
echo "crontab updated (crontab -l to see it):"
printf '%s\n' "$block"
