"""callrec b2bua package."""
