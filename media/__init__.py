"""callrec media package."""
