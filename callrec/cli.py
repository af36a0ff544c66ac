"""The `callrec` command: run the server and manage users, settings and call records.

`--config FILE` may come before or after the command; without it `CALLREC_CONFIG` names
the file, else the embedded defaults apply. Passwords are read from a prompt (when stdin
is a terminal) or from `--password-file FILE` (`-` for stdin); `--password` still works
for scripts but warns, since the command line is visible to every local user.
`--json` prints the same records, in the same shape, as the REST API
(`callrec.services.records`).

Exit codes: 0 success, 1 runtime failure (unknown extension, database problem, a value
a rule refuses), 2 usage or configuration error. Errors are one line on stderr, never a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib
import importlib.util
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from callrec import __version__
from callrec.config import Config, ConfigError, event_loop_factory, load_config
from callrec.policy import (
    DEFAULT_RECORDING_MODE,
    RECORDING_MODES,
    SETTINGS_KEYS,
    PolicyError,
    RecordingSettings,
    SettingKey,
    parse_setting,
)
from callrec.services.records import call_json, listing_json, user_json
from storage.database import StorageError, Store
from storage.models import format_timestamp

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
CONFIG_ENV = "CALLREC_CONFIG"
PASSWORD_WARNING = (
    "callrec: warning: a password on the command line is visible to other local users"
    " and kept in shell history; use --password-file FILE or the prompt\n"
)


def _extension(text: str) -> str:
    if not (text.isascii() and text.isdigit() and 2 <= len(text) <= 15):
        raise argparse.ArgumentTypeError(f"invalid extension {text!r}: expected 2 to 15 digits")
    return text


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


class _UsageError(Exception):
    """The command line cannot be carried out as given (exit code 2)."""


def _add_config(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Below the top level the default is SUPPRESS, so a `--config` given before the
    # command is not overwritten by the subcommand's own (absent) option.
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None if top else argparse.SUPPRESS,
        help=f"TOML configuration (default: ${CONFIG_ENV}, else the embedded defaults"
        " with data in ./callrec-data/)",
    )


def _add_password(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--password-file",
        metavar="FILE",
        help=f"read the {what} from the first line of FILE ('-': standard input)",
    )
    parser.add_argument(
        "--password", help=f"the {what} (visible to other users: prefer the prompt or a file)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `callrec` (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="callrec", description="Call-recording SIP B2BUA and its administration."
    )
    parser.add_argument("--version", action="version", version=f"callrec {__version__}")
    _add_config(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def with_config(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        _add_config(sub, top=False)
        return sub

    serve = with_config(commands.add_parser("serve", help="run SIP, media, portal and retention"))
    serve.add_argument(
        "--init",
        action="store_true",
        help="create a new database when the file exists but is empty (a missing one is"
        " always created)",
    )

    users = commands.add_parser("users", help="manage users").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    add = with_config(users.add_parser("add", help="add a user"))
    add.add_argument("extension", metavar="EXT", type=_extension)
    add.add_argument("--name", required=True)
    add.add_argument("--email")
    add.add_argument("--mode", choices=RECORDING_MODES, default=DEFAULT_RECORDING_MODE.value)
    add.add_argument(
        "--device", metavar="URI", action="append", default=[], help="sip: URI (repeatable)"
    )
    _add_password(add, "SIP digest password (only its HA1 is stored; none if not given)")

    set_mode = with_config(users.add_parser("set-mode", help="change the recording mode"))
    set_mode.add_argument("extension", metavar="EXT", type=_extension)
    set_mode.add_argument("mode", metavar="MODE", choices=RECORDING_MODES)

    set_password = with_config(
        users.add_parser("set-password", help="change the password (prompted if not given)")
    )
    set_password.add_argument("extension", metavar="EXT", type=_extension)
    set_password.add_argument(
        "password_argument",
        metavar="PASSWORD",
        nargs="?",
        help="the new password (visible to other users: prefer the prompt or a file)",
    )
    _add_password(set_password, "new SIP digest password")

    remove = with_config(users.add_parser("remove", help="remove a user and their devices"))
    remove.add_argument("extension", metavar="EXT", type=_extension)

    list_users = with_config(users.add_parser("list", help="list users"))
    list_users.add_argument("--json", action="store_true", help="print a JSON list")

    calls = commands.add_parser("calls", help="call detail records").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    list_calls = with_config(calls.add_parser("list", help="list calls, newest first"))
    list_calls.add_argument("--json", action="store_true", help="print a JSON list")
    list_calls.add_argument("--limit", type=_positive, default=100, metavar="N")
    list_calls.add_argument("--extension", type=_extension, metavar="EXT")

    recordings = commands.add_parser("recordings", help="recordings").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    list_recordings = with_config(
        recordings.add_parser("list", help="list recordings, newest first")
    )
    list_recordings.add_argument("--json", action="store_true", help="print a JSON list")
    list_recordings.add_argument("--limit", type=_positive, default=100, metavar="N")
    export = with_config(
        recordings.add_parser("export", help="write one month's recordings to a ZIP")
    )
    export.add_argument("--month", required=True, metavar="YYYY-MM", help="UTC month")
    export.add_argument("-o", "--output", required=True, metavar="FILE.zip")

    with_config(commands.add_parser("purge", help="delete expired recordings now"))

    admin = commands.add_parser("admin", help="portal administrators").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    admin_add = with_config(
        admin.add_parser("add", help="add a portal admin (password prompted if not given)")
    )
    admin_add.add_argument("name", metavar="NAME")
    _add_password(admin_add, "portal password (only an argon2 hash is stored)")
    admin_add.add_argument("--email", help="where export links are mailed")
    with_config(admin.add_parser("list", help="list portal admins"))

    settings = commands.add_parser(
        "settings", help="the recording settings the portal also changes"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    settings_set = with_config(settings.add_parser("set", help="change a setting"))
    settings_set.add_argument(
        "key", metavar="KEY", choices=SETTINGS_KEYS, help=", ".join(SETTINGS_KEYS)
    )
    settings_set.add_argument("value", metavar="VALUE")
    settings_show = with_config(settings.add_parser("show", help="the settings in force"))
    settings_show.add_argument("--json", action="store_true", help="print a JSON object")

    commands.add_parser(
        "phone",
        help="a pjsua2 test softphone (callrec phone dial|answer --help)",
        add_help=False,
    )
    return parser


def _read_password(args: argparse.Namespace, *, required: bool, err: TextIO) -> str | None:
    """The password from --password-file, --password (with a warning), a positional
    argument (warned too) or a prompt when stdin is a terminal."""
    given = getattr(args, "password", None)
    positional = getattr(args, "password_argument", None)
    sources = [x for x in (args.password_file, given, positional) if x is not None]
    if len(sources) > 1:
        raise _UsageError("give the password one way only (prompt, --password-file or --password)")
    if args.password_file is not None:
        return _password_from_file(args.password_file)
    if given is not None or positional is not None:
        err.write(PASSWORD_WARNING)
        return str(given if given is not None else positional)
    if not required:
        return None
    if not _stdin_is_terminal():
        raise _UsageError(
            "a password is needed: run in a terminal to be prompted, or use --password-file FILE"
        )
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password again: "):
        raise _UsageError("the two passwords differ")
    return first


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (OSError, ValueError):
        return False


def _password_from_file(name: str) -> str:
    try:
        if name == "-":
            line = sys.stdin.readline()
        else:
            with open(name, encoding="utf-8") as file:
                line = file.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise _UsageError(f"cannot read the password file {name}: {exc}") from None
    password = line.rstrip("\r\n")
    if not password:
        raise _UsageError(f"the password file {name} has an empty first line")
    return password


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str], out: TextIO) -> None:
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    for line in (headers, *rows):
        out.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
        out.write("\n")


def _party_cell(ext: str | None, name: str | None) -> str:
    if ext and name:
        return f"{ext} ({name})"
    return ext or name or "-"


async def _with_store(config: Config, work: Callable[[Store], Awaitable[None]]) -> None:
    store = await Store.open(config.storage.db_path)
    try:
        await work(store)
    finally:
        await store.close()


async def _users_command(args: argparse.Namespace, config: Config, out: TextIO) -> None:
    async def work(store: Store) -> None:
        if args.action == "add":
            user = await store.add_user(
                args.extension,
                args.name,
                email=args.email,
                mode=args.mode,
                password=args.secret,
                devices=args.device,
                realm=config.sip.realm,
            )
            out.write(f"added user {user.extension} ({user.name}), mode {user.recording_mode}\n")
        elif args.action == "set-mode":
            user = await store.set_mode(args.extension, args.mode)
            out.write(f"user {user.extension}: mode {user.recording_mode}\n")
        elif args.action == "set-password":
            user = await store.set_password(args.extension, args.secret, config.sip.realm)
            out.write(f"user {user.extension}: password changed\n")
        elif args.action == "remove":
            await store.remove_user(args.extension)
            out.write(f"removed user {args.extension}\n")
        elif args.action == "list":
            users = await store.list_users()
            listed = [(user, await store.list_devices(user.extension)) for user in users]
            if args.json:
                json.dump([user_json(user, devices) for user, devices in listed], out, indent=2)
                out.write("\n")
            else:
                rows = [
                    (
                        user.extension,
                        user.name,
                        user.email or "-",
                        user.recording_mode,
                        "yes" if user.has_password else "no",
                        ", ".join(device.uri for device in devices) or "-",
                    )
                    for user, devices in listed
                ]
                _table(rows, ("EXT", "NAME", "EMAIL", "MODE", "PASSWORD", "DEVICES"), out)

    await _with_store(config, work)


async def _calls_command(args: argparse.Namespace, config: Config, out: TextIO) -> None:
    async def work(store: Store) -> None:
        calls = await store.list_calls(limit=args.limit, extension=args.extension)
        if args.json:
            json.dump([call_json(call) for call in calls], out, indent=2)
            out.write("\n")
            return
        rows = [
            (
                str(call.id),
                format_timestamp(call.started_at) or "-",
                call.direction,
                _party_cell(call.caller_ext, call.caller_name),
                _party_cell(call.callee_ext, call.callee_name),
                call.disposition or "in progress",
                f"{call.duration_s:.0f}s" if call.duration_s is not None else "-",
                "yes" if call.recorded else "no",
            )
            for call in calls
        ]
        headers = ("ID", "STARTED (UTC)", "DIRECTION", "FROM", "TO", "RESULT", "TALK", "REC")
        _table(rows, headers, out)

    await _with_store(config, work)


async def _recordings_command(args: argparse.Namespace, config: Config, out: TextIO) -> None:
    async def work(store: Store) -> None:
        listings = await store.list_recordings(limit=args.limit)
        if args.json:
            json.dump([listing_json(listing) for listing in listings], out, indent=2)
            out.write("\n")
            return
        rows = [
            (
                str(listing.recording.id),
                format_timestamp(listing.call.started_at) or "-",
                _party_cell(listing.call.caller_ext, listing.call.caller_name),
                _party_cell(listing.call.callee_ext, listing.call.callee_name),
                f"{listing.recording.duration_s:.1f}s"
                if listing.recording.duration_s is not None
                else "-",
                f"{listing.recording.format}/{listing.recording.channels}ch",
                listing.recording.status,
                listing.recording.path,
            )
            for listing in listings
        ]
        headers = ("ID", "STARTED (UTC)", "FROM", "TO", "LENGTH", "FORMAT", "STATUS", "PATH")
        _table(rows, headers, out)

    await _with_store(config, work)


def _cli_actor() -> str:
    """Who ran the command, for the audit log."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


