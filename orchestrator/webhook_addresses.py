"""Where a webhook may send: never into the service's own networks.

The API process POSTs to the URLs tenants register and shows each attempt's outcome, so a URL
pointing at 127.0.0.1:5432, a cloud metadata service or a 10.x host would let a tenant reach
(and port-scan) what only the service should. An address is refused when it is not publicly
routable (loopback, private, link-local, multicast, shared, reserved, unspecified), judged on the
IPv4 address inside an IPv4-mapped, 6to4 or NAT64 IPv6 address too, unless it lies in one of the
networks the operator allows (RELAYTUNE_WEBHOOK_ALLOWED_NETWORKS).

A URL is checked when the webhook is created (a literal address, or a name that resolves now) and
again before every send (the name may resolve elsewhere by then: DNS rebinding).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import urlsplit

from orchestrator.errors import InvalidRequest
from orchestrator.settings import get_settings

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

ALLOW_SETTING = "RELAYTUNE_WEBHOOK_ALLOWED_NETWORKS"
SCHEMES = {"http": 80, "https": 443}
# RFC 6598: carrier-grade NAT, the provider's side of the network; Python calls it neither
# private nor global.
SHARED = ip_network("100.64.0.0/10")
# RFC 6052's well-known NAT64 prefix: the last 32 bits are the IPv4 address reached.
NAT64 = ip_network("64:ff9b::/96")


class Undeliverable(Exception):
    """A send that must not be made; the message says why, for the delivery's record."""


def allowed_networks() -> Sequence[Network]:
    return get_settings().webhook_allowed_networks


def embedded_ipv4(address: Address) -> IPv4Address | None:
    """The IPv4 address that an IPv6 address reaches: IPv4-mapped, 6to4 or NAT64."""
    if isinstance(address, IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: Address, allowed: Sequence[Network]) -> str | None:
    """Why a webhook may not send to `address` ("is a loopback address"), or None."""
    inner = embedded_ipv4(address)
    if any(a in network for network in allowed for a in (address, inner) if a is not None):
        return None
    judged = inner or address
    if judged.is_unspecified:
        return "is unspecified"
    if judged.is_loopback:
        return "is a loopback address"
    if judged.is_link_local:
        return "is link-local (where cloud metadata services answer)"
    if judged.is_multicast:
        return "is a multicast address"
    if isinstance(judged, IPv4Address) and judged in SHARED:
        return f"is in the shared (carrier-grade NAT) range {SHARED}"
    if judged.is_reserved:
        return "is in a reserved range"
    if judged.is_private:
        return "is in a private network"
    if isinstance(judged, IPv6Address) and judged.is_site_local:
        return "is a site-local address"
    if not judged.is_global:
        return "is not publicly routable"
    return None


def literal_address(host: str) -> Address | None:
    try:
        return ip_address(host)
    except ValueError:
        return None


def resolve(host: str, port: int) -> list[Address]:
    """The host's addresses in the order the system resolver prefers; [] when it does not
    resolve (now)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):  # gaierror, or a name IDNA cannot encode
        return []
    addresses: list[Address] = []
    for _family, _type, _proto, _name, sockaddr in found:
        # An IPv6 sockaddr may carry a zone ("fe80::1%eth0"); the address is what is judged.
        address = ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def _described(address: Address) -> str:
    inner = embedded_ipv4(address)
    return f"{address} (IPv4 {inner})" if inner is not None else str(address)


def check_new_url(url: str) -> None:
    """Refuse a webhook URL that leads to a refused address (its own, or one its name resolves to
    now), naming `url` and why.
    A name that does not resolve now is accepted: it is checked again before every send."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise InvalidRequest(
            "a webhook's url must be an http or https URL with a host", param="url"
        )
    allowed = allowed_networks()
    literal = literal_address(parts.hostname)
    if literal is not None:
        why = refusal(literal, allowed)
        if why:
            raise InvalidRequest(
                _create_refusal(f"the address {_described(literal)} {why}"), param="url"
            )
        return
    try:
        port = parts.port or SCHEMES[parts.scheme]
    except ValueError as exc:
        raise InvalidRequest(f"a webhook's url has a bad port: {exc}", param="url") from exc
    for address in resolve(parts.hostname, port):
        why = refusal(address, allowed)
        if why:
            # Any refused address is refused at send time too, so the webhook could never
            # deliver reliably: say so now.
            where = f"{parts.hostname} resolves to {_described(address)}, which {why}"
            raise InvalidRequest(_create_refusal(where), param="url")


def _create_refusal(where: str) -> str:
    return (
        f"{where}; webhooks may not send into the service's own networks "
        f"(the operator can allow a network with {ALLOW_SETTING})"
    )


def send_address(host: str, port: int) -> Address:
    """The address to send to: every address the host resolves to right now must be allowed
    (one refused address is enough to refuse, since a name can flip between answers), and the
    connection goes to the address checked here, not to a fresh resolution."""
    allowed = allowed_networks()
    literal = literal_address(host)
    addresses = [literal] if literal is not None else resolve(host, port)
    if not addresses:
        raise Undeliverable(f"the webhook's host {host} does not resolve")
    for address in addresses:
        why = refusal(address, allowed)
        if why:
            of = "" if literal is not None else f" (of {host})"
            raise Undeliverable(f"the webhook's address {_described(address)}{of} {why}; refused")
    return addresses[0]
