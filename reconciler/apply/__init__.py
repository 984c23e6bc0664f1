"""Apply: the only side effects on the outside systems, each as a job.

`runner.Runner` queues the actions a cycle planned, runs each as a job (at most `parallel_per_node` Proxmox
tasks at once on a node) and returns at once; `registry.execute` runs the one executor of each action kind.
"""
