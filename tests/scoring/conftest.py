"""Fixtures shared by the scoring tests (pytest finds them here, not through imports)."""
from tests.scoring.test_evaluate import sr_tree  # noqa: F401 (a fixture: pytest registers it)
