"""YAML configuration -> a typed, validated :class:`Config`.

Everything is checked at load, so a sidecar that started is a sidecar whose config is whole.
Every problem is reported at once as ``yaml.path (line N): reason``; ``${VAR}`` and
``${VAR:-default}`` are expanded in string values before validation.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from yarl import URL

from sidecar.errors import ConfigError
from sidecar.hostguard import host_name
from sidecar.schemes.base import SchemeOptions, UpstreamContext
from sidecar.schemes.registry import build_scheme, scheme_class
from sidecar.webhooksig import WebhookSignature, preset

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# The default shape of a placeholder literal: {{NAME}}, with optional inner spaces so that a
# near miss such as "{{ NAME }}" is refused rather than sent.
PLACEHOLDER_PATTERN = r"\{\{\s*[A-Za-z0-9_.:-]{1,64}\s*\}\}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VaultAuth(_Model):
    """How the sidecar logs in to Vault; the secret inputs come from files or the environment."""

    method: Literal["token", "approle", "kubernetes"] = "token"
    token: SecretStr | None = Field(None, description="token method: the token itself")
    token_file: Path | None = Field(None, description="token method: file holding the token")
    role_id: str | None = Field(None, description="approle: role_id")
    secret_id: SecretStr | None = Field(None, description="approle: secret_id (prefer a file)")
    secret_id_file: Path | None = Field(None, description="approle: file holding the secret_id")
    role: str | None = Field(None, description="kubernetes: the Vault role")
    jwt_path: Path = Field(
        Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        description="kubernetes: the service-account JWT",
    )
    mount: str | None = Field(None, description="auth mount path; defaults to the method name")


class VaultConfig(_Model):
    address: str = Field("http://127.0.0.1:8200", description="Vault/OpenBao address")
    auth: VaultAuth = VaultAuth()
    kv_mount: str = "secret"
    prefix: str = Field("sidecar", description="KV path prefix for this sidecar's records")
    transit_mount: str = "transit"
    transit_key: str = "sidecar"
    create_transit_key: bool = Field(True, description="create the transit key when missing")
    timeout: float = Field(5.0, gt=0, description="seconds per Vault request")
    ca_bundle: Path | None = None
    renew_fraction: float = Field(0.66, gt=0, lt=1, description="renew at this share of TTL")
    login_retry: float = Field(
        900.0,
        gt=0,
        description="seconds (jittered up to +50 %) before a refused login is retried with the "
        "same credential; a changed credential file is tried at once. Keep it >= OpenBao's "
        "lockout_counter_reset (15 min): each replica then adds at most one failed login per "
        "window to the 5 that lock a role_id out",
    )
    backoff_max: float = Field(
        2.0, gt=0, le=5, description="longest full-jitter wait while Vault is unreachable"
    )
    check_interval: float = Field(
        30.0, gt=0, description="seconds between token checks (lookup-self) for readiness"
    )
    source_poll: float = Field(
        1.0, gt=0, description="seconds between looks at token_file/secret_id_file/jwt_path"
    )

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if URL(v).scheme not in ("http", "https") or not URL(v).host:
            raise ValueError("must be an http(s) URL")
        return v


class ListenConfig(_Model):
    proxy: str = Field("127.0.0.1:8080", description="proxy role: proxied traffic only")
    local: str = Field(
        "127.0.0.1:8081", description="proxy role: read-only local API (health, metrics, CA)"
    )
    admin: str = Field(
        "127.0.0.1:8099", description="admin role: the admin API; host:port or unix:/path (0600)"
    )
    health: str | None = Field(None, description="optional health-only listener for kubelet")
    shutdown_grace: float = Field(10.0, ge=0, description="seconds in-flight requests may finish")
    body_idle_timeout: float = Field(
        30.0,
        gt=0,
        description="seconds a proxied request body, or a webhook to verify, may send nothing "
        "(408 SC4014)",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="browser origins (scheme://host[:port]) any listener accepts; default none",
    )

    @field_validator("proxy", "local", "health")
    @classmethod
    def _hostport(cls, v: str | None) -> str | None:
        if v is not None:
            split_hostport(v)
        return v

    @field_validator("admin")
    @classmethod
    def _admin(cls, v: str) -> str:
        if unix_path(v) is None:
            split_hostport(v)
        elif not unix_path(v):
            raise ValueError("unix: needs an absolute path, e.g. unix:/run/sidecar/admin.sock")
        return v

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        """``scheme://host[:port]`` exactly: a browser's Origin has no path, and never ``null``."""
        for origin in v:
            u = URL(origin.rstrip("/"))
            if u.scheme not in ("http", "https") or not u.host or u.raw_path not in ("", "/"):
                raise ValueError(f"{origin!r}: must be scheme://host[:port]")
            if u.query_string or u.fragment or u.user:
                raise ValueError(f"{origin!r}: must be scheme://host[:port]")
        return v


