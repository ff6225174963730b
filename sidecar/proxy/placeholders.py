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

import asyncio
import html
import json
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from email.message import Message
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import quote

from multidict import CIMultiDict
from yarl import URL

from sidecar.errors import SidecarError
from sidecar.proxy import scrub
from sidecar.schemes.base import Credential

if TYPE_CHECKING:
    from sidecar.config import UpstreamConfig

# A JSON string token; exact on text json.loads accepted (the unrolled form is linear).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_JSON_ESCAPE = re.compile(r'\\u([0-9a-fA-F]{4})|\\(["\\/bfnrt])')
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_PERCENT_RUN = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_ENTITY = re.compile(r"&(?:#|[A-Za-z][A-Za-z0-9]*;)")
_UTF8 = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
_IDENTITY = frozenset({"", "identity"})
_FORM = "application/x-www-form-urlencoded"
_DECODABLE = re.compile(r"[%+\\&]")  # what a decoding below could change in ASCII text
_INLINE = 64 * 1024  # bodies up to this size are rewritten on the event loop
_ROUNDS = 3  # decoding rounds when looking for the shape (%25257B needs three)
GROWTH = 2  # a rewritten body or query may be at most this many times max_body (else SC4048)
_SEPARATOR = "\x00"  # joins values checked together; \s and the default shape match no NUL


def _unquote(text: str) -> str:
    """Percent-decoding, one regex pass (runs decoded as UTF-8, bad bytes replaced)."""
    if "%" not in text:
        return text
    return _PERCENT_RUN.sub(
        lambda m: bytes.fromhex(m[0].replace("%", "")).decode("utf-8", "replace"), text
    )


def _unquote_plus(text: str) -> str:
    return _unquote(text.replace("+", " "))


def _unescape_json(text: str) -> str:
    if "\\" not in text:
        return text
    return _JSON_ESCAPE.sub(lambda m: chr(int(m[1], 16)) if m[1] else _ESCAPES[m[2]], text)


def _unescape_html(text: str) -> str:
    return html.unescape(text) if _ENTITY.search(text) else text


def _nfkc(text: str) -> str:
    return text if text.isascii() else unicodedata.normalize("NFKC", text)


def _round(text: str, percent: Callable[[str], str]) -> str:
    """One round of every decoding, in an order where each can expose the next one's input."""
    return _nfkc(_unescape_html(_unescape_json(percent(text))))


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@dataclass(frozen=True, slots=True)
class Rules:
    """One upstream's placeholders for one request: literal -> field, the shape, the credential."""

    literals: Mapping[str, str]
    shape: re.Pattern[str]
    cred: Credential
    limit: int | None = None  # the most a rewritten body or query may grow to, bytes
    scrubbed: bool = False  # answers are scanned: a value too short to be a needle is refused

    @classmethod
    def of(
        cls,
        literals: Mapping[str, str],
        pattern: str,
        cred: Credential,
        limit: int | None = None,
        scrubbed: bool = False,
    ) -> Rules:
        return cls(literals, _compiled(pattern), cred, limit, scrubbed)

    def value(self, literal: str) -> str:
        """The field's value; SC4052 (naming the literal and field, never a value) if absent."""
        field = self.literals[literal]
        try:
            value = self.cred.value(field)
        except KeyError:
            raise SidecarError(
                "SC4052", f"Placeholder {literal!r}: the credential has no field {field!r}"
            ) from None
        if self.scrubbed and not scrub.scanned(value):  # the app picks where it goes: an echo
            raise SidecarError(  # of it could not be masked, so it is never substituted
                "SC4032", f"Placeholder {literal!r}: field {field!r} is too short to be masked"
            )
        return value

    def grow(self, size: int, old: str, new: str) -> int:
        """``size`` after ``old`` becomes ``new``; SC4048 once past ``limit``, before the
        rewritten text is built: a long secret in many tiny placeholders would otherwise turn
        a body within ``max_body`` into hundreds of times that in memory and upstream. The
        limit is ``GROWTH`` times ``max_body``, so a body of exactly ``max_body`` still grows
        by its secrets' real length."""
        size += len(new) - len(old)
        self.bound(size)
        return size

    def bound(self, size: int) -> None:
        if self.limit is not None and size > self.limit:
            raise SidecarError("SC4048", f"Over {self.limit} bytes once substituted")

    def shaped(self, text: str) -> bool:
        """The text, or any chain of up to three decodings of it, holds the placeholder shape."""
        if text.isascii() and not _DECODABLE.search(text):  # the usual string: one search
            return self.shape.search(text) is not None
        return any(self.shape.search(view) for view in views(text))


def views(text: str) -> Iterator[str]:
    """``text``, then up to ``_ROUNDS`` rounds of decoding it (again with ``+`` as a space).

    Chains, not every combination: each round applies every decoding, so the work stays a small
    multiple of the text's length whatever an attacker nests.
    """
    yield text
    chains = (_unquote, _unquote_plus) if "+" in text else (_unquote,)
    for percent in chains:
        view = text
        for _ in range(_ROUNDS):
            decoded = _round(view, percent)
            if decoded == view:
                break
            view = decoded
            yield view


