"""callrec dtmf package."""
