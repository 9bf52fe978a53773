"""Languages and rendering: gettext catalogues (read with Babel) turn a stored notification
into the title and body a reader sees in their language."""
from __future__ import annotations

import functools
import gettext
import io
import logging
import pathlib
import string
from typing import Any

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from .models import Notification, iso

logger = logging.getLogger(__name__)

LOCALES_DIR = pathlib.Path(__file__).with_name("locales")
DOMAIN = "notihub"
# The notification types the contract names; each has a title and a body in every catalogue.
KNOWN_TYPES = (
    "post.created",
    "comment.created",
    "comment.replied",
    "post.liked",
    "user.followed",
    "moderation.penalized",
    "course.progressed",
)

# Types whose title names how many others did the same (data.others), with plural forms.
COUNTED_TYPES = ("post.liked", "comment.created")


def supported_languages() -> tuple[str, ...]:
    """Languages that have a catalogue."""
    return tuple(sorted(p.name for p in LOCALES_DIR.iterdir() if (p / "LC_MESSAGES" / f"{DOMAIN}.po").is_file()))


@functools.cache
def translations(lang: str) -> gettext.GNUTranslations:
    """The compiled catalogue of one language (compiled in memory from its .po file)."""
    with open(LOCALES_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po", "rb") as fh:
        catalog = read_po(fh, locale=lang, domain=DOMAIN)
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return gettext.GNUTranslations(buf)


def normalize_language(value: object, default: str) -> str:
    """Map a language code such as ``ko-KR`` or ``en_US`` to a supported one, else ``default``."""
    if isinstance(value, str) and 0 < len(value) <= 35:
        primary = value.strip().replace("_", "-").split("-", 1)[0].lower()
        if primary in supported_languages():
            return primary
    return default


def negotiate(accept_language: str | None, default: str) -> str:
    """Pick the best supported language from an Accept-Language header."""
    if not accept_language:
        return default
    choices: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept_language.split(",")[:20]):
        code, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        lang = normalize_language(code, "")
        if lang and quality > 0:
            choices.append((-quality, index, lang))
    return min(choices)[2] if choices else default


class _Missing(Exception):
    pass


class _StrictFormatter(string.Formatter):
    """Formats ``{name}`` placeholders only from the given params; no attribute or index access."""

    def get_field(self, field_name: str, args: Any, kwargs: dict[str, Any]) -> tuple[Any, str]:
        if field_name not in kwargs or kwargs[field_name] in (None, ""):
            raise _Missing(field_name)
        return kwargs[field_name], field_name

    def format_field(self, value: Any, format_spec: str) -> str:
        return str(value)


_formatter = _StrictFormatter()


def template_params(values: dict[str, Any] | None) -> dict[str, Any]:
    """What catalogue templates may use of ``values``: its top-level text and numbers (no
    booleans, no missing values, no nested data). The HTTP API and the ingest rules both fill
    a notification's ``params`` with it."""
    return {k: v for k, v in (values or {}).items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)}


def _fill(template: str, params: dict[str, Any]) -> str | None:
    if not template:
        return None
    try:
        return _formatter.format(template, **params) or None
    except (_Missing, ValueError, IndexError):
        return None


def _override(value: str | dict[str, str] | None, lang: str, default: str) -> str | None:
    if isinstance(value, dict):
        return value.get(lang) or value.get(default) or next(iter(value.values()), None)
    return value


def _text(tr: gettext.GNUTranslations, key: str) -> str:
    """A catalogue text, or "" when the catalogue leaves it empty (gettext would return the key)."""
    value = tr.gettext(key)
    return "" if value == key else value


def _plural(tr: gettext.GNUTranslations, key: str, n: int) -> str:
    value = tr.ngettext(key, key, n)
    return "" if value == key else value


class Renderer:
    """Renders notifications in a language; the one place that knows the catalogues."""

    def __init__(self, *, default_lang: str) -> None:
        # Normalised like any requested language ("ko-KR" is "ko"); one without a catalogue is "en".
        self.default_lang = normalize_language(default_lang, "en")
        if normalize_language(default_lang, "") != self.default_lang:
            logger.warning("NOTIHUB_DEFAULT_LANG=%r has no catalogue; using en", default_lang)
        self.languages = supported_languages()

    def language(self, value: object) -> str:
        """Normalise a language code, falling back to the default language."""
        return normalize_language(value, self.default_lang)

    def texts(self, notification: Notification, lang: str) -> tuple[str, str | None]:
        """The title and body of a notification in ``lang``."""
        tr = translations(lang)
        params = dict(notification.params)
        actor = notification.actor
        params["actor"] = (actor.name or actor.id) if actor else _text(tr, "actor.someone")
        kind = notification.type if notification.type in KNOWN_TYPES else "generic"
        title = _override(notification.title, lang, self.default_lang)
        others = params.get("others")
        if title is None and kind in COUNTED_TYPES and isinstance(others, int) and not isinstance(others, bool) and others > 0:
            # "Kim and 3 other people liked your post", with the language's plural rules.
            title = _fill(_plural(tr, f"{kind}.title_others", others), params)
        if title is None:
            title = _fill(_text(tr, f"{kind}.title"), params) or _text(tr, "generic.title")
        body = _override(notification.body, lang, self.default_lang)
        if body is None:
            body = _fill(_text(tr, f"{kind}.body"), params)
        return title, body

    def render(
        self, notification: Notification, lang: str, *, texts: tuple[str, str | None] | None = None
    ) -> dict[str, Any]:
        """The contract's Notification JSON in ``lang`` (``texts`` when already rendered)."""
        title, body = texts or self.texts(notification, lang)
        return {
            "id": str(notification.id),
            "type": notification.type,
            "recipient": notification.recipient,
            "actor": notification.actor.to_dict() if notification.actor else None,
            "title": title,
            "body": body,
            "url": notification.url,
            "data": notification.data,
            "read": notification.read,
            "created_at": iso(notification.created_at),
        }

    def unread_label(self, count: int, lang: str) -> str:
        """``3 unread notifications`` with the language's plural rules."""
        return _plural(translations(lang), "notifications.unread", count).format(count=count)