async def rewrite(
    cfg: UpstreamConfig,
    cred: Credential,
    url: URL,
    headers: CIMultiDict[str],
    body: bytes | None,
) -> tuple[URL, bytes | None]:
    """:func:`apply`, in a worker thread for a body over 64 KiB.

    The checks are linear, but a crafted 1 MiB body of tiny escaped values costs a good part of
    a second of CPU; off the event loop, the app's other requests keep moving meanwhile.
    """
    if not cfg.placeholders or body is None or len(body) <= _INLINE:
        return apply(cfg, cred, url, headers, body)
    return await asyncio.to_thread(apply, cfg, cred, url, headers, body)


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
    limit = GROWTH * cfg.max_body
    rules = Rules.of(cfg.placeholders, cfg.placeholder_pattern, cred, limit, cfg.scrub_answers)
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
        return _bounded(rules, substitute_json(rules, text).encode())
    if kind == "form":
        return _bounded(rules, substitute_pairs(rules, text, "form body").encode())
    raise SidecarError(
        "SC4051", "Placeholders are replaced only in JSON and form bodies; this one holds one"
    )


def _bounded(rules: Rules, body: bytes) -> bytes:
    """The exact check in bytes (:meth:`Rules.grow` counts characters as it goes)."""
    rules.bound(len(body))
    return body


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


class _Object(list[tuple[str, object]]):
    """A JSON object as its (key, value) pairs in document order, duplicates kept."""


def _strings(doc: object) -> list[tuple[str, bool]]:
    """Every string of a parsed document in text order, and whether it is an object key.

    Iterative (no recursion limit); a 1-tuple on the stack marks a key.
    """
    found: list[tuple[str, bool]] = []
    stack: list[object] = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.append((item, False))
        elif isinstance(item, tuple):
            found.append((item[0], True))
        elif isinstance(item, _Object):
            for key, value in reversed(item):
                stack += (value, (key,))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return found


def substitute_json(rules: Rules, text: str) -> str:
    """Replace whole string values equal to a literal; refuse any other shaped string or key."""
    try:
        doc = json.loads(text, object_pairs_hook=_Object, parse_int=len, parse_float=len)
        strings = _strings(doc)  # numbers are not needed: len() spares the int digit limit
    except (ValueError, RecursionError):
        raise SidecarError(
            "SC4051", "The body is not valid JSON and holds a placeholder-shaped value"
        ) from None
    tokens = list(_STRING.finditer(text))
    if len(tokens) != len(strings):  # cannot happen for valid JSON; refuse rather than guess
        raise SidecarError("SC4051", "The JSON body could not be rewritten safely")
    _check(rules, strings, "the JSON body", "A JSON object key is placeholder-shaped")
    out: list[str] = []
    last, size = 0, len(text)
    rendered: dict[str, str] = {}
    for i in [i for i, (decoded, _) in enumerate(strings) if decoded in rules.literals]:
        match, literal = tokens[i], strings[i][0]
        if literal not in rendered:
            rendered[literal] = json.dumps(rules.value(literal))
        size = rules.grow(size, match[0], rendered[literal])
        out += (text[last : match.start()], rendered[literal])
        last = match.end()
    out.append(text[last:])
    return "".join(out)


def _check(rules: Rules, items: list[tuple[str, bool]], where: str, name_error: str) -> None:
    """Refuse a literal in name position, and any other shaped value (SC4054, SC4050).

    The values that are not literals are checked as one joined text; only if that holds the
    shape (a refusal, or a match across two values) is each looked at alone.
    """
    if any(is_name and text in rules.literals for text, is_name in items):
        raise SidecarError("SC4054", f"{name_error} (never replaced)")
    rest = [(text, is_name) for text, is_name in items if text not in rules.literals]
    if not rules.shaped(_SEPARATOR.join(text for text, _ in rest)):
        return
    for text, is_name in rest:
        if is_name and rules.shaped(text):
            raise SidecarError("SC4054", f"{name_error} (never replaced)")
        if rules.shaped(text):
            raise SidecarError("SC4050", _not_whole(where))


def substitute_pairs(rules: Rules, text: str, where: str) -> str:
    """Replace whole ``&``-separated values equal to a literal; refuse other shaped names/values."""
    parts = [part.partition("=") for part in text.split("&")]
    names = [(_form_decode(name), True) for name, _, _ in parts]
    values = [(_form_decode(value), False) for _, _, value in parts]
    _check(rules, names + values, f"the {where}", f"A name in the {where} is placeholder-shaped")
    out: list[str] = []
    size = len(text)
    rendered: dict[str, str] = {}
    for (name, sep, value), (decoded, _) in zip(parts, values, strict=True):
        if decoded not in rules.literals:
            out.append(name + sep + value)
            continue
        if decoded not in rendered:
            rendered[decoded] = _quoted(rules, decoded)
        size = rules.grow(size, sep + value, "=" + rendered[decoded])
        out.append(f"{name}={rendered[decoded]}")
    return "&".join(out)


def _form_decode(raw: str) -> str:
    """A name or value as a form parser reads it: ``+`` is a space, then percent-decoding."""
    if "%" not in raw and "+" not in raw:
        return raw
    return _unquote_plus(raw)


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
