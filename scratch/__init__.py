"""scratch: the numpy CNN under test. Imports numpy only (never tensorflow or keras)."""
