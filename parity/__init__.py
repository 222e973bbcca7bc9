"""parity: comparisons, checks, reports and the command line."""
