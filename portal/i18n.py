"""The portal's language and time zone for each request, and its message catalogues.

The catalogues are `portal/locale/<language>/LC_MESSAGES/messages.po` (extracted from
the templates and the Python code with babel.cfg, see `scripts/catalogues.sh`), compiled
to the `messages.mo` beside each; tests/portal/test_catalogues.py fails when a .mo is
older than its .po or a marked message has no translation.

Which language a page speaks is decided in one place, `presentation_for(request)`:
- a logged-in user: their own language if they chose one, else the language in force;
- an admin (or an API token): the language in force;
- an operator, who belongs to no organisation: their own language if they chose one
  (on the Organisations page), else the browser's `Accept-Language` if it names a
  language callrec speaks, else the server's (the config's `[portal] language`);
- nobody logged in yet (the login page, a mailed link): the browser's `Accept-Language`
  if it names a language callrec speaks, else the language in force.
"The language in force" and the time zone are the asker's organisation's (its stored
settings over the config's, `load_settings`), read through `Presentations.for_settings`;
before login the only organisation's if there is one, else (and for an operator) the
config's. The API answers in English
(its messages are for programs and the people who write them), but its date filters use
the same time zone.
"""

from __future__ import annotations

from typing import Any

import jinja2
from aiohttp import web
from markupsafe import Markup

from callrec.services.presentation import Presentation, negotiate_language
from portal.context import IDENTITY, context_of
from portal.recording_settings import load_settings
from portal.services import CATALOGUES

__all__ = [
    "CATALOGUES",
    "PRESENTATION",
    "fallback_presentation",
    "install_gettext",
    "presentation_for",
    "template_gettext",
]

PRESENTATION: web.RequestKey[Presentation] = web.RequestKey("callrec_presentation", Presentation)


async def presentation_for(request: web.Request) -> Presentation:
    """The language and time zone of this request (see the module docstring); read
    once per request."""
    if PRESENTATION in request:
        return request[PRESENTATION]
    context = context_of(request)
    identity = request.get(IDENTITY)
    org = identity.org if identity is not None else None
    if identity is None:
        # Before login: the organisation's if the platform has only one.
        orgs = await context.store.list_organisations()
        org = orgs[0].scope if len(orgs) == 1 else None
    settings = (
        await load_settings(context.store, context.services, org)
        if org is not None
        else context.services.defaults
    )
    language: str | None = None
    if identity is not None and identity.is_operator and identity.via == "session":
        operator = await context.store.get_admin(identity.name)
        language = operator.language if operator is not None and operator.is_operator else None
    if identity is None or (identity.is_operator and language is None):
        language = negotiate_language(request.headers.get("Accept-Language"))
    elif org is not None and identity.extension is not None and not identity.is_admin:
        user = await context.store.get_user(org, identity.extension)
        language = user.language if user is not None else None
    presentation = context.services.presentations.for_settings(settings, language)
    request[PRESENTATION] = presentation
    return presentation


def fallback_presentation(request: web.Request) -> Presentation:
    """What an error page speaks when the settings could not be read: the browser's
    language in the config's time zone."""
    context = context_of(request)
    defaults = context.services.defaults
    language = negotiate_language(request.headers.get("Accept-Language")) or defaults.language
    return context.services.presentations.get(language, defaults.timezone)


# -- templates -----------------------------------------------------------------------------


def install_gettext(environment: jinja2.Environment) -> None:
    """Enable `{% trans %}` and `_()` in `environment`; each render hands in its reader's
    `gettext` and `ngettext` (see `template_gettext`), which take precedence over these
    English defaults."""
    environment.add_extension("jinja2.ext.i18n")
    environment.install_null_translations(newstyle=True)  # type: ignore[attr-defined]


def template_gettext(presentation: Presentation) -> dict[str, Any]:
    """The render variables that make a template speak `presentation`'s language, with
    the newstyle semantics of jinja2.ext.i18n: `%(name)s` fields filled from keyword
    arguments, and the translation escaped like any other value in an HTML template."""

    @jinja2.pass_eval_context
    def gettext(eval_context: jinja2.nodes.EvalContext, message: str, /, **values: Any) -> str:
        text = presentation.gettext(message)
        if eval_context.autoescape:
            text = Markup(text)
        # Always formatted, as jinja2's own newstyle gettext does: "%%" is a percent sign.
        return text % values

    @jinja2.pass_eval_context
    def ngettext(
        eval_context: jinja2.nodes.EvalContext,
        singular: str,
        plural: str,
        number: int,
        /,
        **values: Any,
    ) -> str:
        # Positional-only: a {% trans count=... %} block also passes `count` by name.
        values.setdefault("num", number)
        text = presentation.ngettext(singular, plural, number)
        if eval_context.autoescape:
            text = Markup(text)
        return text % values

    return {"gettext": gettext, "ngettext": ngettext, "_": gettext, "presentation": presentation}
