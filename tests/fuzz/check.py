"""Compare one case's run through the engine with what h11 says a correct proxy does.

Each finding is a :class:`Disagreement` of a named kind; the kinds are what the tests in
test_differential.py assert on (each kind maps to one rule of issue 12's framing property).
Where llhttp and h11 legitimately differ, :data:`RULES` names the rule applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tests.fuzz import reference
from tests.fuzz.gen import UPSTREAM, Case
from tests.fuzz.harness import Forwarded, Run

# Where llhttp (the sidecar) and h11 (the reference) read the same bytes differently and both
# are allowed to: the rule the test applies. "Stricter wins": a refusal by either parser is the
# expected outcome, so a sidecar refusal h11 would not make is accepted only when a rule here
# names it; a sidecar acceptance h11 would refuse is always a disagreement.
RULES: dict[str, str] = {
    "R1": "HTTP/1.0 with Connection: keep-alive stays open (RFC 9112 Appendix C.2.2, llhttp); "
    "h11 always closes 1.0, so the reference restarts h11 on the bytes after such a request.",
    "R2": "An empty reason phrase may be replaced by the standard one (RFC 9112 §4: "
    "reason-phrase is optional and a client SHOULD ignore it); compared only when non-empty.",
    "R3": "Trailer fields of a chunked message are dropped, not forwarded "
    "(RFC 9110 §6.5.1: a recipient may discard them); h11 reports them, the test ignores them.",
    "R4": "A chunk line must match chunk-size [chunk-ext] CRLF (RFC 9112 §7.1, §7.1.1): llhttp "
    "refuses a space after the size or a control byte in an extension; h11 skips extensions "
    "unread. Stricter wins: refused.",
    "R5": "obs-fold (a header line starting with SP or HTAB): RFC 9112 §5.2 lets a server answer "
    "400 and a proxy answer 502 instead of unfolding; llhttp refuses, h11 unfolds. Refused.",
    "R6": "Control bytes (0x01-0x08, 0x0E-0x1F, 0x7F) in a field value: not field-vchar "
    "(RFC 9110 §5.5); llhttp refuses, h11 accepts. Refused.",
    "R7": "A bare LF (or CR) as a line end in a head or chunk line: RFC 9112 §2.2 says a "
    "recipient MAY accept a bare LF; h11 does, llhttp refuses in some places. Refused is "
    "allowed; accepted must still be read the same as h11 reads it.",
    "R8": "Content-Length and Transfer-Encoding in one request: RFC 9112 §6.1 lets a server "
    "reject it (llhttp does; h11 lets chunked win). Refused.",
    "R9": "Several Content-Length fields with the same value: RFC 9112 §6.3 item 5 allows "
    "rejecting or accepting; llhttp rejects, h11 accepts. Refused.",
    "R10": "An HTTP/1.0 app gets a close-delimited answer: a cut is indistinguishable from "
    "the end (RFC 9112 §8), so a body that is a prefix of the provider's is accepted as cut.",
    "R11": "A method llhttp does not know (or in lower case): RFC 9110 §9.1 lets a server "
    "refuse an unrecognised method (501); h11 accepts any token. Refused.",
    "R12": "An HTTP version other than 1.0 or 1.1 (e.g. HTTP/1.2, HTTP/9.1): RFC 9110 §15.6.6 "
    "(505) and RFC 9112 §2.3; h11 accepts any digit.digit, llhttp refuses. Refused.",
    "R13": "A Content-Length beyond 2^64-1: invalid (RFC 9112 §6.3 item 5); llhttp refuses the "
    "message even on a 1xx, where h11 ignores the field. Refused.",
    "R14": "A 1xx answer with Content-Length or Transfer-Encoding (a server MUST NOT send "
    "them: RFC 9110 §8.6, RFC 9112 §6.1): a provider error, 502 (issue 12 item 1); h11 "
    "ignores the fields. Refused.",
    "R15": "A request target that is not origin-form, absolute-form or '*', or has bytes outside "
    "RFC 3986 (e.g. 'peer/x', '{', '|', '<'): RFC 9112 §3.2; llhttp refuses some, h11 accepts "
    "any visible bytes. Refused.",
    "R16": "An empty line (CRLF, or a bare LF: R7) where a request line is expected is ignored "
    "(RFC 9112 §2.2, SHOULD; llhttp does); h11 reports 'no request line received', so the "
    "reference reads the bytes without that final line end.",
    "R17": "Bytes no continuation can make valid are refused when they arrive: a chunk-size "
    "line not starting 1*HEXDIG then ';', BWS or CR (RFC 9112 §7.1, §7.1.1) or beyond 2^64-1 "
    "(§7.1: a recipient MUST prevent integer overflow), or bytes after the last message that "
    "begin no method llhttp knows (R11, applied before the line ends). h11 waits for more bytes "
    "(or reads the huge size); llhttp refuses at once. Refused.",
    "R18": "A Host value that names no host the listener serves (the generator sends "
    "'localhost'; a mutation can change it): the host guard answers 421 SC1015 (RFC 9110 "
    "§15.5.20, issue 13's DNS-rebinding defence), and an invalid Host is a 400 (RFC 9112 §3.2); "
    "h11 accepts any value. Over sockets only (the in-memory recorder does not route). Refused.",
    "R19": "The sidecar's own refusal of a HEAD request that reached the pipeline has no body "
    "(RFC 9110 §9.3.2), so the app reads that refusal as an answer to HEAD; a refusal of input "
    "that never became a request is read as an answer to GET.",
}

# llhttp's method table (llhttp/src/llhttp/constants.ts, HTTP and RTSP methods it accepts).
KNOWN_METHODS = frozenset(
    b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND PROPPATCH "
    b"SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE M-SEARCH NOTIFY "
    b"SUBSCRIBE UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE QUERY".split()
)

_BARE_LF = re.compile(rb"(?<!\r)\n|\r(?!\n)")
_FOLD = re.compile(rb"\n[ \t]")
_CTL = re.compile(rb"[\x01-\x08\x0e-\x1f\x7f]")
_CHUNK_LINE = re.compile(rb"\n[0-9a-fA-F]+[ \t;]")


_INTERIM_FRAMED = re.compile(
    rb"http/1\.[01] 1\d\d[^\n]*\n(?:[^\n]+\n)*?(?:content-length|transfer-encoding)\s*:"
)
_OTHER_VERSION = re.compile(rb"HTTP/(?!1\.[01][ \r\n])\d\.\d")
_NOT_URI = re.compile(rb"[^A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]")


def _odd_target(target: bytes) -> bool:
    """Not origin-form, absolute-form or asterisk-form, or bytes RFC 3986 does not allow."""
    form = target.startswith(b"/") or target.startswith(b"http://") or target == b"*"
    return not form or bool(_NOT_URI.search(target))


_HUGE_LENGTH = re.compile(rb"content-length:\s*0*\d{20}")
_HOST_VALUE = re.compile(rb"\nhost:[ \t]*([^\r\n]*)")
_HUGE_CHUNK = re.compile(rb"\r\n0*[0-9a-fA-F]{17}")  # more than 64 bits of chunk-size
_NOT_HEX_CHUNK = re.compile(  # a chunked head, then a first chunk line that is no chunk-size
    rb"transfer-encoding:[^\r\n]*chunked[^\r\n]*\r\n(?:[^\r\n]+\r\n)*\r\n"
    rb"(?:[^0-9a-f]|[0-9a-f]+[^0-9a-f; \t\r])"
)


def stricter_rules(data: bytes, messages: list[reference.Message] = ()) -> list[str]:  # type: ignore[assignment]
    """The RULES entries that allow the sidecar to refuse these bytes although h11 reads them."""
    lower = data.lower()
    rules = []
    if any(m.method not in KNOWN_METHODS for m in messages if not m.status):
        rules.append("R11")
    if any(m.version not in (b"1.0", b"1.1") for m in messages) or _OTHER_VERSION.search(data):
        rules.append("R12")
    if any(_odd_target(m.target) for m in messages if not m.status):
        rules.append("R15")
    if _HUGE_LENGTH.search(lower):
        rules.append("R13")
    if _INTERIM_FRAMED.search(lower):
        rules.append("R14")
    if any(v.rstrip(b" \t") != b"localhost" for v in _HOST_VALUE.findall(lower)):
        rules.append("R18")
    if _CHUNK_LINE.search(data):
        rules.append("R4")
    if b"transfer-encoding" in lower and (
        _HUGE_CHUNK.search(data) or _NOT_HEX_CHUNK.search(lower)
    ):
        rules.append("R17")
    if _FOLD.search(data):
        rules.append("R5")
    if _CTL.search(data):
        rules.append("R6")
    if _BARE_LF.search(data):
        rules.append("R7")
    if b"content-length" in lower and b"transfer-encoding" in lower:
        rules.append("R8")
    if lower.count(b"content-length") > 1 or re.search(rb"content-length:[^\r\n]*,", lower):
        rules.append("R9")
    return rules


@dataclass
class Disagreement:
    kind: str
    case: int
    mutation: str
    detail: str
    data: bytes

    def line(self) -> str:
        shown = self.data[:160]
        return f"#{self.case} [{self.kind}] ({self.mutation or 'well-formed'}) {self.detail}: {shown!r}"


def _ruled_stricter(case: Case, messages: list[reference.Message]) -> bool:
    """Whether a rule allows the sidecar to refuse these bytes although h11 reads them."""
    return bool(stricter_rules(case.data, messages))


def _target(fwd: Forwarded) -> bytes:
    return fwd.target.encode("utf-8", "surrogateescape")


def _same(fwd: Forwarded, msg: reference.Message) -> str | None:
    """Why the forwarded request differs from h11's, or None when it is the same message."""
    if fwd.method.encode() != msg.method:
        return f"method {fwd.method!r} != {msg.method!r}"
    if _target(fwd) != msg.target:
        return f"target {fwd.target!r} != {msg.target!r}"
    if [(n.lower(), v) for n, v in fwd.headers] != msg.headers:
        return f"headers {fwd.headers!r} != {msg.headers!r}"
    if fwd.body != msg.body:
        return f"body {len(fwd.body)} bytes != {len(msg.body)} bytes"
    if not fwd.complete:
        return "body cut although h11 read it whole"
    return _head_check(fwd, msg)


