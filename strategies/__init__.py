"""Built-in sampling strategies, registered through the ``harness.strategies`` entry-point group."""
