"""The generator as a job uses it: building, loading, placing it on a device, its precision."""