def _only_ows(fwd: Forwarded, msg: reference.Message) -> bool:
    """The only difference: whitespace at the end of a header value (RFC 9112 §5 strips it)."""
    got = [(n.lower(), v.rstrip(b" \t")) for n, v in fwd.headers]
    same_line = (fwd.method.encode(), _target(fwd)) == (msg.method, msg.target)
    return same_line and got == msg.headers and fwd.body == msg.body and fwd.complete


def _head_check(fwd: Forwarded, msg: reference.Message) -> str | None:
    """The head the real client writes upstream, read back by h11, is the same request."""
    if not fwd.head_bytes:
        return None  # over sockets the upstream's own bytes were read by h11 already
    framed = fwd.head_bytes
    if b"transfer-encoding: chunked" in framed.lower():
        framed += b"%x\r\n%s\r\n0\r\n\r\n" % (len(fwd.body), fwd.body) if fwd.body else b"0\r\n\r\n"
    else:
        framed += fwd.body
    got = reference.requests(framed)
    if got.error or len(got.messages) != 1 or not got.messages[0].complete:
        return f"upstream bytes unreadable: {got.error}"
    up = got.messages[0]
    if (up.method, up.target, up.body) != (msg.method, msg.target, msg.body):
        return "upstream bytes carry another request"
    if up.headers != msg.headers:
        return f"upstream headers {up.headers!r} != {msg.headers!r}"
    return None


