"""Fetching a URL someone else gave us without letting them reach inside our network (SSRF).

Every hop (the URL, then each redirect, at most MAX_REDIRECTS) is checked the same way:
- scheme http or https;
- the host is resolved here, and every address it resolves to must be public: loopback, private, shared
  (100.64/10), link-local (169.254.169.254, the cloud metadata address), multicast, unspecified and reserved
  ranges are refused, IPv4 and IPv6 alike, IPv4-mapped and 6to4/Teredo-embedded IPv4 included. Spellings such
  as `localhost`, `0x7f000001` or `[::ffff:127.0.0.1]` resolve to such addresses and are refused with them;
- the request then goes to the address that was checked (the URL's host is kept in the Host header and for
  TLS), so a DNS answer that changes between the check and the connection (rebinding) cannot redirect it.

A refused URL raises UrlForbidden before anything is sent, with the same message whatever is listening there:
nothing tells an internal port that is open from one that is closed. `allow_private=True` (`--allow-private-urls`)
turns the address check off for catalogs and clients on an intranet.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit

import httpx

MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)


class UrlForbidden(Exception):
    """The URL is not fetched: not http(s), or its host is (or resolves to) an address inside the network."""


def forbidden_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None and forbidden_address(embedded):
            return True
    return not address.is_global or address.is_multicast or address.is_reserved or address.is_unspecified


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (a literal address gives itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise httpx.ConnectError(f"cannot resolve {host}") from error
    return list(dict.fromkeys(info[4][0] for info in infos))


def pin(url: str, allow_private: bool = False) -> tuple[str, dict, dict]:
    """(the URL with its host replaced by a checked address, headers, request extensions) for one hop."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise UrlForbidden(f"{url[:100]!r} is not an http(s) URL")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    addresses = resolve(host, port)
    if not allow_private:
        for text in addresses:
            if forbidden_address(ipaddress.ip_address(text.split("%")[0])):
                raise UrlForbidden(f"{host} is, or resolves to, an address inside the network; not fetched")
    chosen = addresses[0]
    literal = f"[{chosen}]" if ":" in chosen else chosen
    netloc = literal + (f":{parts.port}" if parts.port else "")
    host_header = host if not parts.port else f"{host}:{parts.port}"
    if ":" in host and not host.startswith("["):
        host_header = f"[{host}]" + (f":{parts.port}" if parts.port else "")
    extensions = {"sni_hostname": host} if parts.scheme.lower() == "https" else {}
    return urlunsplit(parts._replace(netloc=netloc)), {"Host": host_header}, extensions


def next_hop(url: str, response: httpx.Response) -> str | None:
    """The absolute URL a redirect points to, or None when the response is not a redirect."""
    if response.status_code not in REDIRECTS or "location" not in response.headers:
        return None
    return str(httpx.URL(url).join(response.headers["location"]))


class SafeClient:
    """httpx.Client.stream with every hop checked and pinned (the client must not follow redirects itself)."""

    def __init__(self, client: httpx.Client, allow_private: bool = False):
        self.client, self.allow_private = client, allow_private

    def open(self, url: str) -> httpx.Response:
        """The final response (open: read it, then close it)."""
        for _ in range(MAX_REDIRECTS + 1):
            pinned, headers, extensions = pin(url, self.allow_private)
            request = self.client.build_request("GET", pinned, headers=headers, extensions=extensions)
            response = self.client.send(request, stream=True)
            target = next_hop(url, response)
            if target is None:
                return response
            response.close()
            url = target
        raise httpx.TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")


class AsyncSafeClient:
    def __init__(self, client: httpx.AsyncClient, allow_private: bool = False):
        self.client, self.allow_private = client, allow_private

    async def open(self, url: str) -> httpx.Response:
        for _ in range(MAX_REDIRECTS + 1):
            pinned, headers, extensions = await asyncio.to_thread(pin, url, self.allow_private)  # DNS blocks
            request = self.client.build_request("GET", pinned, headers=headers, extensions=extensions)
            response = await self.client.send(request, stream=True)
            target = next_hop(url, response)
            if target is None:
                return response
            await response.aclose()
            url = target
        raise httpx.TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")
