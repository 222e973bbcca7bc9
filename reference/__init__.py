"""reference: the Keras twin of a scratch model, the oracle of the harness."""
