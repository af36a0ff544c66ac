"""Attack tests against a real callrec serve."""
