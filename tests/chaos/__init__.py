"""The chaos suite: the production roles as separate processes, killed and restarted under load.

`make test` runs its short form; `make chaos` (ACKFLOW_CHAOS=full) runs every scenario.
"""
