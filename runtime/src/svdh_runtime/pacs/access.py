"""Who may talk to the node: calling AE titles (optionally tied to hosts), the called AE title, DICOM TLS.

Modelled on what PACS administrators already configure: Orthanc's
``DicomCheckCalledAet`` and its list of known modalities, dcm4chee's AE
configuration. A rule is ``AET`` (that calling AE title from any address),
``AET@HOST`` (only from HOST: an IP address, a network such as
``10.1.2.0/24``, or a host name resolved when the node starts) or ``*@HOST``
(any AE title from HOST). With no rule, any calling AE title is accepted, as a
PACS node on a closed network often must; the start-up line says so.

Rejections happen at association time with an A-ASSOCIATE-RJ (rejected
permanent, service user) whose reason is "calling AE title not recognised" or
"called AE title not recognised"; the node logs the calling AE title and the
address, never patient data.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

CALLING_AE_NOT_RECOGNISED = 0x03  # A-ASSOCIATE-RJ diagnostics, source "DICOM UL service user"
CALLED_AE_NOT_RECOGNISED = 0x07
TLS_HANDSHAKE_TIMEOUT_S = 10.0
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def check_ae_title(title: str, what: str) -> str:
    """A valid AE title (1-16 characters of the default repertoire, no backslash), stripped."""
    title = title.strip()
    if not 0 < len(title) <= 16 or "\\" in title or not all(32 <= ord(c) < 127 for c in title):
        raise InputError(f"{what}: {title!r} is not an AE title (1-16 printable ASCII characters, no backslash)")
    return title


@dataclass(frozen=True)
class AllowRule:
    """One ``--allow`` entry."""

    text: str
    ae_title: str | None  # None: any AE title (the '*' of '*@HOST')
    networks: tuple[Network, ...] | None  # None: any address

    @classmethod
    def parse(cls, text: str, resolve: Callable[[str], list[str]] | None = None) -> AllowRule:
        """``AET``, ``AET@HOST`` or ``*@HOST``; HOST is an address, a network or a name (resolved now)."""
        title, at, host = text.strip().partition("@")
        if title == "*" and not at:
            raise InputError(f"--allow {text!r}: '*' needs a host ('*@HOST'); without --allow any AE is accepted")
        ae_title = None if title == "*" else check_ae_title(title, f"--allow {text!r}")
        if not at:
            return cls(text.strip(), ae_title, None)
        if not host.strip():
            raise InputError(f"--allow {text!r}: nothing after '@' (expected AET@HOST)")
        return cls(text.strip(), ae_title, tuple(_networks(host.strip(), resolve or _resolve)))

    def matches(self, calling: str, address: str) -> bool:
        if self.ae_title is not None and calling != self.ae_title:
            return False
        if self.networks is None:
            return True
        try:
            peer = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
            peer = peer.ipv4_mapped
        return any(peer in network for network in self.networks)


def _resolve(host: str) -> list[str]:
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)})
    except OSError:
        raise InputError(f"--allow: host {host!r} cannot be resolved") from None


def _networks(host: str, resolve: Callable[[str], list[str]]) -> list[Network]:
    try:
        return [ipaddress.ip_network(host, strict=False)]
    except ValueError:
        pass
    return [ipaddress.ip_network(address.split("%", 1)[0]) for address in resolve(host)]


def read_allow_file(path: Path) -> list[str]:
    """The rules of an ``--allow-file``: one per line; blank lines and ``#`` comments ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--allow-file {path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    rules = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if entry:
            if any(c.isspace() for c in entry):
                raise InputError(f"--allow-file {path}, line {number}: one AET or AET@HOST per line")
            rules.append(entry)
    return rules


@dataclass(frozen=True)
class Verdict:
    """Why an association is rejected: the A-ASSOCIATE-RJ diagnostic and a line for the log."""

    diagnostic: int
    reason: str


