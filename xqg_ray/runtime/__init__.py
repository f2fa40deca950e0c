"""Ray as objects, by concern.

- :mod:`.cluster`: the cluster of this process (:class:`~.cluster.Cluster`: start with retries or join,
  its model hosts, waits that time out naming what they waited for, stop), :func:`~.cluster.init_ray`.
- :mod:`.hosts`: the model host actor of the local cluster.
- :mod:`.remote`: task functions (by value) and actor classes handed to Ray, carrying user errors
  (the transport itself is :mod:`xqg_ray.errors`).
- :mod:`.capacity`: what a run asks of the cluster versus what it has (:func:`~.capacity.check_schedulable`).
- :mod:`.units`: units of work on an actor pool (:func:`~.units.run_units`); :mod:`.tasks`: :func:`~.tasks.run_tasks`.
- :mod:`.devices`: what the generate pool's hardware makes of a generator's ``dtype: auto``.
"""
