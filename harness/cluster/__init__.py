"""The cluster: rank discovery, launch lines, the stall watchdog and the machine checks.

The cluster: how ranks find each other, the launch lines, the stall watchdog, and the checks
of what a machine offers (``harness doctor``).
"""
