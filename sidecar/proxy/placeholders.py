"""Placeholders: a literal the SDK sends in a JSON or form body or in the query, replaced here by
a credential field, so an SDK that puts its secret in the payload still never holds it.

Pure functions over bytes and strings (no network, no Vault), so every rule is unit-tested.
The rules, and why (docs/placeholders.md says the same for operators):

- Only a *whole* value is replaced: a JSON string value, a form value or a query value that,
  decoded once by its content type's rules, equals a configured literal. A literal inside a
  longer value is refused, because the app would choose the text around the secret (and a
  provider that echoes a description field would hand it back).
- Every other value whose decoded text matches the upstream's ``placeholder_pattern``, also
  after further percent-, JSON- or HTML-unescaping or NFKC folding (``%257B%257B``,
  ``\\u007b\\u007b``, ``&#123;``, fullwidth braces), is refused (SC4050): fail closed, never
  guess. JSON keys and form/query names are never replaced (SC4054).
- JSON is rewritten in place: each string token is located with one regex over text already
  proven valid by ``json.loads`` (outside strings, valid JSON has no ``"`` or ``\\``), and only a
  replaced token changes, to ``json.dumps(secret)``; every other byte is kept, key order too.
  Form and query values are replaced by ``quote(secret, safe="")``; the rest is kept.
- A compressed body, or one not in UTF-8 that holds the shape, is refused (SC4053); a body of
  another content type that holds the shape is refused (SC4051).

Error messages name the configured literal at most, never the value and never the app's text.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from email.message import Message
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, unquote_plus

from multidict import CIMultiDict
from yarl import URL

from sidecar.errors import SidecarError
from sidecar.schemes.base import Credential

if TYPE_CHECKING:
    from sidecar.config import UpstreamConfig

# A JSON string token; exact on text json.loads accepted (the unrolled form is linear).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_KEY_AFTER = re.compile(r"[ \t\n\r]*:")
_JSON_ESCAPE = re.compile(r'\\u([0-9a-fA-F]{4})|\\(["\\/bfnrt])')
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_UTF8 = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
_IDENTITY = frozenset({"", "identity"})
_FORM = "application/x-www-form-urlencoded"
_DECODABLE = re.compile(r"[%+\\&]")  # what a decoding below could change in ASCII text
_ROUNDS = 3  # decodings chained when looking for the shape (%25257B needs three)


def _unescape_json(text: str) -> str:
    return _JSON_ESCAPE.sub(lambda m: chr(int(m[1], 16)) if m[1] else _ESCAPES[m[2]], text)


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


# (worth trying on this text?, decoding): each is tried only where it could change something.
_DECODINGS: tuple[tuple[Callable[[str], bool], Callable[[str], str]], ...] = (
    (lambda t: "%" in t, unquote),
    (lambda t: "%" in t or "+" in t, unquote_plus),
    (lambda t: "\\" in t, _unescape_json),
    (lambda t: "&" in t, html.unescape),
    (lambda t: not t.isascii(), _nfkc),
)


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@dataclass(frozen=True, slots=True)
class Rules:
    """One upstream's placeholders for one request: literal -> field, the shape, the credential."""

    literals: Mapping[str, str]
    shape: re.Pattern[str]
    cred: Credential

    @classmethod
    def of(cls, literals: Mapping[str, str], pattern: str, cred: Credential) -> Rules:
        return cls(literals, _compiled(pattern), cred)

    def value(self, literal: str) -> str:
        """The field's value; SC4052 (naming the literal and field, never a value) if absent."""
        field = self.literals[literal]
        try:
            return self.cred.value(field)
        except KeyError:
            raise SidecarError(
                "SC4052", f"Placeholder {literal!r}: the credential has no field {field!r}"
            ) from None

    def shaped(self, text: str) -> bool:
        """The text, or any chain of up to three decodings of it, holds the placeholder shape."""
        if text.isascii() and not _DECODABLE.search(text):  # the usual string: one search
            return self.shape.search(text) is not None
        return any(self.shape.search(view) for view in views(text))


def views(text: str) -> Iterator[str]:
    """``text`` and every distinct text that up to ``_ROUNDS`` chained decodings make of it."""
    seen = {text}
    frontier = [text]
    yield text
    for _ in range(_ROUNDS):
        found: list[str] = []
        for item in frontier:
            for worth, decode in _DECODINGS:
                view = decode(item) if worth(item) else item
                if view not in seen:
                    seen.add(view)
                    found.append(view)
                    yield view
        frontier = found


