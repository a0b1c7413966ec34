"""The run folder and what is written into it.

The run folder and what is written into it: run folders and their manifest, the check every
output path passes, logs, checkpoints.
"""
