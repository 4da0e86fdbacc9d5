"""Redis deployments by URL: one server, a Redis Cluster, or a primary found
through Sentinel. Each driver opens the client of its own library from the
parsed :class:`RedisTarget`.

``redis://`` / ``rediss://`` / ``unix://``
    One server.
``redis+cluster://[user:password@]host:port[,host:port...][?options]``
    Redis Cluster; every host is a startup node. ``rediss+cluster://`` for TLS.
``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``
    The primary of ``service`` as the Sentinels at the given addresses name
    it; the user and password are the data nodes'. ``?sentinel_password=``
    for Sentinels that need one.

Every form takes ``?driver=coredis`` or ``?driver=redis-py`` to choose the
client library (``_driver``); other query options go to that library.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ..._errors import InvalidInputError


class Topology(enum.Enum):
    SINGLE = "single"
    CLUSTER = "cluster"
    SENTINEL = "sentinel"


SCHEMES = {
    "redis": Topology.SINGLE,
    "rediss": Topology.SINGLE,
    "unix": Topology.SINGLE,
    "redis+cluster": Topology.CLUSTER,
    "rediss+cluster": Topology.CLUSTER,
    "redis+sentinel": Topology.SENTINEL,
}


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis URL: what to connect to, and how."""

    url: str
    topology: Topology
    hosts: tuple[tuple[str, int], ...] = ()
    username: str | None = None
    password: str | None = None
    service: str = ""
    db: int = 0
    options: dict[str, str] = field(default_factory=dict)
    driver: str = "auto"
    """The ``driver`` query option: which client library to use."""

    @property
    def where(self) -> str:
        """Where it points, without credentials (for messages and reprs)."""
        scheme = urlsplit(self.url).scheme
        if self.topology is Topology.SINGLE:
            parts = urlsplit(self.url)
            if scheme == "unix":
                return f"unix://{parts.path}"
            return f"{scheme}://{parts.hostname}:{parts.port or 6379}"
        hosts = ",".join(f"{host}:{port}" for host, port in self.hosts)
        suffix = f"/{self.service}" if self.topology is Topology.SENTINEL else ""
        return f"{scheme}://{hosts}{suffix}"


def parse_url(url: str) -> RedisTarget:
    """Check a Redis URL and split it into its parts.

    :raises ~replayhub.InvalidInputError: when it is not one of the shapes
        above.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidInputError(f"malformed Redis URL {url!r}: {exc}") from exc
    # ?driver= is replayhub's, not the client library's: taken out here.
    query = parse_qsl(parts.query, keep_blank_values=True)
    driver = dict(query).get("driver", "auto")
    if driver != "auto":
        parts = parts._replace(query=urlencode([item for item in query if item[0] != "driver"]))
        url = urlunsplit(parts)
    topology = SCHEMES.get(parts.scheme)
    if topology is None:
        raise InvalidInputError(f"not a Redis URL: {url!r}")
    if topology is Topology.SINGLE:
        if parts.scheme != "unix" and not parts.hostname:
            raise InvalidInputError(f"Redis URL has no host: {url!r}")
        try:
            parts.port  # noqa: B018 - validates the port
        except ValueError as exc:
            raise InvalidInputError(f"bad port in Redis URL {url!r}") from exc
        return RedisTarget(url, topology, driver=driver)

    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    hosts = tuple(_host_port(item, url) for item in hostlist.split(","))
    path = [segment for segment in parts.path.split("/") if segment]
    service, db = "", 0
    if topology is Topology.SENTINEL:
        if not path or len(path) > 2:
            raise InvalidInputError(f"Sentinel URL needs /service[/db]: {url!r}")
        service = unquote(path[0])
        db = _db(path[1] if len(path) == 2 else "0", url)
    elif path:
        raise InvalidInputError(f"a Redis Cluster URL takes no path (no databases): {url!r}")
    return RedisTarget(
        url,
        topology,
        hosts=hosts,
        username=unquote(username) or None,
        password=unquote(password) or None,
        service=service,
        db=db,
        options=dict(parse_qsl(parts.query)),
        driver=driver,
    )


def _host_port(item: str, url: str) -> tuple[str, int]:
    parts = urlsplit(f"//{item}")
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidInputError(f"bad port in Redis URL {url!r}") from exc
    if not parts.hostname or port is None:
        raise InvalidInputError(f"every host needs host:port in Redis URL {url!r}")
    return parts.hostname, port


def _db(text: str, url: str) -> int:
    if not text.isdigit():
        raise InvalidInputError(f"bad database number in Redis URL {url!r}")
    return int(text)


#: Connections per server (per node on a cluster) a hub's client may hold:
#: one for Pub/Sub, the rest for commands.
MAX_CONNECTIONS = 4