def _sidecar_error(answer: reference.Message) -> bool:
    return answer.status >= 400 and any(n == b"x-sidecar-error" for n, _ in answer.headers)


def read_requests(data: bytes) -> reference.Reading:
    """h11's reading, with rule R16 applied to a trailing empty line."""
    ref = reference.requests(data)
    end = 2 if data.endswith(b"\r\n") else 1 if data.endswith(b"\n") else 0
    if ref.error and "no request line" in ref.error and end:
        trimmed = reference.requests(data[:-end])
        if trimmed.error is None and len(trimmed.messages) == len(ref.messages):
            return trimmed
    return ref


def check_request(case: Case, run: Run) -> list[Disagreement]:
    """The app's bytes as requests: forwarded exactly, or refused with nothing complete sent."""
    ref = read_requests(case.data)
    out: list[Disagreement] = []

    def bad(kind: str, detail: str) -> None:
        out.append(Disagreement(kind, case.number, case.mutation, detail, case.data))

    whole = [m for m in ref.messages if m.complete]
    partial = ref.messages[len(whole)] if len(ref.messages) > len(whole) else None
    fwd = run.forwarded
    matched = 0
    for msg, got in zip(whole, fwd, strict=False):
        why = _same(got, msg)
        if why is not None and _only_ows(got, msg):
            bad("header-ows-kept", why)
        elif why is not None:
            if _ruled_stricter(case, ref.messages) and not got.complete:
                break
            bad("request-differs", why)
            return out
        matched += 1
    refused_valid = matched < len(whole)
    if refused_valid and not _ruled_stricter(case, ref.messages):
        bad(
            "valid-request-refused",
            f"{len(whole) - matched} of {len(whole)} h11-valid not forwarded",
        )
    extra = fwd[matched:]
    if extra and not refused_valid:
        first = extra[0]
        if first.complete:
            bad("invalid-request-completed", f"h11: {ref.error or 'needs more bytes'}")
        elif ref.error and ref.error_in_head and partial is None:
            bad("refused-head-reached-pipeline", f"h11: {ref.error}")
        if len(extra) > 1:
            bad("extra-requests-forwarded", f"{len(extra)} after the last h11-valid one")
    if ref.error and not run.closed and not refused_valid:
        bad("malformed-left-open", f"h11: {ref.error}")
    refused = (
        refused_valid
        or ref.error is not None
        or _ruled_stricter(case, ref.messages)
        or _impossible_tail(case.data, ref)
    )
    last = fwd[matched].method if len(fwd) > matched else "GET"  # R19
    out += _check_app(case, run, whole[:matched], refused, last)
    return out


