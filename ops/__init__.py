"""Operations scripts: watchdog, temp cleanup, GPU memory alerts (see README, Operations)."""