class AccessPolicy:
    """The node's own AE title and the calling AE titles (and hosts) it accepts."""

    def __init__(self, ae_title: str, rules: Iterable[AllowRule] = ()) -> None:
        self.ae_title = ae_title
        self.rules = tuple(rules)

    def check(self, calling: str, called: str, address: str) -> Verdict | None:
        """None when the association may proceed."""
        if called.strip() != self.ae_title:
            return Verdict(CALLED_AE_NOT_RECOGNISED, f"called AE title {called.strip()!r} is not {self.ae_title!r}")
        calling = calling.strip()
        if self.rules and not any(rule.matches(calling, address) for rule in self.rules):
            known = any(rule.ae_title == calling for rule in self.rules)
            reason = "calling AE title not recognised" + (" from this address" if known else "")
            return Verdict(CALLING_AE_NOT_RECOGNISED, reason)
        return None

    def describe(self) -> str:
        if not self.rules:
            return "any calling AE title accepted (no --allow)"
        return f"calling AE titles allowed: {', '.join(rule.text for rule in self.rules)}"


@dataclass(frozen=True)
class TlsFiles:
    """``--tls-cert``, ``--tls-key`` and (to require and verify peer certificates) ``--tls-ca``."""

    cert: Path
    key: Path
    ca: Path | None = None

    @classmethod
    def from_options(cls, cert: Path | None, key: Path | None, ca: Path | None) -> TlsFiles | None:
        if cert is None and key is None and ca is None:
            return None
        if cert is None or key is None:
            raise InputError("DICOM TLS needs both --tls-cert and --tls-key")
        for option, file in (("--tls-cert", cert), ("--tls-key", key), ("--tls-ca", ca)):
            if file is not None and not Path(file).is_file():
                raise InputError(f"{option} {file}: no such file")
        return cls(Path(cert), Path(key), Path(ca) if ca is not None else None)

    def describe(self) -> str:
        return "DICOM TLS, peer certificates verified" if self.ca else "DICOM TLS, no peer certificates asked"

    def server_context(self, on_failure: Callable[[str, str], None]) -> ssl.SSLContext:
        """The listening side: TLS 1.2 or later; with a CA, a peer without a certificate it signed is refused."""
        context = _ServerContext(ssl.PROTOCOL_TLS_SERVER)
        context.on_failure = on_failure
        self._load(context)
        if self.ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def client_context(self) -> ssl.SSLContext:
        """The sending side (``--forward-tls``): the destination's certificate verified against the CA,
        ours presented."""
        if self.ca is None:
            raise InputError("--forward-tls needs --tls-ca to verify the destination's certificate")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._load(context)
        return context

    def _load(self, context: ssl.SSLContext) -> None:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert, self.key)
            if self.ca is not None:
                context.load_verify_locations(cafile=str(self.ca))
        except (ssl.SSLError, OSError) as exc:
            detail = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            raise InputError(f"TLS certificate, key or CA cannot be loaded ({detail})") from None


class _ServerContext(ssl.SSLContext):
    """An SSLContext whose server-side handshake is bounded in time and whose failures are reported.

    pynetdicom wraps each accepted socket in its accept loop; without a bound, one peer that connects and
    never speaks would hold every other sender back."""

    on_failure: Callable[[str, str], None]

    def wrap_socket(self, sock: socket.socket, *args, **kwargs) -> ssl.SSLSocket:  # noqa: ANN002, ANN003
        previous = sock.gettimeout()
        sock.settimeout(TLS_HANDSHAKE_TIMEOUT_S)
        try:
            peer = sock.getpeername()[0]
        except OSError:
            peer = "?"
        try:
            wrapped = super().wrap_socket(sock, *args, **kwargs)
        except (ssl.SSLError, OSError) as exc:
            self.on_failure(peer, getattr(exc, "reason", None) or type(exc).__name__)
            sock.close()
            raise
        wrapped.settimeout(previous)
        return wrapped