def _impossible_tail(data: bytes, ref: reference.Reading) -> bool:
    """R17: h11 read whole messages, then waits on a short tail that begins no known method."""
    if ref.error or not ref.messages or not all(m.complete for m in ref.messages):
        return False
    for k in range(1, min(16, len(data)) + 1):
        head = read_requests(data[:-k])
        whole = all(m.complete for m in head.messages)
        if head.error is None and len(head.messages) == len(ref.messages) and whole:
            tail = data[-k:]
            if tail[:1] in (b"\r", b"\n"):
                return False  # an empty line between requests: R16, never refused
            return not any((m + b" ").startswith(tail[: len(m) + 1]) for m in KNOWN_METHODS)
    return False


def _check_app(
    case: Case, run: Run, answered: list[reference.Message], refused: bool, last: str = "GET"
) -> list[Disagreement]:
    """The app reads one 200 per forwarded request, then at most one sidecar refusal (of a
    request with method ``last``, rule R19)."""
    methods = [m.method.decode() for m in answered] + [last]
    got = reference.received(methods, run.app, run.closed)
    out: list[Disagreement] = []

    def bad(kind: str, detail: str) -> None:
        out.append(Disagreement(kind, case.number, case.mutation, detail, case.data))

    for i, msg in enumerate(answered):
        if i >= len(got.answers):
            bad("app-answer-missing", f"answer {i + 1} of {len(answered)}: {got.error}")
            return out
        ans = got.answers[i]
        want = b"" if msg.method == b"HEAD" else b"ok"
        if (ans.status, ans.body, ans.complete) != (200, want, True):
            bad("app-answer-differs", f"answer {i + 1}: {ans.status} {ans.body[:40]!r}")
            return out
    more = got.answers[len(answered) :]
    if more and not (refused and _sidecar_error(more[0])):
        bad("app-unexpected-answer", f"{more[0].status} {more[0].headers[:3]!r}")
    elif got.error and "ConnectionClosed" not in got.error:
        bad("app-stream-broken", got.error)
    return out


