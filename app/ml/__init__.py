"""Pure ML: no HTTP, no Celery. One module per algorithm family."""
