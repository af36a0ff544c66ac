"""The `callrec` command: run the server and manage users, settings and call records.

`--config FILE` may come before or after the command; without it `CALLREC_CONFIG` names
the file, else the embedded defaults apply. Passwords are read from a prompt (when stdin
is a terminal) or from `--password-file FILE` (`-` for stdin); `--password` still works
for scripts but warns, since the command line is visible to every local user.
`--json` prints the same records, in the same shape, as the REST API
(`callrec.services.records`).

Organisations: `callrec orgs add|list|set|remove|usage` (also spelt `callrec org`) and
`callrec dids add|list|remove` manage them (the operator's work); `--org SLUG` says
which organisation a `users`, `settings`, `calls`, `recordings` or `admin` command is
about. Without it the command acts on the only organisation there is, and is refused
when there are several.

Users: `callrec users add` creates the same user the portal and the API create: an
extension, a name, an e-mail, a mode (on demand unless `--mode`), a SIP password (from
the prompt or `--password-file`, or made by `--generate-password` and printed once), a
portal login (`--portal-login`, its password prompted or from `--portal-password-file`)
and devices; `users set`, `set-password`, `set-portal-password`, `remove-portal-login`
edit them, and `callrec devices add|list|set-password|remove` gives a user's devices
their own SIP username and password. Every change is in the organisation's audit log
(actor `cli:<login name>`), never with a password.

Language: messages to people are Dutch or English (gettext, the `cli` catalogue in
`callrec/locale`). The first of these that names one callrec speaks decides: `--lang`;
the environment (`LANGUAGE`, `LC_ALL`, `LC_MESSAGES`, `LANG`, the first one set; `C`,
`POSIX` or another language count as no choice); with `--org`, that organisation's
language; the config's `[portal] language`. The person at the terminal chose their
locale, so it comes before the organisation's. JSON and CSV output, table headers and
the texts of errors the store reports stay English.

Exit codes: 0 success, 1 runtime failure (unknown extension, database problem, a value
a rule refuses), 2 usage or configuration error. Errors are one line on stderr, never a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import getpass
import gettext
import importlib
import importlib.util
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from callrec import __version__
from callrec.config import Config, ConfigError, event_loop_factory, load_config
from callrec.policy import (
    DEFAULT_LANGUAGE,
    DEFAULT_RECORDING_MODE,
    LANGUAGES,
    RECORDING_MODES,
    SETTINGS_KEYS,
    PolicyError,
    RecordingSettings,
    SettingKey,
    check_settings,
    parse_setting,
)
from callrec.services.records import (
    USAGE_FIELDS,
    call_json,
    device_json,
    listing_json,
    organisation_json,
    usage_json,
    user_json,
)
from storage.accounts import MIN_PORTAL_PASSWORD_LENGTH, generate_password
from storage.audit import change_detail
from storage.database import StorageError, Store
from storage.errors import InvalidValue
from storage.models import Did, OrgScope, format_timestamp
from storage.organisations import OrgHoldings, remove_organisation

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
CONFIG_ENV = "CALLREC_CONFIG"
# The CLI's message catalogues: <language>/LC_MESSAGES/cli.mo (scripts/catalogues.sh).
CLI_CATALOGUES = Path(__file__).resolve().parent / "locale"
CLI_DOMAIN = "cli"
_LANGUAGE_VARIABLES = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")


class _Messages:
    """The language the CLI speaks in this run (see the module docstring) and its
    catalogue. `chosen` is True once `--lang` or the environment decided it; only then
    does an organisation's language not apply."""

    def __init__(self) -> None:
        self.language = DEFAULT_LANGUAGE
        self.chosen = False
        self.translations: gettext.NullTranslations = gettext.NullTranslations()

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def use(self, language: str, *, chosen: bool = False) -> None:
        if language not in LANGUAGES:
            return
        self.language = language
        self.chosen = self.chosen or chosen
        if language == DEFAULT_LANGUAGE:
            self.translations = gettext.NullTranslations()
        else:
            self.translations = gettext.translation(
                CLI_DOMAIN, CLI_CATALOGUES, languages=[language], fallback=True
            )


_MESSAGES = _Messages()


def _(message: str) -> str:
    """`message` in the language of this run (an extraction keyword of the catalogue)."""
    return _MESSAGES.translations.gettext(message)


def _error() -> str:
    return _("error")