def app_request(case: Case) -> bytes:
    """The request the app sends in a response case (a loopback Host: the host guard answers
    any other name 421 SC1015 over sockets)."""
    body = b"abc" if case.method == "POST" else b""
    length = b"Content-Length: 3\r\n" if body else b""
    return (
        b"%s /%s/r HTTP/%s\r\nHost: localhost\r\n%s\r\n"
        % (case.method.encode(), UPSTREAM.encode(), case.version.encode(), length)
        + body
    )


def check_response(case: Case, run: Run) -> list[Disagreement]:
    """The provider's bytes: relayed exactly (framing re-done), or refused (502), never forged."""
    ref = reference.answer(case.method, case.data)
    got = reference.received([case.method], run.app, run.closed)
    out: list[Disagreement] = []

    def bad(kind: str, detail: str) -> None:
        out.append(Disagreement(kind, case.number, case.mutation, detail, case.data))

    ans = got.answers[0] if got.answers else None
    final = ref.messages[0] if ref.messages else None
    if ref.error is None and final is not None and final.complete:
        if ans is None or not ans.complete:
            if not _ruled_stricter(case, ref.messages):
                bad("valid-answer-lost", f"app got {ans.status if ans else None}: {got.error}")
        elif _cut_for_http10(case, ans, final) and _ruled_stricter(case, ref.messages):
            pass  # R10 with a stricter rule: cut where llhttp refused, the 1.0 app cannot tell
        elif _sidecar_error(ans) and ans.status in (502, 504):
            if not _ruled_stricter(case, ref.messages):
                bad("valid-answer-refused", f"sidecar {ans.status} for h11-valid {final.status}")
        else:
            why = _same_answer(ans, final)
            if why and _trailer_merged(case.data, ans, final):
                bad("trailer-merged", why)
            elif why:
                bad("answer-differs", why)
        if got.leftover and case.method == "HEAD" and ans is not None and _sidecar_error(ans):
            bad("head-refusal-has-body", "a body after the sidecar's answer to HEAD")
        elif got.leftover:
            bad("app-extra-bytes", "bytes after the answer")
        return out
    if ans is None:
        return out  # nothing, or a cut head: the app saw no answer
    if ref.error and ref.error_in_head:
        if not (_sidecar_error(ans) and ans.status in (502, 504)):
            bad("invalid-answer-relayed", f"h11: {ref.error}; app got {ans.status}")
    elif (
        ans.complete
        and not (_sidecar_error(ans) and ans.status in (502, 504))
        and not (final is not None and _cut_for_http10(case, ans, final))
    ):
        bad("invalid-answer-completed", f"h11: {ref.error or 'incomplete'}; app got it whole")
    return out


def _trailer_merged(data: bytes, ans: reference.Message, final: reference.Message) -> bool:
    """The answer's extra header fields are the provider's trailer fields (RFC 9110 §6.5.1)."""
    extra = [h for h in ans.headers if h not in final.headers]
    if not extra or [h for h in ans.headers if h not in extra] != final.headers:
        return False
    tail = data.lower().rpartition(b"\r\n0\r\n")[2]
    return all(name + b":" in tail for name, _ in extra)


def _cut_for_http10(case: Case, ans: reference.Message, final: reference.Message) -> bool:
    """R10: an HTTP/1.0 app's close-delimited answer whose body is a prefix of the provider's."""
    return (
        case.version == "1.0"
        and ans.close_delimited
        and final.body.startswith(ans.body)
        and ans.status == final.status
    )


def _same_answer(ans: reference.Message, final: reference.Message) -> str | None:
    if ans.status != final.status:
        return f"status {ans.status} != {final.status}"
    if final.reason and ans.reason != final.reason:
        return f"reason {ans.reason!r} != {final.reason!r}"
    if ans.headers != final.headers:
        return f"headers {ans.headers!r} != {final.headers!r}"
    if ans.body != final.body:
        return f"body {len(ans.body)} bytes != {len(final.body)} bytes"
    return None
