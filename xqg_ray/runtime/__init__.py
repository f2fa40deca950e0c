"""Ray as objects: the local cluster and its model hosts, running units of work on actor pools, tasks, the error transport."""
