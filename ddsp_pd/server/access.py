"""Who may talk to the server and which files it may open for them.

Off loopback the server must be told which networks to serve (``--allow``); datagrams from
anywhere else are dropped unanswered. Paths that clients send (``/ddsp/input``,
``/ddsp/checkpoint``) can be confined to root folders (``--root``): a path counts as inside
only once resolved (symlinks followed, ``..`` removed), so neither can lead out.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path

from ddsp_pd.errors import DdspPdError
from ddsp_pd.server.pacing import DropCounter

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ListenError(DdspPdError):
    """The server may not listen where it was asked to (off loopback without ``--allow``)."""

    code = "listen"


def parse_network(text: str) -> Network:
    """A network in CIDR notation (a bare address is a /32 or /128 network).

    Raises:
        ValueError: not an address or a network.
    """
    try:
        return ipaddress.ip_network(str(text).strip(), strict=False)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an address or a network like 192.168.1.0/24") from exc


def parse_networks(items: Iterable[str | Network] | None) -> list[Network]:
    """Networks from strings or network objects.

    Raises:
        ListenError: one of them is not a network.
    """
    networks = []
    for item in items or ():
        if isinstance(item, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            networks.append(item)
            continue
        try:
            networks.append(parse_network(item))
        except ValueError as exc:
            raise ListenError(f"--allow: {exc}") from exc
    return networks


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    with contextlib.suppress(ValueError):
        ip = ipaddress.ip_address(host.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        return ip
    return None


def _resolve_host(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address of ``host`` (an address or a name; ``""`` is every interface), or None."""
    if host == "":
        return ipaddress.IPv4Address("0.0.0.0")
    ip = _ip(host)
    if ip is None:
        with contextlib.suppress(OSError, UnicodeError):
            ip = _ip(socket.gethostbyname(host))
    return ip


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` (an address or a name) reaches only this machine.

    A name that does not resolve counts as off loopback; ``""`` and ``0.0.0.0`` mean every
    interface.
    """
    ip = _resolve_host(host)
    return ip is not None and ip.is_loopback


def check_listen(host: str, networks: Sequence[Network]) -> None:
    """Refuse to listen off loopback unless some networks are allowed.

    A name that does not resolve passes: binding to it fails with its own message.

    Raises:
        ListenError: ``host`` is not a loopback address and ``networks`` is empty.
    """
    ip = _resolve_host(host)
    if not networks and ip is not None and not ip.is_loopback:
        raise ListenError(
            f"listening on {host or '0.0.0.0'} (not loopback) needs --allow CIDR, the networks "
            "whose senders are served (e.g. --allow 192.168.1.0/24 --allow 127.0.0.1)"
        )


class SenderFilter:
    """Admits datagrams from the allowed networks (every sender when none are given)."""

    def __init__(self, networks: Sequence[Network] = ()) -> None:
        self.networks = tuple(networks)
        self.dropped = DropCounter(log, "datagrams from senders outside --allow")

    def admits(self, host: str) -> bool:
        """Whether a datagram from ``host`` is served; a refused one is counted."""
        if not self.networks:
            return True
        ip = _ip(host)
        if ip is not None and any(ip in net for net in self.networks if ip.version == net.version):
            return True
        self.dropped.drop(host)
        return False

    def describe(self) -> str:
        """The allowed networks, for the start-up line."""
        return ", ".join(str(n) for n in self.networks) or "every sender"


def _unique(paths: Iterable[Path]) -> tuple[Path, ...]:
    seen: dict[Path, None] = {}
    for path in paths:
        seen.setdefault(path, None)
    return tuple(seen)


class PathRoots:
    """Folders that client-given paths must resolve into."""

    def __init__(self, folders: Iterable[str | os.PathLike[str]]) -> None:
        self.folders = _unique(Path(f).expanduser().resolve() for f in folders)

    def contains(self, resolved: Path) -> bool:
        """Whether an already resolved path is one of the roots or inside one."""
        return any(resolved == root or resolved.is_relative_to(root) for root in self.folders)

    def resolve(self, path: Path) -> Path | None:
        """``path`` resolved (symlinks followed, ``..`` removed) if that is inside a root.

        Raises:
            OSError, RuntimeError, ValueError: the path cannot be resolved (a symlink loop, a
            NUL byte...); callers treat that like a path that is not there.
        """
        resolved = path.resolve()
        return resolved if self.contains(resolved) else None

    def describe(self) -> str:
        """The roots, for the start-up line."""
        return ", ".join(str(f) for f in self.folders)


def effective_roots(
    roots: Sequence[str | os.PathLike[str]] | None,
    off_loopback: bool,
    own_folders: Iterable[str | os.PathLike[str]],
) -> PathRoots | None:
    """The roots the server enforces: None (every path) on loopback without ``--root``.

    With ``--root`` the given folders, and without it off loopback the user's home, are
    joined by the server's own folders (checkpoint folders, output folder), so named
    checkpoints and earlier results stay usable.
    """
    if roots:
        chosen: list[str | os.PathLike[str]] = list(roots)
    elif off_loopback:
        chosen = [Path.home()]
    else:
        return None
    return PathRoots([*chosen, *own_folders])