def language_from_environment(environ: Mapping[str, str]) -> str | None:
    """The language the locale variables choose, if callrec speaks it: the first of
    LANGUAGE (a list), LC_ALL, LC_MESSAGES and LANG that is set decides ("nl_NL.UTF-8"
    is Dutch; "C", "POSIX" or a language callrec does not speak: no choice)."""
    for variable in _LANGUAGE_VARIABLES:
        value = environ.get(variable, "")
        if not value:
            continue
        for part in value.split(":") if variable == "LANGUAGE" else [value]:
            code = part.split(".", 1)[0].split("@", 1)[0].replace("-", "_").split("_", 1)[0]
            if code.lower() in LANGUAGES:
                return code.lower()
        return None
    return None


_PASSWORD_WARNING_TEXT = (
    "warning: a password on the command line is visible to other local users"
    " and kept in shell history; use --password-file FILE or the prompt"
)
PASSWORD_WARNING = f"callrec: {_PASSWORD_WARNING_TEXT}\n"


def _password_warning() -> str:
    return "callrec: {}\n".format(
        _(
            "warning: a password on the command line is visible to other local users"
            " and kept in shell history; use --password-file FILE or the prompt"
        )
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


def _add_lang(parser: argparse.ArgumentParser, *, top: bool) -> None:
    parser.add_argument(
        "--lang",
        choices=LANGUAGES,
        default=None if top else argparse.SUPPRESS,
        help="the language of messages (default: the locale, else the organisation's with"
        " --org, else the config's)",
    )


def _add_generate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--generate-password",
        action="store_true",
        help="make a random password and print it once (only its HA1 is stored)",
    )


