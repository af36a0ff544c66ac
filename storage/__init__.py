"""callrec storage package."""
