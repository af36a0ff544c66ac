"""callrec's application shell: product rules, config, recording orchestration, the
retention and export services, the composition root (`callrec.app`) and the CLI."""

__version__ = "0.2.0"