async def _export_command(args: argparse.Namespace, config: Config, out: TextIO) -> None:
    from callrec.services.export import build_export

    async def work(store: Store) -> None:
        job = await build_export(
            store,
            config,
            args.month,
            requested_by=_cli_actor(),
            output=Path(args.output).resolve(),
        )
        out.write(f"exported {job.files} recording(s) of {job.month} to {job.path}\n")
        if job.error:
            out.write(f"warning: {job.error}\n")

    await _with_store(config, work)


async def _purge_command(config: Config, out: TextIO) -> None:
    from callrec.services.retention import purge_expired
    from storage.files import RecordingFiles

    async def work(store: Store) -> None:
        report = await purge_expired(store, RecordingFiles(config.storage.dir), time.time())
        for item in report.purged:
            note = "" if item.file_found else " (file was already missing)"
            out.write(f"purged recording {item.id}: {item.path}{note}\n")
        for failure in report.failed:
            out.write(f"NOT purged recording {failure.id}: {failure.path}: {failure.error}\n")
        out.write(f"{len(report.purged)} purged, {len(report.failed)} failed\n")
        if report.failed:
            raise StorageError(f"{len(report.failed)} expired recording(s) could not be deleted")

    await _with_store(config, work)


async def _admin_command(args: argparse.Namespace, config: Config, out: TextIO) -> None:
    async def work(store: Store) -> None:
        if args.action == "add":
            admin = await store.add_admin(args.name, args.secret, email=args.email)
            out.write(f"added admin {admin.name}\n")
        elif args.action == "list":
            for admin in await store.list_admins():
                out.write(f"{admin.name}  {admin.email or '-'}\n")

    await _with_store(config, work)