class AdminConfig(_Model):
    allow_remote: bool = Field(False, description="permit a non-loopback admin address")
    token: SecretStr | None = Field(None, description="static admin token (Authorization: Bearer)")
    token_file: Path | None = Field(None, description="file holding the static admin token")
    vault_tokens: bool = Field(
        True, description="accept a caller's Vault token (X-Vault-Token); Vault policy decides"
    )
    max_body: int = Field(64 * 1024, gt=0, description="largest admin request body, bytes")
    hosts: list[str] = Field(
        default_factory=list,
        description="Host names the admin listener answers besides loopback (its Service name)",
    )

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        """Names as a Host header carries them, without the port (any port is accepted)."""
        for host in v:
            if host_name(host) != host.lower():
                raise ValueError(f"{host!r}: must be a host name without a port")
        return v

    verify_per_minute: int = Field(
        10, gt=0, description="verify attempts per credential per minute (then 429 SC1018)"
    )


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    access_log: bool = False


class CacheConfig(_Model):
    refresh_interval: float = Field(30.0, gt=0, description="seconds between Vault re-reads")
    max_stale: float = Field(3600.0, ge=0, description="serve cached creds this long in an outage")


class InterceptConfig(_Model):
    """HTTPS interception for SDKs that hard-code https:// (see docs/interception.md)."""

    enabled: bool = Field(False, description="terminate CONNECT to configured upstream hosts")
    ca_cert_path: Path | None = Field(None, description="where to write the CA certificate (PEM)")
    leaf_ttl_hours: int = Field(24, gt=0, le=24 * 30, description="lifetime of a host certificate")
    ca_ttl_days: int = Field(30, gt=0, le=3650, description="lifetime of the in-memory CA")


