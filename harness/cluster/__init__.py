"""The cluster: how ranks find each other, the launch lines, the stall watchdog, and the checks
of what a machine offers (``harness doctor``)."""
