"""callrec portal package."""
