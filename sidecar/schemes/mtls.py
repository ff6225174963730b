"""``mtls``: a client certificate for upstream mutual TLS, held in Vault like any other secret.

Banks that want mutual TLS want it *beside* their other auth (an API key, an OAuth2 token), so
this is a scheme that composes (``scheme: [mtls, api_key]``): it declares the two fields
(``client_certificate`` public, ``client_private_key`` secret) and checks them before a save.
Its ``auth_flow`` leaves the request as it is: the certificate travels in the TLS handshake,
which the upstream's pool makes with a context built per credential version (``tlskeys.py``);
this module never sees a socket or an SSL context.

``verify`` refuses what would fail at the first handshake, in order: PEM that does not parse
(SC2017), a key that is not the certificate's (SC2018), a certificate outside its validity
(SC2019) or not for client auth (SC2021); then one request over a connection made with the
candidate certificate (the ``http`` session the admin handler built for it), where a refused
handshake is SC2020; then the probe, if configured. No message ever quotes the PEM.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import Field, model_validator

from sidecar.errors import SidecarError
from sidecar.schemes.base import (
    AuthFlow,
    Credential,
    OutboundRequest,
    SchemeBase,
    SchemeOptions,
    UpstreamContext,
)
from sidecar.schemes.jwskeys import KeyProblem, load_bounded_key
from sidecar.schemes.probe import Probe, probe_with

CERT_FIELD = "client_certificate"
KEY_FIELD = "client_private_key"
MAX_CHAIN_BYTES = 64 * 1024  # a leaf and a few intermediates fit many times over
MAX_CHAIN_CERTS = 8
MAX_KEY_BYTES = 16 * 1024  # an RSA-8192 PEM is under 7 KiB


def origin_path(path: str, option: str) -> str:
    """A path on the upstream's origin, never a URL: verify presents the candidate's
    certificate (mtls) or a token signed with its key (jws), which must not go to another host.
    """
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        raise ValueError(f"{option} must be a path on the upstream (/...), not a URL")
    return path


class MtlsOptions(SchemeOptions):
    handshake_path: str = Field(
        "/", description="path asked at verify over the candidate's TLS connection"
    )
    probe: Probe | None = Field(None, description="an authenticated call, for verify")

    @model_validator(mode="after")
    def _on_origin(self) -> MtlsOptions:
        origin_path(self.handshake_path, "handshake_path")
        if self.probe is not None:
            origin_path(self.probe.path, "probe.path")
        return self


@dataclass(frozen=True, slots=True)
class ClientCert:
    """What the checks learnt about a pair: enough for the metric, the log and the peer."""

    serial: int
    not_before: datetime
    not_after: datetime

    def seconds_left(self, now: datetime | None = None) -> float:
        return (self.not_after - (now or datetime.now(UTC))).total_seconds()


def _chain(pem: str) -> list[x509.Certificate]:
    if len(pem) > MAX_CHAIN_BYTES:
        raise SidecarError("SC2017", f"{CERT_FIELD}: over {MAX_CHAIN_BYTES} bytes")
    try:
        chain = x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        raise SidecarError("SC2017", f"{CERT_FIELD}: not a PEM certificate chain") from None
    if len(chain) > MAX_CHAIN_CERTS:
        raise SidecarError("SC2017", f"{CERT_FIELD}: over {MAX_CHAIN_CERTS} certificates")
    return chain


def _key(pem: str) -> PrivateKeyTypes:
    """The exception text of a failed parse is never passed on: it could quote the input."""
    if len(pem) > MAX_KEY_BYTES:
        raise SidecarError("SC2017", f"{KEY_FIELD}: over {MAX_KEY_BYTES} bytes")
    try:
        return load_bounded_key(pem)
    except KeyProblem as problem:
        raise SidecarError("SC2017", f"{KEY_FIELD}: {problem.reason}") from None
    except TypeError:
        raise SidecarError("SC2017", f"{KEY_FIELD}: encrypted keys are not supported") from None
    except (ValueError, UnsupportedAlgorithm):
        raise SidecarError("SC2017", f"{KEY_FIELD}: not an unencrypted PEM private key") from None


def _spki(key: object) -> bytes:
    public = key.public_key()  # type: ignore[attr-defined]
    encoded: bytes = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return encoded


def _for_client_auth(leaf: x509.Certificate) -> bool:
    """Not a CA, and an extended key usage, if present, that allows clientAuth."""
    try:
        if leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
    except x509.ExtensionNotFound:
        pass
    try:
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return ExtendedKeyUsageOID.CLIENT_AUTH in usage


def check_pair(
    cert_pem: str, key_pem: str, now: datetime | None = None, dated: bool = True
) -> ClientCert:
    """Parse and check a certificate chain and its key; SC2017-SC2019, SC2021 on a no.

    ``dated=False`` skips the validity window: a stored pair that expired is still loaded, so
    the metric shows it and each request is refused with its own code (SC4061).
    """
    leaf = _chain(cert_pem)[0]
    key = _key(key_pem)
    if _spki(leaf) != _spki(key):
        raise SidecarError("SC2018")
    info = ClientCert(leaf.serial_number, leaf.not_valid_before_utc, leaf.not_valid_after_utc)
    moment = now or datetime.now(UTC)
    if dated and not info.not_before <= moment < info.not_after:
        raise SidecarError("SC2019", f"{CERT_FIELD}: valid {_span(info)} only")
    if not _for_client_auth(leaf):
        raise SidecarError("SC2021")
    return info


def _span(info: ClientCert) -> str:
    return f"{info.not_before:%Y-%m-%dT%H:%M:%SZ} to {info.not_after:%Y-%m-%dT%H:%M:%SZ}"


def cert_info(cred: Credential, now: datetime | None = None, dated: bool = True) -> ClientCert:
    return check_pair(cred.value(CERT_FIELD), cred.value(KEY_FIELD), now, dated)


class Mtls(SchemeBase):
    name = "mtls"
    Options = MtlsOptions
    public_fields: tuple[str, ...] = (CERT_FIELD,)
    secret_fields: tuple[str, ...] = (KEY_FIELD,)
    verification = "probe"  # verify() always asks the provider: a request over the candidate's TLS

    def __init__(self, options: MtlsOptions, upstream: UpstreamContext) -> None:
        if upstream.url.scheme != "https":
            raise ValueError("mtls needs an https upstream url")
        self.options = options
        self.upstream = upstream
        self.probe = options.probe

    async def auth_flow(self, request: OutboundRequest, cred: Credential) -> AuthFlow:
        """The certificate rides in the handshake, not in the request: nothing to change."""
        yield request

    async def verify(self, cred: Credential, http: aiohttp.ClientSession) -> None:
        cert_info(cred)
        await self._handshake(http)
        if self.probe is not None:
            await probe_with(self, cred, http, self.probe, self.upstream)

    async def _handshake(self, http: aiohttp.ClientSession) -> None:
        """Any HTTP answer means the provider took the certificate; with TLS 1.3 a refusal
        arrives as an alert after the client's side of the handshake, so a request is needed."""
        url = self.upstream.join(self.options.handshake_path)
        timeout = aiohttp.ClientTimeout(total=self.upstream.timeout)
        try:
            async with http.head(url, allow_redirects=False, timeout=timeout):
                return
        except aiohttp.ClientConnectorCertificateError:
            raise self._unreachable("the provider's server certificate is not trusted") from None
        except aiohttp.ClientSSLError:
            raise SidecarError("SC2020", f"{self.upstream.name}: handshake refused") from None
        except aiohttp.ClientConnectorError:
            raise self._unreachable("cannot connect") from None
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
            # Connected, then cut off before any answer: the TLS 1.3 refusal of a certificate.
            raise SidecarError("SC2020", f"{self.upstream.name}: handshake refused") from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._unreachable(type(exc).__name__) from None

    def _unreachable(self, why: str) -> SidecarError:
        return SidecarError("SC2006", f"{self.upstream.name}: provider unreachable ({why})")
