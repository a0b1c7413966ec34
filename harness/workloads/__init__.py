"""Workloads other than the training loop.

Workloads other than the training loop: sharded inference, and the timed workloads the power
sweep measures.
"""
