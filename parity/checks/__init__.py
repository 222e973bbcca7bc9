"""The checks: forward, gradients, derivations (vs finite differences), max-pool ties."""
