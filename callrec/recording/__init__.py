"""Recording orchestration: one `CallRecording` per recorded call (session), and the
`RecordingManager` that starts, toggles, files and recovers them (manager)."""
