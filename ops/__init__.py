"""Operations in Python (docs/operations.md): the settings run.sh evals (settings), the GPU check (cuda), /health
for run.sh (health), the nginx config (nginx), the development requirements (requirements), and the scripts cron
and systemd run: watchdog, cleanup, gpu_alert. run.sh keeps the install and the process lifecycle in bash."""
