"""The OpenAPI 3 description of /api/v1/, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from callrec.policy import (
    ANNOUNCEMENT_FILE,
    ANNOUNCEMENTS,
    BULK_DOWNLOAD_MIN_RETENTION_DAYS,
    CHANNELS,
    DEFAULT_RECORDING_MODE,
    FEATURE_CODE_PATTERN,
    FORMATS,
    LANGUAGES,
    RECORDING_MODES,
    RETENTION_MAX_DAYS,
    RETENTION_MIN_DAYS,
    SettingKey,
)

_MODE = {"type": "string", "enum": list(RECORDING_MODES)}
_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = _json(schema)
    return answer


def _errors(*statuses: int) -> dict[str, Any]:
    words = {
        401: "Not logged in",
        403: "Needs an administrator",
        404: "Unknown id (or not visible to you)",
        405: "Method not allowed",
        409: "Refused in the current state",
        410: "Purged after its retention",
        416: "Range not satisfiable",
        422: "Validation error; `field` names the offending field",
        503: "The store (or the object store) cannot be used now; try again",
    }
    return {str(s): _answer(words[s], _ERROR) for s in statuses}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _page_of(name: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "page", "page_size", "total"],
        "properties": {
            "items": {"type": "array", "items": _ref(name)},
            "page": {"type": "integer", "minimum": 1},
            "page_size": {"type": "integer", "minimum": 1, "maximum": 200},
            "total": {"type": "integer", "minimum": 0},
        },
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


_ID = _path("id", {"type": "integer", "minimum": 1})
_EXT = _path("extension", {"type": "string", "pattern": "^[0-9]{2,15}$"})
_CALL_FILTERS = [
    _query("from", {"type": "string"}, "First day (YYYY-MM-DD, UTC) or ISO time"),
    _query("to", {"type": "string"}, "Last day, inclusive (YYYY-MM-DD, UTC) or ISO time"),
    _query(
        "extension", {"type": "string", "pattern": "^[0-9]{2,15}$"}, "Caller or callee extension"
    ),
    _query(
        "q",
        {"type": "string", "maxLength": 100},
        "Text in a party's name or number (part of it); % and _ are literal",
    ),
    _query("page", {"type": "integer", "minimum": 1, "default": 1}, "1-based page"),
    _query(
        "page_size",
        {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
        "Rows per page",
    ),
]
_BODY = "requestBody"
_GENERATE = {
    "type": "boolean",
    "description": "make a random password instead of `password`; the answer carries it"
    " in `password`, this once",
}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": _json(schema)}


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "status"],
        "properties": {
            "error": {"type": "string"},
            "status": {"type": "integer"},
            "field": {"type": "string", "nullable": True},
        },
    },
    "User": {
        "type": "object",
        "properties": {
            "extension": {"type": "string"},
            "name": {"type": "string"},
            "email": {"type": "string", "nullable": True},
            "recording_mode": _MODE,
            "has_password": {"type": "boolean"},
            "portal_login": {"type": "boolean", "description": "may log in to the portal"},
            "realm": {"type": "string", "nullable": True},
            "language": {
                "type": "string",
                "enum": list(LANGUAGES),
                "nullable": True,
                "description": "the user's own portal language; null: the organisation's",
            },
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "NewUser": {
        "type": "object",
        "required": ["extension", "name"],
        "properties": {
            "extension": {"type": "string", "pattern": "^[0-9]{2,15}$"},
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "email": {"type": "string"},
            "mode": {**_MODE, "default": DEFAULT_RECORDING_MODE.value},
            "password": {"type": "string", "description": "SIP digest password"},
            "generate_password": _GENERATE,
            "portal_password": {"type": "string", "minLength": 8},
            "devices": {
                "type": "array",
                "items": {"type": "string"},
                "description": "SIP URIs or usernames, sharing the SIP password",
            },
        },
    },
    "SipPassword": {
        "type": "object",
        "properties": {"password": {"type": "string"}, "generate_password": _GENERATE},
    },
    "Device": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "uri": {"type": "string"},
            "username": {"type": "string", "nullable": True},
            "kind": {"type": "string"},
        },
    },
    "Settings": {
        "type": "object",
        "properties": {
            SettingKey.FEATURE_CODE.value: {
                "type": "string",
                "pattern": f"^{FEATURE_CODE_PATTERN}$",
            },
            SettingKey.RETENTION_DAYS.value: {
                "type": "integer",
                "minimum": RETENTION_MIN_DAYS,
                "maximum": RETENTION_MAX_DAYS,
            },
            SettingKey.ANNOUNCEMENT.value: {
                "type": "string",
                "enum": [*ANNOUNCEMENTS, ANNOUNCEMENT_FILE],
                "description": "default: the shipped spoken notice in `language`;"
                f" {ANNOUNCEMENT_FILE}: the WAV file the server's config names"
                " (only when it names one)",
            },
            SettingKey.CHANNELS.value: {"type": "string", "enum": list(CHANNELS)},
            SettingKey.LANGUAGE.value: {"type": "string", "enum": list(LANGUAGES)},
            SettingKey.TIMEZONE.value: {
                "type": "string",
                "description": "an IANA time zone such as Europe/Amsterdam: reports,"
                " date filters, file names and export months use it",
            },
            "announcement_file": {
                "type": "string",
                "nullable": True,
                "readOnly": True,
                "description": "the name of the config's announcement file, if any",
            },
            "note": {"type": "string", "readOnly": True},
        },
    },
    "Party": {
        "type": "object",
        "properties": {
            "extension": {"type": "string", "nullable": True},
            "name": {"type": "string", "nullable": True},
        },
    },
    "Recording": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "call_id": {"type": "integer"},
            "owner_ext": {"type": "string", "nullable": True},
            "path": {"type": "string", "description": "relative to the storage folder"},
            "format": {"type": "string", "enum": list(FORMATS)},
            "media_type": {"type": "string", "enum": ["audio/wav", "audio/flac"]},
            "channels": {"type": "integer"},
            "sample_rate": {"type": "integer"},
            "codec": {"type": "string", "nullable": True},
            "status": {"type": "string"},
            "error": {"type": "string", "nullable": True},
            "started_at": {"type": "string", "format": "date-time"},
            "ended_at": {"type": "string", "format": "date-time", "nullable": True},
            "duration_s": {"type": "number", "nullable": True},
            "segments": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
            "spans": {
                "type": "array",
                "description": "what was recorded: each feature-code start to its stop"
                " (on demand), or the whole recording (always); *_local in the"
                " organisation's time zone",
                "items": {
                    "type": "object",
                    "properties": {
                        "start": {"type": "string", "format": "date-time"},
                        "end": {"type": "string", "format": "date-time", "nullable": True},
                        "start_local": {"type": "string", "format": "date-time"},
                        "end_local": {"type": "string", "format": "date-time", "nullable": True},
                    },
                },
            },
            "sha256": {"type": "string", "nullable": True},
            "bytes": {"type": "integer", "nullable": True},
            "retention_days": {"type": "integer"},
            "expires_at": {"type": "string", "format": "date-time"},
            "purged_at": {"type": "string", "format": "date-time", "nullable": True},
            "audio_url": {"type": "string", "nullable": True},
            "download_url": {"type": "string", "nullable": True},
            "call": {"type": "object"},
        },
    },
    "Call": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "sip_call_id": {"type": "string"},
            "direction": {"type": "string"},
            "caller": _ref("Party"),
            "callee": _ref("Party"),
            "started_at": {"type": "string", "format": "date-time"},
            "answered_at": {"type": "string", "format": "date-time", "nullable": True},
            "ended_at": {"type": "string", "format": "date-time", "nullable": True},
            "duration_s": {"type": "number", "nullable": True},
            "disposition": {"type": "string", "nullable": True},
            "sip_status": {"type": "integer", "nullable": True},
            "recorded": {"type": "boolean"},
            "recordings": {"type": "array", "items": _ref("Recording")},
        },
    },
    "Export": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "month": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
            "status": {"type": "string"},
            "requested_by": {"type": "string"},
            "requested_at": {"type": "string", "format": "date-time"},
            "files": {"type": "integer", "nullable": True},
            "bytes": {"type": "integer", "nullable": True},
            "error": {"type": "string", "nullable": True},
            "finished_at": {"type": "string", "format": "date-time", "nullable": True},
        },
    },
    "AuditEntry": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "at": {"type": "string", "format": "date-time"},
            "actor": {"type": "string"},
            "action": {"type": "string"},
            "object": {"type": "string", "nullable": True},
            "address": {"type": "string", "nullable": True},
            "detail": {"type": "string", "nullable": True},
        },
    },
}

_AUDIO = {
    "200": {
        "description": "The whole file",
        "headers": {"Accept-Ranges": {"schema": {"type": "string"}}},
        "content": {
            "audio/wav": {"schema": {"type": "string", "format": "binary"}},
            "audio/flac": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "206": {
        "description": "The requested byte range (HTTP Range, RFC 9110)",
        "headers": {"Content-Range": {"schema": {"type": "string"}}},
        "content": {
            "audio/wav": {"schema": {"type": "string", "format": "binary"}},
            "audio/flac": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}

_NO_CHANGES = {
    "summary": "Not allowed: recordings are kept until their retention expires",
    "responses": _errors(405),
}


def _paths() -> dict[str, Any]:
    list_users = {
        "summary": "List users (a user sees only themself)",
        "responses": {
            "200": _answer(
                "Users",
                {
                    "type": "object",
                    "properties": {"items": {"type": "array", "items": _ref("User")}},
                },
            ),
            **_errors(401),
        },
    }
    return {
        "/api/v1/users": {
            "get": list_users,
            "post": {
                "summary": "Add a user (admin)",
                _BODY: _body(_ref("NewUser")),
                "responses": {"201": _answer("Created", _ref("User")), **_errors(401, 403, 422)},
            },
        },
        "/api/v1/users/{extension}": {
            "parameters": [_EXT],
            "get": {
                "summary": "One user, with their devices",
                "responses": {"200": _answer("User", _ref("User")), **_errors(401, 404)},
            },
            "patch": {
                "summary": "Change the user's name or e-mail (admin)",
                _BODY: _body(
                    {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string", "minLength": 1, "maxLength": 200},
                            "email": {"type": "string", "nullable": True},
                        },
                    }
                ),
                "responses": {"200": _answer("User", _ref("User")), **_errors(401, 403, 404, 422)},
            },
            "delete": {
                "summary": "Remove the user and their devices; calls and recordings stay (admin)",
                "responses": {"204": _answer("Removed"), **_errors(401, 403, 404)},
            },
        },
        "/api/v1/users/{extension}/password": {
            "parameters": [_EXT],
            "put": {
                "summary": "Set or generate the user's SIP password (admin)",
                _BODY: _body(_ref("SipPassword")),
                "responses": {"200": _answer("User", _ref("User")), **_errors(401, 403, 404, 422)},
            },
        },
        "/api/v1/users/{extension}/mode": {
            "parameters": [_EXT],
            "put": {
                "summary": "Change the recording mode (admin)",
                _BODY: _body(
                    {
                        "type": "object",
                        "required": ["mode"],
                        "properties": {"mode": _MODE},
                    }
                ),
                "responses": {"200": _answer("User", _ref("User")), **_errors(401, 403, 404, 422)},
            },
        },
        "/api/v1/users/{extension}/recording": {
            "parameters": [_EXT],
            "delete": {
                "summary": "Remove from recording: mode never; recordings are kept (admin)",
                "responses": {"200": _answer("User", _ref("User")), **_errors(401, 403, 404)},
            },
        },
        "/api/v1/users/{extension}/portal-password": {
            "parameters": [_EXT],
            "put": {
                "summary": "Set the user's portal password (admin)",
                _BODY: _body(
                    {
                        "type": "object",
                        "required": ["password"],
                        "properties": {"password": {"type": "string", "minLength": 8}},
                    }
                ),
                "responses": {"204": _answer("Set"), **_errors(401, 403, 404, 422)},
            },
            "delete": {
                "summary": "Take the user's portal login away; their sessions end (admin)",
                "responses": {"204": _answer("Removed"), **_errors(401, 403, 404)},
            },
        },
        "/api/v1/users/{extension}/language": {
            "parameters": [_EXT],
            "put": {
                "summary": "Set the user's own portal language (admin, or the user)",
                _BODY: _body(
                    {
                        "type": "object",
                        "required": ["language"],
                        "properties": {
                            "language": {
                                "type": "string",
                                "enum": list(LANGUAGES),
                                "nullable": True,
                            }
                        },
                    }
                ),
                "responses": {"200": _answer("User", _ref("User")), **_errors(401, 404, 422)},
            },
        },
        "/api/v1/users/{extension}/devices": {
            "parameters": [_EXT],
            "get": {
                "summary": "The user's devices",
                "responses": {
                    "200": _answer(
                        "Devices",
                        {
                            "type": "object",
                            "properties": {"items": {"type": "array", "items": _ref("Device")}},
                        },
                    ),
                    **_errors(401, 404),
                },
            },
            "post": {
                "summary": "Add a device (admin)",
                _BODY: _body(
                    {
                        "type": "object",
                        "properties": {
                            "uri": {"type": "string", "description": "a sip: URI"},
                            "username": {
                                "type": "string",
                                "description": "or a username on the organisation's domain",
                            },
                            "kind": {"type": "string"},
                            "password": {"type": "string"},
                            "generate_password": _GENERATE,
                        },
                    }
                ),
                "responses": {
                    "201": _answer("Device", _ref("Device")),
                    **_errors(401, 403, 404, 422),
                },
            },
        },
        "/api/v1/users/{extension}/devices/{id}": {
            "parameters": [_EXT, _ID],
            "delete": {
                "summary": "Remove a device (admin)",
                "responses": {"204": _answer("Removed"), **_errors(401, 403, 404)},
            },
        },
        "/api/v1/users/{extension}/devices/{id}/password": {
            "parameters": [_EXT, _ID],
            "put": {
                "summary": "Set or generate a device's own password (admin)",
                _BODY: _body(_ref("SipPassword")),
                "responses": {
                    "200": _answer("Device", _ref("Device")),
                    **_errors(401, 403, 404, 422),
                },
            },
        },
        "/api/v1/settings": {
            "get": {
                "summary": "Recording settings in force",
                "responses": {"200": _answer("Settings", _ref("Settings")), **_errors(401)},
            },
            "put": {
                "summary": "Change settings (admin); retention affects new recordings only",
                _BODY: _body(_ref("Settings")),
                "responses": {
                    "200": _answer("Settings", _ref("Settings")),
                    **_errors(401, 403, 422),
                },
            },
            "patch": {
                "summary": "Same as PUT: only the given keys change",
                _BODY: _body(_ref("Settings")),
                "responses": {
                    "200": _answer("Settings", _ref("Settings")),
                    **_errors(401, 403, 422),
                },
            },
        },
        "/api/v1/calls": {
            "get": {
                "summary": "Call records, newest first",
                "parameters": [
                    *_CALL_FILTERS,
                    _query("recorded_only", {"type": "boolean"}, "Only calls with a recording"),
                ],
                "responses": {
                    "200": _answer("A page of calls", _page_of("Call")),
                    **_errors(401, 422),
                },
            },
        },
        "/api/v1/calls/{id}": {
            "parameters": [_ID],
            "get": {
                "summary": "One call",
                "responses": {"200": _answer("Call", _ref("Call")), **_errors(401, 404)},
            },
        },
        "/api/v1/recordings": {
            "get": {
                "summary": "Recording metadata, newest first",
                "parameters": _CALL_FILTERS,
                "responses": {
                    "200": _answer("A page of recordings", _page_of("Recording")),
                    **_errors(401, 422),
                },
            },
        },
        "/api/v1/recordings/{id}": {
            "parameters": [_ID],
            "get": {
                "summary": "Recording metadata",
                "responses": {"200": _answer("Recording", _ref("Recording")), **_errors(401, 404)},
            },
            "delete": _NO_CHANGES,
            "put": _NO_CHANGES,
            "patch": _NO_CHANGES,
        },
        "/api/v1/recordings/{id}/audio": {
            "parameters": [_ID],
            "get": {
                "summary": "The audio, with HTTP Range for seeking",
                "parameters": [
                    {
                        "name": "Range",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {**_AUDIO, **_errors(401, 404, 410, 416)},
            },
        },
        "/api/v1/recordings/{id}/download": {
            "parameters": [_ID],
            "get": {
                "summary": "The file as an attachment with a readable name",
                "responses": {**_AUDIO, **_errors(401, 404, 410)},
            },
        },
        "/api/v1/exports": {
            "get": {
                "summary": "Ordered month exports (admin)",
                "responses": {
                    "200": _answer(
                        "Exports",
                        {
                            "type": "object",
                            "properties": {"items": {"type": "array", "items": _ref("Export")}},
                        },
                    ),
                    **_errors(401, 403),
                },
            },
            "post": {
                "summary": "Order a month's ZIP (admin; needs retention >= "
                f"{BULK_DOWNLOAD_MIN_RETENTION_DAYS} days)",
                _BODY: _body(
                    {
                        "type": "object",
                        "required": ["month"],
                        "properties": {
                            "month": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"}
                        },
                    }
                ),
                "responses": {
                    "202": _answer("Ordered", _ref("Export")),
                    **_errors(401, 403, 409, 422),
                },
            },
        },
        "/api/v1/exports/{id}": {
            "parameters": [_ID],
            "get": {
                "summary": "Status of an export (admin)",
                "responses": {"200": _answer("Export", _ref("Export")), **_errors(401, 403, 404)},
            },
        },
        "/api/v1/tokens": {
            "get": {
                "summary": "API tokens (admin)",
                "responses": {"200": _answer("Tokens"), **_errors(401, 403)},
            },
            "post": {
                "summary": "Create an API token (admin); the token is shown once",
                _BODY: _body(
                    {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}},
                    }
                ),
                "responses": {
                    "201": _answer(
                        "Token",
                        {
                            "type": "object",
                            "properties": {
                                "id": {"type": "integer"},
                                "name": {"type": "string"},
                                "token": {"type": "string"},
                            },
                        },
                    ),
                    **_errors(401, 403, 422),
                },
            },
        },
        "/api/v1/tokens/{id}": {
            "parameters": [_ID],
            "delete": {
                "summary": "Revoke a token (admin)",
                "responses": {"204": _answer("Revoked"), **_errors(401, 403, 404)},
            },
        },
        "/api/v1/audit": {
            "get": {
                "summary": "The audit log, newest first (admin)",
                "parameters": _CALL_FILTERS[3:],
                "responses": {
                    "200": _answer("Entries", _page_of("AuditEntry")),
                    **_errors(401, 403, 422),
                },
            },
        },
        "/api/v1/me": {
            "get": {
                "summary": "Who you are, and the CSRF token of your session",
                "responses": {"200": _answer("Identity"), **_errors(401)},
            },
        },
        **_operator_paths(),
    }


_SLUG = _path("slug", {"type": "string"})
_ORG = {"type": "object", "additionalProperties": True}


def _operator_paths() -> dict[str, Any]:
    """The operator's routes: organisations, their numbers and admins, usage."""
    return {
        "/api/v1/orgs": {
            "get": {
                "summary": "Every organisation (operator)",
                "responses": {"200": _answer("Organisations"), **_errors(401, 403)},
            },
            "post": {
                "summary": "Add an organisation, optionally with its first admin"
                " (slug, name, domain, language, timezone, admin_name, admin_password,"
                " admin_email; operator)",
                _BODY: _body(_ORG),
                "responses": {"201": _answer("Created"), **_errors(401, 403, 409, 422)},
            },
        },
        "/api/v1/orgs/{slug}": {
            "parameters": [_SLUG],
            "get": {
                "summary": "One organisation (operator)",
                "responses": {"200": _answer("Organisation"), **_errors(401, 403, 404)},
            },
            "patch": {
                "summary": "Change name, SIP domain, language or time zone (operator)",
                _BODY: _body(_ORG),
                "responses": {"200": _answer("Changed"), **_errors(401, 403, 404, 409, 422)},
            },
            "delete": {
                "summary": "Remove the organisation with its users, devices, numbers,"
                " settings, calls and recordings, files included; confirm=<slug> is"
                " required; refused (409) while a call is in progress, and while a"
                " recording is under retention unless purge_recordings=true (operator)",
                "parameters": [
                    _query("confirm", {"type": "string"}, "the organisation's slug, again"),
                    _query(
                        "purge_recordings",
                        {"type": "boolean"},
                        "delete recordings still under retention too",
                    ),
                ],
                "responses": {
                    "200": _answer("What was removed"),
                    **_errors(401, 403, 404, 409, 422, 503),
                },
            },
        },
        "/api/v1/orgs/{slug}/admins": {
            "parameters": [_SLUG],
            "post": {
                "summary": "Add an admin of the organisation (name, password, email; operator)",
                _BODY: _body(_ORG),
                "responses": {"201": _answer("Created"), **_errors(401, 403, 404, 409, 422)},
            },
        },
        "/api/v1/orgs/{slug}/dids": {
            "parameters": [_SLUG],
            "get": {
                "summary": "The organisation's numbers from the trunk (operator)",
                "responses": {"200": _answer("Number ranges"), **_errors(401, 403, 404)},
            },
            "post": {
                "summary": "Give numbers first..last to the organisation, ringing extension"
                " (default: the number itself) (operator)",
                _BODY: _body(_ORG),
                "responses": {"201": _answer("Created"), **_errors(401, 403, 404, 409, 422)},
            },
        },
        "/api/v1/orgs/{slug}/dids/{id}": {
            "parameters": [_SLUG, _ID],
            "delete": {
                "summary": "Take a number range away (operator)",
                "responses": {"204": _answer("Removed"), **_errors(401, 403, 404)},
            },
        },
        "/api/v1/usage": {
            "get": {
                "summary": "Every organisation's usage in a month, for billing (operator);"
                " format=csv for CSV",
                "parameters": [
                    _query("month", {"type": "string"}, "YYYY-MM (default: this month)"),
                    _query("format", {"type": "string", "enum": ["json", "csv"]}, "json or csv"),
                ],
                "responses": {"200": _answer("Usage"), **_errors(401, 403, 422)},
            },
        },
    }


def openapi_schema() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "callrec API",
            "version": "1",
            "description": (
                "Users, recording settings, call reports, recordings and exports of callrec."
                " Authenticate with the portal session cookie (send X-CSRF-Token on writes)"
                " or an API token as `Authorization: Bearer <token>`."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": _paths(),
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "callrec_session"},
            },
        },
    }