class UpstreamConfig(BaseModel):
    """One provider. Scheme options sit beside these keys and are checked by the scheme."""

    model_config = ConfigDict(extra="allow", frozen=True)

    url: str
    hosts: list[str] = Field(default_factory=list, description="host names the app may use")
    scheme: str | list[str | dict[str, Any]]
    credential: str
    environment: Literal["sandbox", "live"]
    timeout: float = Field(30.0, gt=0)
    connect_timeout: float = Field(5.0, gt=0)
    max_connections: int = Field(
        256, gt=0, description="connections to this upstream at once (proxied requests)"
    )
    pool_timeout: float = Field(
        5.0, gt=0, description="seconds a request waits for a free connection; 503 SC4026 beyond"
    )
    max_body: int = Field(1024 * 1024, gt=0, description="bytes read when a scheme needs the body")
    ca_bundle: Path | None = None
    scrub_answers: bool = Field(
        True,
        description="scan answers for the secrets and token the sidecar injected: a header "
        "holding one is 502 SC4030, body bytes are masked with '*', a compressed answer is 502 "
        "SC4031 (Accept-Encoding: identity is sent) (docs/security-model.md)",
    )
    require_proxy_key: bool = Field(False, description="callers must present a proxy key")
    proxy_key_header: str = Field(
        "Proxy-Authorization",
        pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
        description="header carrying 'Bearer <key>' (other headers may carry the bare key)",
    )
    placeholders: dict[str, str] = Field(
        default_factory=dict,
        max_length=64,
        description="literal the SDK sends -> credential field substituted for it in JSON/form "
        "bodies and the query (docs/placeholders.md); anything else placeholder-shaped is refused",
    )
    placeholder_pattern: str = Field(
        PLACEHOLDER_PATTERN,
        description="regex every placeholder literal must match whole; any other match in a body "
        "or query (also percent-, JSON- or HTML-escaped) is refused with 400",
    )

    @field_validator("placeholder_pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        try:
            compiled = re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a regular expression ({exc})") from None
        if compiled.search("") is not None or compiled.search("plain-value_1") is not None:
            raise ValueError("must not match an empty or plain value")
        return v

    webhook_signature: WebhookSignature | None = Field(
        None, description="how the provider signs webhooks (a preset name, e.g. kopokopo)"
    )

    @field_validator("webhook_signature", mode="before")
    @classmethod
    def _preset(cls, v: Any) -> Any:
        return preset(v)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        u = URL(v)
        if u.scheme not in ("http", "https") or not u.host or u.query_string or u.fragment:
            raise ValueError("must be an absolute http(s) URL with no query or fragment")
        return v

    @field_validator("credential")
    @classmethod
    def _cred(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must match [a-z0-9][a-z0-9._-]{0,63}")
        return v

    def scheme_specs(self) -> list[tuple[str, dict[str, Any]]]:
        """(scheme name, raw options) in order; flat keys belong to a single scheme."""
        extras = dict(self.model_extra or {})
        if isinstance(self.scheme, str):
            return [(self.scheme, extras)]
        specs: list[tuple[str, dict[str, Any]]] = []
        for item in self.scheme:
            if isinstance(item, str):
                specs.append((item, {}))
            else:
                opts = dict(item)
                specs.append((str(opts.pop("name", "")), opts))
        return specs


class Config(_Model):
    vault: VaultConfig = VaultConfig()
    listen: ListenConfig = ListenConfig()
    admin: AdminConfig = AdminConfig()
    logging: LoggingConfig = LoggingConfig()
    cache: CacheConfig = CacheConfig()
    intercept: InterceptConfig = InterceptConfig()
    upstreams: dict[str, UpstreamConfig] = Field(default_factory=dict)
    upstream_grace: float = Field(
        60.0, ge=0, description="seconds a replaced upstream's pool lives on after a reload"
    )
    # Filled by load(): validated options per upstream, in scheme order.
    schemes: dict[str, list[tuple[str, SchemeOptions]]] = Field(default_factory=dict)


def split_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not int(port) <= 65535 or not host:
        raise ValueError("must be host:port")
    return host.strip("[]"), int(port)


def unix_path(address: str) -> str | None:
    """``unix:/run/sidecar/admin.sock`` -> the path ("" when not absolute); None for host:port."""
    if not address.startswith("unix:"):
        return None
    path = address[len("unix:") :]
    return path if path.startswith("/") else ""


def is_loopback(hostport: str) -> bool:
    if unix_path(hostport) is not None:  # a Unix socket never leaves the host
        return True
    host, _ = split_hostport(hostport)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def has_static_token(admin: AdminConfig) -> bool:
    """A static admin token is configured inline or as a file."""
    inline = admin.token is not None and bool(admin.token.get_secret_value())
    return inline or admin.token_file is not None


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate a config file; raise ConfigError listing every problem."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from None
    return loads(text, env)


def loads(text: str, env: Mapping[str, str] | None = None) -> Config:
    try:
        raw = yaml.safe_load(text)
        lines = _line_map(yaml.compose(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError([f"yaml{where}: {getattr(exc, 'problem', None) or exc}"]) from None
    except RecursionError:  # very deep nesting, or an alias inside its own anchor
        raise ConfigError(["yaml: nested too deeply, or an alias refers to itself"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(["(top level): must be a mapping"])
    problems: list[str] = []
    data = _interpolate(raw, (), os.environ if env is None else env, problems, lines)
    if problems:
        raise ConfigError(problems)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(e["loc"], e["msg"], lines) for e in exc.errors()]) from None
    checked = _check(config, lines)
    if checked[1]:
        raise ConfigError(checked[1])
    return config.model_copy(update={"schemes": checked[0]})


def _check(config: Config, lines: dict[tuple[Any, ...], int]) -> tuple[Any, list[str]]:
    problems: list[str] = []
    if not is_loopback(config.listen.admin):
        if not config.admin.allow_remote:
            problems.append(
                _describe(("listen", "admin"), "not loopback; set admin.allow_remote", lines)
            )
        elif not (config.admin.vault_tokens or has_static_token(config.admin)):
            problems.append(
                _describe(("admin", "token"), "required when allow_remote (or vault_tokens)", lines)
            )
    if not is_loopback(config.listen.proxy) and not config.admin.allow_remote:
        problems.append(
            _describe(("listen", "proxy"), "not loopback; set admin.allow_remote", lines)
        )
    schemes: dict[str, list[tuple[str, SchemeOptions]]] = {}
    for name, up in config.upstreams.items():
        base = ("upstreams", name)
        if not NAME_RE.match(name) or "/" in name:
            problems.append(
                _describe(base, "upstream names must match [a-z0-9][a-z0-9._-]*", lines)
            )
        schemes[name] = _check_schemes(up, base, lines, problems)
        _check_placeholders(up, schemes[name], base, lines, problems)
        if not up.scrub_answers and any(getattr(o, "token_path", None) for _, o in schemes[name]):
            problems.append(_describe((*base, "scrub_answers"), _EMULATED_UNSCANNED, lines))
        _check_webhook(name, up, schemes[name], lines, problems)
    return schemes, problems


def _check_webhook(
    name: str,
    up: UpstreamConfig,
    specs: list[tuple[str, SchemeOptions]],
    lines: dict[tuple[Any, ...], int],
    problems: list[str],
) -> None:
    """The webhook key becomes a secret field: a field the scheme shows publicly cannot be it."""
    if up.webhook_signature is None or not specs:
        return
    scheme = build_scheme(specs, UpstreamContext(name=name, url=URL(up.url)))
    if up.webhook_signature.field in scheme.public_fields:
        where = ("upstreams", name, "webhook_signature", "field")
        problems.append(_describe(where, "is a public field of the scheme; use its own", lines))


def _check_schemes(
    up: UpstreamConfig,
    base: tuple[Any, ...],
    lines: dict[tuple[Any, ...], int],
    problems: list[str],
) -> list[tuple[str, SchemeOptions]]:
    specs = up.scheme_specs()
    if len(specs) > 1 and up.model_extra:
        key = next(iter(up.model_extra))
        problems.append(_describe((*base, key), "options of a scheme list go in its item", lines))
        return []
    result: list[tuple[str, SchemeOptions]] = []
    for i, (scheme_name, opts) in enumerate(specs):
        where = base if len(specs) == 1 else (*base, "scheme", i)
        try:
            cls = scheme_class(scheme_name)
        except KeyError as exc:
            problems.append(_describe((*base, "scheme"), str(exc.args[0]), lines))
            continue
        try:
            result.append((scheme_name, cls.Options.model_validate(opts)))
        except ValidationError as exc:
            problems += [_describe((*where, *e["loc"]), e["msg"], lines) for e in exc.errors()]
    return result


_EMULATED_SECRET = (
    "not with token_path: the token request is answered by the sidecar, and the secret "
    "substituted anywhere else could be traded for a real token or echoed back"
)

_EMULATED_UNSCANNED = (
    "must stay true with token_path: the app is promised it never holds the real token, and "
    "only the answer scan keeps a provider that echoes Authorization from handing it back"
)


def _check_placeholders(
    up: UpstreamConfig,
    specs: list[tuple[str, SchemeOptions]],
    base: tuple[Any, ...],
    lines: dict[tuple[Any, ...], int],
    problems: list[str],
) -> None:
    """Every literal has the placeholder shape; every field is one the scheme stores.

    The scheme is built (no network) only to learn its fields; if it cannot be built here the
    proxy checks the field per request instead (SC4052).
    """
    pattern = re.compile(up.placeholder_pattern)
    fields = _scheme_fields(base[-1], up, specs)
    emulated = any(getattr(options, "token_path", None) for _, options in specs)
    for literal, field in up.placeholders.items():
        where = (*base, "placeholders", literal)
        if not pattern.fullmatch(literal):
            problems.append(_describe(where, "literal must match placeholder_pattern", lines))
        elif emulated and field == "client_secret":  # docs/sdk-oauth2.md says why
            problems.append(_describe(where, _EMULATED_SECRET, lines))
        elif fields is not None and field not in fields:
            known = ", ".join(sorted(fields))
            problems.append(_describe(where, f"{field!r} is not a field of ({known})", lines))


def _scheme_fields(
    name: str, up: UpstreamConfig, specs: list[tuple[str, SchemeOptions]]
) -> frozenset[str] | None:
    if not up.placeholders or not specs or len(specs) != len(up.scheme_specs()):
        return None  # no placeholders, or a scheme already reported as invalid
    try:
        scheme = build_scheme(specs, UpstreamContext(name=name, url=URL(up.url)))
    except (TypeError, ValueError, KeyError):
        return None
    return frozenset((*scheme.public_fields, *scheme.secret_fields))


def _describe(loc: tuple[Any, ...], msg: str, lines: dict[tuple[Any, ...], int]) -> str:
    path = ".".join(str(p) for p in loc) or "(top level)"
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return f"{path} (line {lines[loc[:n]]}): {msg}"
    return f"{path}: {msg}"


def _line_map(node: yaml.Node | None, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """YAML path -> 1-based line, so errors can point into the file."""
    out: dict[tuple[Any, ...], int] = {}
    if node is None:
        return out
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out.update(_line_map(value, (*path, key.value)))
            out[(*path, key.value)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            out.update(_line_map(value, (*path, i)))
    return out


def _interpolate(
    value: Any,
    path: tuple[Any, ...],
    env: Mapping[str, str],
    problems: list[str],
    lines: dict[tuple[Any, ...], int],
) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, (*path, k), env, problems, lines) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*path, i), env, problems, lines) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(_describe(path, f"environment variable {name} is not set", lines))
        return ""

    return _ENV.sub(sub, value)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the file, scheme options included under ``$defs``."""
    from sidecar.schemes.registry import builtin_schemes

    schema = Config.model_json_schema()
    schema["properties"].pop("schemes", None)
    defs = schema.setdefault("$defs", {})
    for name, cls in builtin_schemes().items():
        defs[f"scheme_options_{name}"] = cls.Options.model_json_schema()
    return schema