async def _settings_command(args: argparse.Namespace, config: Config, out: TextIO) -> None:
    async def work(store: Store) -> None:
        if args.action == "set":
            text = parse_setting(args.key, args.value)
            previous = await store.get_setting(args.key)
            await store.set_setting(args.key, text)
            await store.audit(
                _cli_actor(),
                "settings.change",
                "settings",
                detail=json.dumps({args.key: text}, sort_keys=True),
            )
            new_only = args.key == SettingKey.RETENTION_DAYS
            note = " (applies to new recordings only)" if new_only else ""
            was = f" (was {previous})" if previous is not None and previous != text else ""
            out.write(f"{args.key} = {text}{was}{note}\n")
            return
        settings = await current_settings(store, config)
        if args.json:
            json.dump(settings.settable(), out, indent=2)
            out.write("\n")
        else:
            for key, value in settings.settable().items():
                out.write(f"{key} = {value}\n")

    await _with_store(config, work)


async def current_settings(store: Store, config: Config) -> RecordingSettings:
    """The settings in force, as the B2BUA and the portal see them."""
    return config.recording_settings.with_stored(await store.all_settings())


class _ServerUnavailable(Exception):
    """callrec.app (or something it needs) is missing."""


def _serve(config: Config, *, init: bool = False) -> None:
    # Imported late: the server pulls in the whole stack, the admin commands need none.
    try:
        server: Any = importlib.import_module("callrec.app")
    except ImportError as exc:
        raise _ServerUnavailable(f"the server cannot be loaded: {exc}") from exc
    # The SIP side logs the loop it runs on when it starts listening.
    with asyncio.Runner(loop_factory=event_loop_factory(config.server.loop)) as runner:
        runner.run(server.serve(config, init=init))


