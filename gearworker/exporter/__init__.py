"""gearmand's own state for Prometheus: what an autoscaler needs (jobs waiting per function).

The names and labels are those of the common Gearman exporter
(github.com/bakins/gearman-exporter, which Grafana dashboard 11423 reads):
``gearman_up``, ``gearman_version_info``, ``gearman_jobs``,
``gearman_jobs_running``, ``gearman_jobs_waiting`` and ``gearman_workers``,
plus a ``server`` label on each (one exporter here watches several
servers), and the failed-job store's ``gearworker_failed_jobs`` per function.

:mod:`.collect` asks the servers and writes the text; the web app serves it
at ``/metrics`` and ``gearworker web --metrics HOST:PORT``, and
:mod:`.cli` is ``gearworker exporter --listen HOST:PORT``, the same alone.
"""

from .collect import ServerState, gather, render

__all__ = ["ServerState", "gather", "render"]
