"""Example kinds written as a user would write them, with only ackflow's public API: `pipeline`, a
workflow kind (examples/pipeline.py). Its own package, not under activities/, because Temporal's
sandbox imports a workflow's module afresh for each run, with the package it sits in."""
