"""Support shared by the tests and the benchmarks: the callrec server harness, the SIPp
runner and scenarios, the RTP counter, audio and DTMF signal helpers."""
