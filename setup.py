"""Install callrec: the call-recording SIP B2BUA."""

from setuptools import find_packages, setup

setup(
    name="callrec",
    version="0.2.0",
    description="Call-recording SIP proxy (B2BUA) with RTP relay, recorder and portal",
    python_requires=">=3.11",
    packages=find_packages(
        include=["callrec*", "b2bua*", "media*", "dtmf*", "storage*", "portal*"]
    ),
    package_data={
        "media": ["prompts/*.wav"],
        # The message catalogues: the .po and the committed .mo (see portal/i18n.py).
        "portal": ["templates/*", "static/*", "locale/*/LC_MESSAGES/messages.*"],
        # The CLI's messages (callrec/cli.py, `--lang`).
        "callrec": ["locale/*/LC_MESSAGES/cli.*"],
    },
    install_requires=[
        "numpy>=1.26",
        "soundfile>=0.12",
        "aiosqlite>=0.19",
        "aiohttp>=3.9",
        "jinja2>=3.1",
        "argon2-cffi>=23.1",
        # Message catalogues, locale dates and numbers (the portal in Dutch and English).
        "babel>=2.14",
        "prometheus-client>=0.17",
        # G.722 and Opus decoding for wideband recordings (wheels bundle ffmpeg, libopus).
        "av>=12",
        # SRTP (RFC 3711) on the relay's legs: libsrtp's protect/unprotect, replay, ROC.
        "pylibsrtp>=0.10",
        # The event loop of `callrec serve` where it installs ([server] loop = "auto").
        "uvloop>=0.19; platform_system != 'Windows'",
    ],
    extras_require={
        # The tester's softphone (`callrec phone`); the proxy itself never loads pjsua2.
        "phone": ["pjsua2-python>=2.15"],
        # Recordings in S3-compatible object storage ([storage] objects = "s3://..."),
        # and the store on PostgreSQL ([storage] db = "postgresql://...").
        "cluster": ["aiobotocore>=2.13", "asyncpg>=0.29"],
        "test": [
            "pytest>=8",
            "pytest-asyncio>=0.23",
            "pytest-timeout>=2.3",
            "pytest-xdist>=3.5",
            "hypothesis>=6",
            "ruff",
            "mypy",
            "import-linter>=2",
            "aiosmtpd>=1.4",
            "playwright>=1.40",
            # Certificates for the SIP over TLS tests.
            "trustme>=1.1",
        ],
    },
    entry_points={"console_scripts": ["callrec=callrec.cli:main"]},
)
