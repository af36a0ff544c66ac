"""Background services above the store: retention purge, the monthly export and its mail."""