PHONE_INSTALL_HINT = (
    "callrec: `callrec phone` needs the softphone extra (pjsua2): "
    "pip install 'callrec[phone]' (scripts/setup.sh installs it)"
)


def _phone(arguments: list[str]) -> int:
    """`callrec phone ...`: the tester's softphone, a separate package with its own parser."""
    try:
        phone: Any = importlib.import_module("callrec_phone.phone")
    except ImportError:
        print(PHONE_INSTALL_HINT, file=sys.stderr)
        return EXIT_FAILURE
    if importlib.util.find_spec("pjsua2") is None and not {"-h", "--help"} & set(arguments):
        print(PHONE_INSTALL_HINT, file=sys.stderr)
        return EXIT_FAILURE
    code: int = phone.run_phone(arguments)
    return code


# (command, action) -> whether a password must be given (else prompted for).
_PASSWORD_COMMANDS = {
    ("users", "add"): False,
    ("users", "set-password"): True,
    ("admin", "add"): True,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `callrec` console script; returns the exit code."""
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["phone"]:
        return _phone(arguments[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exc:  # argparse has printed usage or help already
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = sys.stdout
    try:
        args.secret = None
        if (args.command, args.action if "action" in args else None) in _PASSWORD_COMMANDS:
            required = _PASSWORD_COMMANDS[(args.command, args.action)]
            args.secret = _read_password(args, required=required, err=sys.stderr)
        config = load_config(args.config or os.environ.get(CONFIG_ENV) or None)
        if args.command == "serve":
            _serve(config, init=args.init)
        elif args.command == "users":
            asyncio.run(_users_command(args, config, out))
        elif args.command == "calls":
            asyncio.run(_calls_command(args, config, out))
        elif args.command == "recordings" and args.action == "list":
            asyncio.run(_recordings_command(args, config, out))
        elif args.command == "recordings" and args.action == "export":
            asyncio.run(_export_command(args, config, out))
        elif args.command == "purge":
            asyncio.run(_purge_command(config, out))
        elif args.command == "admin":
            asyncio.run(_admin_command(args, config, out))
        elif args.command == "settings":
            asyncio.run(_settings_command(args, config, out))
    except ConfigError as exc:
        print(f"callrec: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except _UsageError as exc:
        print(f"callrec: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PolicyError as exc:
        print(f"callrec: error: {exc.field}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except (StorageError, _ServerUnavailable, OSError) as exc:
        print(f"callrec: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK if args.command == "serve" else EXIT_FAILURE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
