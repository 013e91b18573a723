"""Operations scripts: watchdog, temp cleanup, GPU memory alerts (see docs/operations.md)."""