def _add_org(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--org",
        metavar="SLUG",
        help="the organisation (default: the only one; required when there are several)",
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


def _add_portal_login(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--portal-login",
        action="store_true",
        help="let the user log in to the portal (the portal password is prompted for)",
    )
    parser.add_argument(
        "--portal-password-file",
        metavar="FILE",
        help="read the portal password from the first line of FILE (implies --portal-login)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `callrec` (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="callrec", description="Call-recording SIP B2BUA and its administration."
    )
    parser.add_argument("--version", action="version", version=f"callrec {__version__}")
    _add_config(parser, top=True)
    _add_lang(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def with_config(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        _add_config(sub, top=False)
        _add_lang(sub, top=False)
        return sub

    serve = with_config(commands.add_parser("serve", help="run SIP, media, portal and retention"))
    serve.add_argument(
        "--init",
        action="store_true",
        help="create a new database when the file exists but is empty (a missing one is"
        " always created)",
    )

    orgs = commands.add_parser(
        "orgs", aliases=["org"], help="organisations (operator)"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    orgs_add = with_config(orgs.add_parser("add", help="add an organisation"))
    orgs_add.add_argument("slug", metavar="SLUG")
    orgs_add.add_argument("--name", required=True)
    orgs_add.add_argument(
        "--domain", required=True, help="its phones' SIP domain, also their digest realm"
    )
    orgs_add.add_argument("--language", help="default: the config's [portal] language")
    orgs_add.add_argument("--timezone", help="default: the config's [portal] timezone")
    orgs_list = with_config(orgs.add_parser("list", help="list organisations"))
    orgs_list.add_argument("--json", action="store_true", help="print a JSON list")
    orgs_set = with_config(orgs.add_parser("set", help="change an organisation"))
    orgs_set.add_argument("slug", metavar="SLUG")
    orgs_set.add_argument("--name")
    orgs_set.add_argument(
        "--domain", help="a new SIP domain (a new digest realm: set SIP passwords again)"
    )
    orgs_set.add_argument("--language")
    orgs_set.add_argument("--timezone")
    orgs_remove = with_config(
        orgs.add_parser(
            "remove",
            help="remove an organisation with its users, devices, numbers, settings, calls"
            " and recordings (asks first)",
        )
    )
    orgs_remove.add_argument("slug", metavar="SLUG")
    orgs_remove.add_argument(
        "--purge-recordings",
        action="store_true",
        help="also delete its recordings still under retention and their files (refused"
        " without it while there are any)",
    )
    orgs_remove.add_argument(
        "--yes", action="store_true", help="do not ask (for scripts; there is no undo)"
    )
    orgs_usage = with_config(
        orgs.add_parser("usage", help="what each organisation used in a month (billing)")
    )
    orgs_usage.add_argument("--month", required=True, metavar="YYYY-MM")
    orgs_usage.add_argument("--json", action="store_true", help="print JSON instead of CSV")

    dids = commands.add_parser(
        "dids", help="numbers from the trunk, per organisation (operator)"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    dids_add = with_config(dids.add_parser("add", help="give numbers to an organisation"))
    _add_org(dids_add)
    dids_add.add_argument("first", metavar="NUMBER")
    dids_add.add_argument("--last", metavar="NUMBER", help="the range's last number")
    dids_add.add_argument(
        "--extension",
        type=_extension,
        metavar="EXT",
        help="ring this extension (default: the number called is the extension)",
    )
    dids_list = with_config(dids.add_parser("list", help="an organisation's numbers"))
    _add_org(dids_list)
    dids_remove = with_config(dids.add_parser("remove", help="take a number range away"))
    _add_org(dids_remove)
    dids_remove.add_argument("id", metavar="ID", type=_positive)

    users = commands.add_parser("users", help="manage users").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    add = with_config(users.add_parser("add", help="add a user"))
    _add_org(add)
    add.add_argument("extension", metavar="EXT", type=_extension)
    add.add_argument("--name", required=True)
    add.add_argument("--email")
    add.add_argument("--mode", choices=RECORDING_MODES, default=DEFAULT_RECORDING_MODE.value)
    add.add_argument(
        "--device",
        metavar="URI",
        action="append",
        default=[],
        help="a sip: URI or a username on the organisation's domain, sharing the user's SIP"
        " password (repeatable; `callrec devices add` gives one its own)",
    )
    _add_password(add, "SIP digest password (only its HA1 is stored; none if not given)")
    _add_generate(add)
    _add_portal_login(add)

    set_user = with_config(users.add_parser("set", help="change a user's name or e-mail"))
    _add_org(set_user)
    set_user.add_argument("extension", metavar="EXT", type=_extension)
    set_user.add_argument("--name")
    email = set_user.add_mutually_exclusive_group()
    email.add_argument("--email")
    email.add_argument("--no-email", action="store_true", help="remove the e-mail address")

    portal_password = with_config(
        users.add_parser(
            "set-portal-password", help="give a user a portal login (password prompted)"
        )
    )
    _add_org(portal_password)
    portal_password.add_argument("extension", metavar="EXT", type=_extension)
    _add_password(portal_password, "portal password (only an argon2 hash is stored)")

    no_portal = with_config(
        users.add_parser("remove-portal-login", help="take a user's portal login away")
    )
    _add_org(no_portal)
    no_portal.add_argument("extension", metavar="EXT", type=_extension)

    set_mode = with_config(users.add_parser("set-mode", help="change the recording mode"))
    _add_org(set_mode)
    set_mode.add_argument("extension", metavar="EXT", type=_extension)
    set_mode.add_argument("mode", metavar="MODE", choices=RECORDING_MODES)

    set_password = with_config(
        users.add_parser("set-password", help="change the password (prompted if not given)")
    )
    _add_org(set_password)
    set_password.add_argument("extension", metavar="EXT", type=_extension)
    set_password.add_argument(
        "password_argument",
        metavar="PASSWORD",
        nargs="?",
        help="the new password (visible to other users: prefer the prompt or a file)",
    )
    _add_password(set_password, "new SIP digest password")
    _add_generate(set_password)

    remove = with_config(users.add_parser("remove", help="remove a user and their devices"))
    _add_org(remove)
    remove.add_argument("extension", metavar="EXT", type=_extension)

    list_users = with_config(users.add_parser("list", help="list users"))
    _add_org(list_users)
    list_users.add_argument("--json", action="store_true", help="print a JSON list")

    devices = commands.add_parser(
        "devices", help="a user's devices, each with its own SIP username and password"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    devices_add = with_config(devices.add_parser("add", help="add a device to a user"))
    _add_org(devices_add)
    devices_add.add_argument("extension", metavar="EXT", type=_extension)
    devices_add.add_argument(
        "device", metavar="USERNAME_OR_URI", help="its SIP username, or a sip: URI"
    )
    devices_add.add_argument("--kind", default="phone")
    _add_password(devices_add, "device's SIP password (only its HA1 is stored)")
    _add_generate(devices_add)
    devices_list = with_config(devices.add_parser("list", help="a user's devices"))
    _add_org(devices_list)
    devices_list.add_argument("extension", metavar="EXT", type=_extension)
    devices_list.add_argument("--json", action="store_true", help="print a JSON list")
    devices_password = with_config(
        devices.add_parser("set-password", help="a new password for a device")
    )
    _add_org(devices_password)
    devices_password.add_argument("extension", metavar="EXT", type=_extension)
    devices_password.add_argument("id", metavar="ID", type=_positive)
    _add_password(devices_password, "device's new SIP password")
    _add_generate(devices_password)
    devices_remove = with_config(devices.add_parser("remove", help="remove a device"))
    _add_org(devices_remove)
    devices_remove.add_argument("extension", metavar="EXT", type=_extension)
    devices_remove.add_argument("id", metavar="ID", type=_positive)

    calls = commands.add_parser("calls", help="call detail records").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    list_calls = with_config(calls.add_parser("list", help="list calls, newest first"))
    _add_org(list_calls)
    list_calls.add_argument("--json", action="store_true", help="print a JSON list")
    list_calls.add_argument("--limit", type=_positive, default=100, metavar="N")
    list_calls.add_argument("--extension", type=_extension, metavar="EXT")

    recordings = commands.add_parser("recordings", help="recordings").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    list_recordings = with_config(
        recordings.add_parser("list", help="list recordings, newest first")
    )
    _add_org(list_recordings)
    list_recordings.add_argument("--json", action="store_true", help="print a JSON list")
    list_recordings.add_argument("--limit", type=_positive, default=100, metavar="N")
    export = with_config(
        recordings.add_parser("export", help="write one month's recordings to a ZIP")
    )
    _add_org(export)
    export.add_argument(
        "--month", required=True, metavar="YYYY-MM", help="a month in the organisation's time zone"
    )
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
    _add_org(admin_add)
    admin_add.add_argument(
        "--operator",
        action="store_true",
        help="a platform operator (administers organisations) instead of an admin of one",
    )
    admin_list = with_config(admin.add_parser("list", help="list portal admins"))
    _add_org(admin_list)
    admin_list.add_argument("--operators", action="store_true", help="list the operators")

    settings = commands.add_parser(
        "settings", help="the recording settings the portal also changes"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    settings_set = with_config(settings.add_parser("set", help="change a setting"))
    _add_org(settings_set)
    settings_set.add_argument(
        "key", metavar="KEY", choices=SETTINGS_KEYS, help=", ".join(SETTINGS_KEYS)
    )
    settings_set.add_argument("value", metavar="VALUE")
    settings_show = with_config(settings.add_parser("show", help="the settings in force"))
    _add_org(settings_show)
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
    generate = getattr(args, "generate_password", False)
    sources = [x for x in (args.password_file, given, positional) if x is not None]
    if len(sources) + bool(generate) > 1:
        raise _UsageError(
            _(
                "give the password one way only (prompt, --password-file, --password or"
                " --generate-password)"
            )
        )
    if generate:
        return generate_password()
    if args.password_file is not None:
        return _password_from_file(args.password_file)
    if given is not None or positional is not None:
        err.write(_password_warning())
        return str(given if given is not None else positional)
    if not required:
        return None
    return _prompt_password(_("Password: "), _("Password again: "))


def _prompt_password(prompt: str, again: str) -> str:
    if not _stdin_is_terminal():
        raise _UsageError(
            _("a password is needed: run in a terminal to be prompted, or use --password-file FILE")
        )
    first = getpass.getpass(prompt)
    if first != getpass.getpass(again):
        raise _UsageError(_("the two passwords differ"))
    return first


def _read_portal_password(args: argparse.Namespace) -> str | None:
    """`users add`'s portal password: from --portal-password-file, else prompted with
    --portal-login, else none (no portal login)."""
    if args.portal_password_file is not None:
        password = _password_from_file(args.portal_password_file)
    elif args.portal_login:
        password = _prompt_password(_("Portal password: "), _("Portal password again: "))
    else:
        return None
    if len(password) < MIN_PORTAL_PASSWORD_LENGTH:
        raise _UsageError(
            _("the portal password must have at least {count} characters").format(
                count=MIN_PORTAL_PASSWORD_LENGTH
            )
        )
    return password


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
        raise _UsageError(
            _("cannot read the password file {name}: {error}").format(name=name, error=exc)
        ) from None
    password = line.rstrip("\r\n")
    if not password:
        raise _UsageError(_("the password file {name} has an empty first line").format(name=name))
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
    store = await Store.open(config.storage.database, default_domain=config.sip.realm)
    try:
        await work(store)
    finally:
        await store.close()


async def _org(store: Store, args: argparse.Namespace) -> OrgScope:
    """The organisation `--org` names; without it the only one there is."""
    slug = getattr(args, "org", None)
    try:
        scope = await store.org_scope(slug)
    except InvalidValue as exc:
        raise _UsageError(_("give --org SLUG: {reason}").format(reason=exc.message)) from None
    if slug is not None and not _MESSAGES.chosen:
        # Nobody chose a language: the organisation named speaks its own.
        org = await store.get_organisation(scope.slug)
        if org is not None and org.language:
            _MESSAGES.use(org.language)
    return scope


async def _orgs_command(args: argparse.Namespace, config: Config, out: TextIO) -> None:
    async def work(store: Store) -> None:
        defaults = config.recording_settings
        if args.action == "add":
            org = await store.add_organisation(
                args.slug,
                args.name,
                args.domain,
                # The server's language and time zone become the new organisation's own.
                language=args.language or defaults.language,
                timezone=args.timezone or defaults.timezone,
            )
            await store.audit(None, _cli_actor(), "org.add", f"org:{org.slug}", detail=org.domain)
            out.write(
                _("added organisation {slug} ({name}), domain {domain}").format(
                    slug=org.slug, name=org.name, domain=org.domain
                )
                + "\n"
            )
        elif args.action == "set":
            scope = await store.org_scope(args.slug)
            org = await store.update_organisation(
                scope,
                name=args.name,
                domain=args.domain,
                language=args.language,
                timezone=args.timezone,
            )
            await store.audit(
                None,
                _cli_actor(),
                "org.change",
                f"org:{org.slug}",
                detail=json.dumps(organisation_json(org), sort_keys=True),
            )
            out.write(
                _("organisation {slug}: {name}, domain {domain}").format(
                    slug=org.slug, name=org.name, domain=org.domain
                )
                + "\n"
            )
        elif args.action == "remove":
            await _remove_organisation(store, config, args, out)
        elif args.action == "list":
            orgs = await store.list_organisations()
            if args.json:
                json.dump([organisation_json(org) for org in orgs], out, indent=2)
                out.write("\n")
                return
            rows = [
                (
                    org.slug,
                    org.name,
                    org.domain,
                    org.language or defaults.language,
                    org.timezone or defaults.timezone,
                )
                for org in orgs
            ]
            _table(rows, ("SLUG", "NAME", "DOMAIN", "LANGUAGE", "TIMEZONE"), out)
        elif args.action == "usage":
            from callrec.services.export import parse_month
            from callrec.services.presentation import Presentations

            usages: list[dict[str, Any]] = []
            for org in await store.list_organisations():
                settings = defaults.with_stored(await store.org_settings(org.scope))
                zone = Presentations().for_settings(settings)
                since, until = parse_month(args.month, zone)
                usage = await store.usage(org.scope, since, until, settings.retention_days)
                usages.append(usage_json(org, args.month, usage))
            if args.json:
                json.dump(usages, out, indent=2)
                out.write("\n")
                return
            writer = csv.DictWriter(out, fieldnames=list(USAGE_FIELDS), lineterminator="\n")
            writer.writeheader()
            writer.writerows(usages)

    await _with_store(config, work)


def _confirm_removal(slug: str, holdings: OrgHoldings, out: TextIO) -> None:
    """Ask at the terminal, as a removal that cannot be undone should: the operator
    types the organisation's slug. Without a terminal, --yes is the answer."""
    out.write(
        _(
            "organisation {slug} holds {users} user(s), {devices} device(s), {dids} number"
            " range(s), {calls} call(s) and {recordings} recording(s), {kept} of them still"
            " under retention; all of it will be removed"
        ).format(
            slug=slug,
            users=holdings.users,
            devices=holdings.devices,
            dids=holdings.dids,
            calls=holdings.calls,
            recordings=holdings.recordings,
            kept=holdings.kept_recordings,
        )
        + "\n"
    )
    if not _stdin_is_terminal():
        raise _UsageError(_("not removed: confirm with --yes (there is no terminal to ask)"))
    out.flush()
    answer = input(_("Type {slug} to remove it: ").format(slug=slug))
    if answer.strip() != slug:
        raise _UsageError(_("not removed: the answer was not {slug}").format(slug=slug))


async def _remove_organisation(
    store: Store, config: Config, args: argparse.Namespace, out: TextIO
) -> None:
    from storage.files import RecordingFiles
    from storage.notices import NoticeFiles

    scope = await store.org_scope(args.slug)
    now = time.time()
    holdings = await store.organisation_holdings(scope, now)
    refusal = holdings.refusal(args.purge_recordings)
    if refusal is not None:
        raise refusal
    if not args.yes:
        _confirm_removal(scope.slug, holdings, out)
    files = RecordingFiles.from_config(config.storage)  # the object store's too
    try:
        removed = await remove_organisation(
            store,
            files,
            NoticeFiles(config.storage.dir),
            scope,
            now=now,
            purge_recordings=args.purge_recordings,
            actor=_cli_actor(),
        )
    finally:
        await files.close()
    out.write(
        _("removed organisation {slug}: {users} user(s), {recordings} recording(s)").format(
            slug=scope.slug, users=removed.users, recordings=removed.recordings
        )
        + "\n"
    )


async def _dids_command(args: argparse.Namespace, config: Config, out: TextIO) -> None:
    async def work(store: Store) -> None:
        org = await _org(store, args)
        if args.action == "add":
            did = await store.add_did(org, args.first, args.last, args.extension)
            await store.audit(
                None, _cli_actor(), "did.add", f"org:{org.slug}", detail=_did_text(did)
            )
            out.write(
                _("organisation {slug}: number(s) {numbers} (id {id})").format(
                    slug=org.slug, numbers=_did_text(did), id=did.id
                )
                + "\n"
            )
        elif args.action == "remove":
            await store.remove_did(org, args.id)
            await store.audit(
                None, _cli_actor(), "did.remove", f"org:{org.slug}", detail=str(args.id)
            )
            out.write(
                _("organisation {slug}: number range {id} removed").format(
                    slug=org.slug, id=args.id
                )
                + "\n"
            )
        elif args.action == "list":
            rows = [
                (str(did.id), did.first, did.last, did.extension or "(the number)")
                for did in await store.list_dids(org)
            ]
            _table(rows, ("ID", "FIRST", "LAST", "RINGS"), out)

    await _with_store(config, work)


def _did_text(did: Did) -> str:
    numbers = did.first if did.first == did.last else f"{did.first}..{did.last}"
    return numbers + (f" -> {did.extension}" if did.extension else "")


def _generated(out: TextIO, username: str, password: str) -> None:
    """Print a password callrec made, this once (only its HA1 is stored)."""
    out.write(
        _("SIP password for {username} (shown once, note it now): {password}").format(
            username=username, password=password
        )
        + "\n"
    )


async def _users_command(args: argparse.Namespace, config: Config, out: TextIO) -> None:
    portal_password = _read_portal_password(args) if args.action == "add" else None

    async def work(store: Store) -> None:
        org = await _org(store, args)
        actor = _cli_actor()
        generated = bool(getattr(args, "generate_password", False))
        if args.action == "add":
            user = await store.add_user(
                org,
                args.extension,
                args.name,
                email=args.email,
                mode=args.mode,
                password=args.secret,
                devices=args.device,
                portal_password=portal_password,
            )
            detail = change_detail(
                mode=args.mode,
                sip_password="generated" if generated else ("set" if args.secret else "none"),
                portal_login=portal_password is not None,
                devices=len(args.device),
            )
            await store.audit(org, actor, "user.add", f"user:{user.extension}", detail=detail)
            out.write(
                _("added user {extension} ({name}), mode {mode}").format(
                    extension=user.extension, name=user.name, mode=user.recording_mode
                )
                + "\n"
            )
            if generated and args.secret:
                _generated(out, user.extension, args.secret)
        elif args.action == "set":
            changes: dict[str, Any] = {}
            if args.name is not None:
                changes["name"] = args.name
            if args.email is not None or args.no_email:
                changes["email"] = None if args.no_email else args.email
            if not changes:
                raise _UsageError(_("give --name, --email or --no-email"))
            user = await store.update_user(org, args.extension, **changes)
            await store.audit(
                org,
                actor,
                "user.change",
                f"user:{user.extension}",
                detail=json.dumps(changes, sort_keys=True),
            )
            out.write(
                _("user {extension}: {name}, e-mail {email}").format(
                    extension=user.extension, name=user.name, email=user.email or "-"
                )
                + "\n"
            )
        elif args.action == "set-mode":
            user = await store.set_mode(org, args.extension, args.mode)
            await store.audit(org, actor, "mode.change", f"user:{user.extension}", detail=args.mode)
            out.write(
                _("user {extension}: mode {mode}").format(
                    extension=user.extension, mode=user.recording_mode
                )
                + "\n"
            )
        elif args.action == "set-password":
            user = await store.set_password(org, args.extension, args.secret)
            detail = "generated" if generated else "set"
            await store.audit(org, actor, "password.set", f"user:{user.extension}", detail=detail)
            out.write(_("user {extension}: password changed").format(extension=user.extension))
            out.write("\n")
            if generated:
                _generated(out, user.extension, args.secret)
        elif args.action == "set-portal-password":
            await store.set_portal_password(org, args.extension, args.secret)
            await store.audit(org, actor, "portal_password.set", f"user:{args.extension}")
            out.write(
                _("user {extension}: can log in to the portal").format(extension=args.extension)
                + "\n"
            )
        elif args.action == "remove-portal-login":
            await store.clear_portal_password(org, args.extension)
            await store.audit(org, actor, "portal_password.remove", f"user:{args.extension}")
            out.write(
                _("user {extension}: can no longer log in to the portal").format(
                    extension=args.extension
                )
                + "\n"
            )
        elif args.action == "remove":
            await store.remove_user(org, args.extension)
            await store.audit(org, actor, "user.remove", f"user:{args.extension}")
            out.write(_("removed user {extension}").format(extension=args.extension) + "\n")
        elif args.action == "list":
            users = await store.list_users(org)
            listed = [(user, await store.list_devices(org, user.extension)) for user in users]
            if args.json:
                json.dump([user_json(user, devices) for user, devices in listed], out, indent=2)
                out.write("\n")
            else:
                yes, no = _("yes"), _("no")
                rows = [
                    (
                        user.extension,
                        user.name,
                        user.email or "-",
                        user.recording_mode,
                        yes if user.has_password else no,
                        yes if user.portal_login else no,
                        ", ".join(device.username or device.uri for device in devices) or "-",
                    )
                    for user, devices in listed
                ]
                headers = ("EXT", "NAME", "EMAIL", "MODE", "PASSWORD", "PORTAL", "DEVICES")
                _table(rows, headers, out)

    await _with_store(config, work)


async def _devices_command(args: argparse.Namespace, config: Config, out: TextIO) -> None:
    async def work(store: Store) -> None:
        org = await _org(store, args)
        actor = _cli_actor()
        generated = bool(getattr(args, "generate_password", False))
        how = "generated" if generated else "set"
        if args.action == "add":
            device = await store.add_device(
                org, args.extension, args.device, args.kind, args.secret
            )
            detail = change_detail(uri=device.uri, password=how if args.secret else "none")
            await store.audit(org, actor, "device.add", f"user:{args.extension}", detail=detail)
            out.write(
                _("user {extension}: device {id} added, SIP username {username}").format(
                    extension=args.extension,
                    id=device.id,
                    username=device.username or args.extension,
                )
                + "\n"
            )
            if device.username is None and args.secret:
                out.write(
                    _(
                        "note: this device signs in as the extension, with the user's password;"
                        " the password given was not used"
                    )
                    + "\n"
                )
            elif generated and args.secret:
                _generated(out, device.username or args.extension, args.secret)
        elif args.action == "set-password":
            device = await store.set_device_password(org, args.extension, args.id, args.secret)
            await store.audit(
                org,
                actor,
                "device.password.set",
                f"user:{args.extension}",
                detail=f"{device.uri}: {how}",
            )
            out.write(
                _("user {extension}: device {id}: password changed").format(
                    extension=args.extension, id=device.id
                )
                + "\n"
            )
            if generated:
                _generated(out, device.username or args.extension, args.secret)
        elif args.action == "remove":
            device = await store.remove_device(org, args.extension, args.id)
            await store.audit(
                org, actor, "device.remove", f"user:{args.extension}", detail=device.uri
            )
            out.write(
                _("user {extension}: device {id} removed").format(
                    extension=args.extension, id=device.id
                )
                + "\n"
            )
        elif args.action == "list":
            found = await store.list_devices(org, args.extension)
            if args.json:
                json.dump([device_json(device) for device in found], out, indent=2)
                out.write("\n")
                return
            yes, no = _("yes"), _("no")
            rows = [
                (
                    str(device.id),
                    device.username or args.extension,
                    device.uri,
                    device.kind,
                    yes if device.username is None or device.ha1_md5 else no,
                )
                for device in found
            ]
            _table(rows, ("ID", "USERNAME", "URI", "KIND", "PASSWORD"), out)

    await _with_store(config, work)


async def _calls_command(args: argparse.Namespace, config: Config, out: TextIO) -> None:
    async def work(store: Store) -> None:
        org = await _org(store, args)
        calls = await store.list_calls(org, limit=args.limit, extension=args.extension)
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
        org = await _org(store, args)
        listings = await store.list_recordings(org, limit=args.limit)
        if args.json:
            from callrec.services.presentation import Presentations

            zone = await Presentations().in_force(store, config, org)
            spans = await store.recorded_spans(org, [x.recording for x in listings])
            shown = [listing_json(x, spans[x.recording.id], zone) for x in listings]
            json.dump(shown, out, indent=2)
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
            await _org(store, args),
            args.month,
            requested_by=_cli_actor(),
            output=Path(args.output).resolve(),
        )
        out.write(
            _("exported {count} recording(s) of {month} to {path}").format(
                count=job.files, month=job.month, path=job.path
            )
            + "\n"
        )
        if job.error:
            out.write(_("warning: {reason}").format(reason=job.error) + "\n")

    await _with_store(config, work)


async def _purge_command(config: Config, out: TextIO) -> None:
    from callrec.services.retention import purge_expired
    from storage.files import RecordingFiles

    async def work(store: Store) -> None:
        files = RecordingFiles.from_config(config.storage)  # the object store's too
        try:
            report = await purge_expired(store, files, time.time())
        finally:
            await files.close()
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
        if args.action == "add" and args.operator:
            if args.org is not None:
                raise _UsageError(_("an operator belongs to no organisation: drop --org"))
            admin = await store.add_operator(args.name, args.secret, email=args.email)
            await store.audit(None, _cli_actor(), "operator.add", f"admin:{admin.name}")
            out.write(_("added operator {name}").format(name=admin.name) + "\n")
        elif args.action == "add":
            org = await _org(store, args)
            admin = await store.add_admin(org, args.name, args.secret, email=args.email)
            await store.audit(org, _cli_actor(), "admin.add", f"admin:{admin.name}")
            out.write(
                _("added admin {name} of organisation {slug}").format(
                    name=admin.name, slug=org.slug
                )
                + "\n"
            )
        elif args.action == "list":
            if args.operators:
                admins = await store.list_operators()
            else:
                admins = await store.list_admins(await _org(store, args))
            for admin in admins:
                out.write(f"{admin.name}  {admin.email or '-'}\n")

    await _with_store(config, work)


async def _settings_command(args: argparse.Namespace, config: Config, out: TextIO) -> None:
    async def work(store: Store) -> None:
        org = await _org(store, args)
        if args.action == "set":
            text = parse_setting(args.key, args.value)
            stored = await store.org_settings(org)
            previous = stored.get(args.key)
            check_settings(config.recording_settings.with_stored({**stored, args.key: text}))
            await store.set_org_setting(org, args.key, text)
            await store.audit(
                org,
                _cli_actor(),
                "settings.change",
                "settings",
                detail=json.dumps({args.key: text}, sort_keys=True),
            )
            new_only = args.key == SettingKey.RETENTION_DAYS
            note = " ({})".format(_("applies to new recordings only")) if new_only else ""
            was = ""
            if previous is not None and previous != text:
                was = " ({})".format(_("was {value}").format(value=previous))
            out.write(f"{args.key} = {text}{was}{note}\n")
            return
        settings = await current_settings(store, config, org)
        if args.json:
            json.dump(settings.settable(), out, indent=2)
            out.write("\n")
        else:
            for key, value in settings.settable().items():
                out.write(f"{key} = {value}\n")

    await _with_store(config, work)


async def current_settings(store: Store, config: Config, org: OrgScope) -> RecordingSettings:
    """`org`'s settings in force, as the B2BUA and the portal see them."""
    return config.recording_settings.with_stored(await store.org_settings(org))


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
    ("users", "set-portal-password"): True,
    ("devices", "add"): False,
    ("devices", "set-password"): True,
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
    # Each run decides its language afresh (tests run many in one process).
    _MESSAGES.reset()
    chosen = args.lang or language_from_environment(os.environ)
    if chosen is not None:
        _MESSAGES.use(chosen, chosen=True)
    try:
        args.secret = None
        if (args.command, args.action if "action" in args else None) in _PASSWORD_COMMANDS:
            required = _PASSWORD_COMMANDS[(args.command, args.action)]
            args.secret = _read_password(args, required=required, err=sys.stderr)
        config = load_config(args.config or os.environ.get(CONFIG_ENV) or None)
        if not _MESSAGES.chosen:
            _MESSAGES.use(config.recording_settings.language)
        if args.command == "serve":
            _serve(config, init=args.init)
        elif args.command in ("orgs", "org"):
            asyncio.run(_orgs_command(args, config, out))
        elif args.command == "dids":
            asyncio.run(_dids_command(args, config, out))
        elif args.command == "users":
            asyncio.run(_users_command(args, config, out))
        elif args.command == "devices":
            asyncio.run(_devices_command(args, config, out))
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
        print(f"callrec: {_error()}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PolicyError as exc:
        print(f"callrec: {_error()}: {exc.field}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except (StorageError, _ServerUnavailable, OSError) as exc:
        print(f"callrec: {_error()}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK if args.command == "serve" else EXIT_FAILURE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
