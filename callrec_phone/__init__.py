"""`callrec phone`: a pjsua2 softphone for testers (installed with `callrec[phone]`)."""