def apply(
    cfg: UpstreamConfig,
    cred: Credential,
    url: URL,
    headers: CIMultiDict[str],
    body: bytes | None,
) -> tuple[URL, bytes | None]:
    """The URL and body with every placeholder replaced, or SC4050-SC4054 (nothing is sent)."""
    if not cfg.placeholders:
        return url, body
    rules = Rules.of(cfg.placeholders, cfg.placeholder_pattern, cred)
    if rules.shaped(url.raw_path):
        raise SidecarError("SC4050", "The path holds a placeholder-shaped value (never replaced)")
    query = url.raw_query_string
    if query and rules.shaped(query):
        query = substitute_pairs(rules, query, "query")
        url = URL(f"{str(url).partition('?')[0]}?{query}", encoded=True)
    if body:
        body = substitute_body(rules, headers, body)
    return url, body


def substitute_body(rules: Rules, headers: CIMultiDict[str], body: bytes) -> bytes:
    """The body with its placeholders replaced; unchanged (same object) if it holds none."""
    codings = {
        c.strip().lower() for v in headers.getall("Content-Encoding", ()) for c in v.split(",")
    }
    if codings - _IDENTITY:
        raise SidecarError("SC4053", "A compressed body cannot be checked for placeholders")
    kind, charset = media_type(headers.getall("Content-Type", ()))
    text = _utf8(body) if charset is None or charset in _UTF8 else None
    if text is None:  # Latin-1 reads any bytes; without NULs, UTF-16/32 ASCII shows too
        latin = body.decode("latin-1")
        if rules.shaped(latin) or rules.shaped(latin.replace("\x00", "")):
            raise SidecarError("SC4053", "A body not in UTF-8 holds a placeholder-shaped value")
        return body
    if not rules.shaped(text):
        return body
    if kind == "json":
        return substitute_json(rules, text).encode()
    if kind == "form":
        return substitute_pairs(rules, text, "form body").encode()
    raise SidecarError(
        "SC4051", "Placeholders are replaced only in JSON and form bodies; this one holds one"
    )


def _utf8(body: bytes) -> str | None:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def media_type(values: tuple[str, ...] | list[str]) -> tuple[str, str | None]:
    """("json" | "form" | "other", charset or None) of the Content-Type header(s).

    Two Content-Type headers are "other": the provider might read either one.
    """
    if len(values) != 1:
        return "other", None
    msg = Message()
    msg["Content-Type"] = values[0]
    essence = msg.get_content_type()
    charset = msg.get_content_charset()
    if essence == "application/json" or (
        essence.startswith("application/") and essence.endswith("+json")
    ):
        return "json", charset
    return ("form" if essence == _FORM else "other"), charset


def substitute_json(rules: Rules, text: str) -> str:
    """Replace whole string values equal to a literal; refuse any other shaped string or key."""
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        raise SidecarError(
            "SC4051", "The body is not valid JSON and holds a placeholder-shaped value"
        ) from None
    out: list[str] = []
    last = 0
    for match in _STRING.finditer(text):
        token = match.group()
        decoded = json.loads(token) if "\\" in token else token[1:-1]
        if not rules.shaped(decoded):
            continue
        if _KEY_AFTER.match(text, match.end()):
            raise SidecarError("SC4054", "A JSON object key is placeholder-shaped (never replaced)")
        if decoded not in rules.literals:
            raise SidecarError("SC4050", _not_whole("the JSON body"))
        out += (text[last : match.start()], json.dumps(rules.value(decoded)))
        last = match.end()
    out.append(text[last:])
    return "".join(out)


def substitute_pairs(rules: Rules, text: str, where: str) -> str:
    """Replace whole ``&``-separated values equal to a literal; refuse other shaped names/values."""
    parts = text.split("&")
    for i, part in enumerate(parts):
        name, _, value = part.partition("=")
        if rules.shaped(_form_decode(name)):
            raise SidecarError("SC4054", f"A name in the {where} is placeholder-shaped")
        decoded = _form_decode(value)
        if decoded in rules.literals:
            parts[i] = f"{name}={_quoted(rules, decoded)}"
        elif rules.shaped(decoded):
            raise SidecarError("SC4050", _not_whole(f"the {where}"))
    return "&".join(parts)


def _form_decode(raw: str) -> str:
    """A name or value as a form parser reads it (``+`` is a space); Latin-1 if not UTF-8."""
    try:
        return unquote_plus(raw, errors="strict")
    except UnicodeDecodeError:
        return unquote_plus(raw, encoding="latin-1")


def _quoted(rules: Rules, literal: str) -> str:
    try:
        return quote(rules.value(literal), safe="")
    except UnicodeEncodeError:
        raise SidecarError(
            "SC4052", f"Placeholder {literal!r}: the field's value is not encodable as UTF-8"
        ) from None


def _not_whole(where: str) -> str:
    return (
        f"A placeholder-shaped value in {where} is not a configured placeholder "
        "(unknown, encoded, or part of a longer value)"
    )


def on(cfg: UpstreamConfig) -> bool:
    """The upstream has placeholders, so a request body is read whole (up to ``max_body``)."""
    return bool(cfg.placeholders)
