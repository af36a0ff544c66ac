"""Recording orchestration: one `CallRecording` per recorded call (session), run by the
media worker that relays the call; what the SIP process and that worker say to each
other about it (control); and the `RecordingManager` that starts, files and recovers
recordings in the SIP process (manager)."""
