"""``python -m fleet.worker``: one worker process running the app on its port.

The supervisor starts one of these per worker index (``fleet.supervisor.command`` builds the
argv). It reads ``PORT``, ``FLEET_WORKER_ID`` and ``FLEET_WORKERS`` from the environment, loads
the app (``fleet.worker.load``) and serves it (``fleet.worker.serve``). An app that cannot even
be loaded exits with ``BOOT_ERROR`` after printing its traceback once, so the supervisor reports
it instead of restarting it blindly. ``--cmd`` workers do not use this module.
"""
