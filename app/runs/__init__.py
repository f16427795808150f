"""What the worker runs for each kind of job other than training (see app.runner's KINDS).

Each module has run(settings, lease, report, store) -> None, ends its job through
app.services.leases, and is imported only when a job of its kind arrives.
"""
