"""Process management: spawn workers, watch them, restart them, and never leave one behind.

- ``policy``: the worker lifecycle table and the restart/backoff policy (pure);
- ``generations``: worker ids, port blocks, generation numbers, the reload plan and recycling
  decisions (pure);
- ``info``: what leaves the supervisor: ``WorkerInfo`` snapshots and ``WorkerChange`` events;
- ``worker``: one worker's record, its intent and which map holds it (tables; pure);
- ``command``: what to execute for a worker (argv + environment; pure);
- ``process``: one spawned worker process (own session, PDEATHSIG, prefixed output) and the
  one output-line splitter (hooks use it too);
- ``probe``: readiness (TCP connect or a 2xx from ``--health-path``);
- ``watchdog``: the tiny process that kills every worker group if the master dies;
- ``lifecycle``: one worker's life on the event loop (spawn, readiness, crash restarts, TERM),
  each change announced to the observers;
- ``drains``: replaced workers draining in the background, then TERM;
- ``manager``: ``Supervisor``: start, reload, recycle, scale and stop.

Kept import-light (nothing imported here) because ``python -m fleet.supervisor.watchdog`` and
``python -m fleet.worker`` import this package on their way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleet.supervisor.manager import Supervisor, SupervisorError


def __getattr__(name: str) -> Any:
    if name in {"Supervisor", "SupervisorError"}:
        from fleet.supervisor import manager

        return getattr(manager, name)
    raise AttributeError(name)
