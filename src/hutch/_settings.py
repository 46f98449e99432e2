"""Connection settings: URL parsing, TLS options, the recovery policy.

Pure logic, no I/O and no pika: everything here can be unit-tested without a broker.
"""

from __future__ import annotations

import os
import random
import ssl
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from hutch._checks import MAX_TIMEOUT

__all__ = [
    "DEFAULT_URL",
    "ENV_PREFIX",
    "URL_ENV",
    "Address",
    "ConnectionSettings",
    "RecoveryPolicy",
    "TlsOptions",
]

#: The broker URL used when none is given and ``HUTCH_URL`` is not set.
DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
#: Settings are read from environment variables named ``HUTCH_<FIELD>``.
ENV_PREFIX = "HUTCH_"
#: The environment variable holding the broker URL.
URL_ENV = "HUTCH_URL"
DEFAULT_PORT = 5672
DEFAULT_TLS_PORT = 5671
#: RabbitMQ 3.13+ limits a message to 16 MiB by default (``max_message_size``).
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024

# the rules of hutch._checks.check_timeout, as pydantic constraints (their errors leave the
# input out, as every settings error does): finite, at most MAX_TIMEOUT
_Seconds = Annotated[float, Field(ge=0, le=MAX_TIMEOUT, allow_inf_nan=False)]
_Timeout = Annotated[float, Field(gt=0, le=MAX_TIMEOUT, allow_inf_nan=False)]


class _Frozen(BaseModel):
    # hide_input_in_errors: a misspelt option (``pasword=...``) or a bad value must not put
    # what was given, possibly a secret, into the error text
    model_config = ConfigDict(
        frozen=True, extra="forbid", arbitrary_types_allowed=True, hide_input_in_errors=True
    )


class Address(_Frozen):
    """One broker address.

    Attributes:
        host: Host name or IP address.
        port: TCP port.
    """

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class TlsOptions(_Frozen):
    """TLS settings for ``amqps://`` connections.

    The server certificate and host name are verified by default against ``ca_file``
    (or the system's trust store when it is None). Turning verification off needs
    the explicitly named ``insecure_skip_verify=True``.

    Attributes:
        ca_file: CA bundle (PEM) that signed the server certificate; None uses the system store.
        cert_file: Client certificate (PEM), for brokers that ask for one.
        key_file: The client certificate's private key (PEM).
        server_hostname: Name to verify the certificate against; defaults to the host connected to.
        insecure_skip_verify: Disable certificate and host name verification. Never in production.
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_hostname: str | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsOptions:
        if self.key_file and not self.cert_file:
            raise ValueError("TLS key_file given without cert_file: pass both or neither")
        return self

    def ssl_context(self) -> ssl.SSLContext:
        """Build the client-side :class:`ssl.SSLContext` these options describe.

        Returns:
            A context that verifies the peer unless ``insecure_skip_verify`` is set.
        """
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        if self.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


class RecoveryPolicy(_Frozen):
    """How a connection recovers after it was lost.

    Delays grow exponentially from ``initial_delay`` by ``multiplier`` up to ``max_delay``,
    each with up to ``jitter`` (a fraction) of random spread so that many clients do not
    reconnect in lockstep. Authentication failures are never retried.

    Attributes:
        enabled: Recover automatically (default) or fail every pending operation at once.
        max_attempts: Connection attempts per outage before giving up; None retries forever.
        initial_delay: Seconds before the first reconnection attempt.
        max_delay: Upper bound of the delay between attempts, in seconds.
        multiplier: Factor by which the delay grows after each failed attempt.
        jitter: Random spread of each delay, as a fraction of it (0 to 1).
    """

    enabled: bool = True
    max_attempts: int | None = Field(default=30, ge=1)
    initial_delay: _Seconds = 0.2
    max_delay: _Seconds = 10.0
    multiplier: float = Field(default=2.0, ge=1.0, allow_inf_nan=False)
    jitter: float = Field(default=0.2, ge=0.0, le=1.0, allow_inf_nan=False)

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """Yield the delay before each reconnection attempt.

        Args:
            rng: Source of randomness for the jitter (for tests); defaults to ``random``.

        Yields:
            Seconds to wait before attempt 1, 2, ... (finite when ``max_attempts`` is set).
        """
        rand = rng.random if rng is not None else random.random
        delay = self.initial_delay
        attempt = 0
        while self.max_attempts is None or attempt < self.max_attempts:
            spread = delay * self.jitter
            yield max(0.0, delay - spread + 2 * spread * rand())
            delay = min(self.max_delay, delay * self.multiplier)
            attempt += 1


class ConnectionSettings(_Frozen):
    """Validated, immutable settings of one logical connection.

    Build them from a URL with :meth:`from_url`; the password is a ``SecretStr`` and never
    appears in ``repr`` or logs.

    Attributes:
        addresses: Broker nodes to try, in order (several for a cluster).
        username: User name.
        password: Password (secret).
        vhost: Virtual host.
        heartbeat: Heartbeat interval in seconds; 0 disables heartbeats.
        connection_name: Client-provided name shown in the broker's management UI.
        tls: TLS options, or None for plain TCP.
        connect_timeout: Seconds allowed for each connection attempt.
        blocked_connection_timeout: Seconds a resource alarm may block the connection before
            pika drops it (it is then recovered).
        publish_blocked_timeout: Seconds ``publish`` waits while the broker blocks publishing
            before raising :class:`~hutch.ConnectionBlocked`.
        max_message_size: Largest body accepted by ``publish``, in bytes.
        recovery: The recovery policy.
        tracing: Record OpenTelemetry traces and metrics when ``opentelemetry-api`` is
            installed (the default); False turns telemetry off for this connection without
            importing OpenTelemetry. ``HUTCH_TRACING=false`` does the same from the
            environment.
        memory: The in-process memory broker's name for a ``memory://NAME`` URL (``""`` for
            ``memory://``), or None for a real broker. The memory broker is for tests only.
        memory_clock: ``"virtual"`` (``memory://NAME?clock=virtual``): the memory broker
            moves time forward to the next deadline whenever every thread that uses it
            waits for one (see docs/testing.md); ``"real"``: real time; None (the
            default): the named broker's, real time for a new one.
    """

    addresses: tuple[Address, ...] = Field(min_length=1)
    username: str = "guest"
    password: SecretStr = SecretStr("guest")
    vhost: str = "/"
    heartbeat: int = Field(default=30, ge=0, le=65535)
    connection_name: str | None = None
    tls: TlsOptions | None = None
    connect_timeout: _Timeout = 10.0
    blocked_connection_timeout: _Timeout = 300.0
    publish_blocked_timeout: _Seconds = 30.0
    max_message_size: int = Field(default=DEFAULT_MAX_MESSAGE_SIZE, gt=0)
    recovery: RecoveryPolicy = RecoveryPolicy()
    tracing: bool = True
    memory: str | None = None
    memory_clock: Literal["real", "virtual"] | None = None

    @field_validator("connection_name")
    @classmethod
    def _name_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("connection_name must not be blank")
        return value

    @classmethod
    def from_url(cls, url: str | Sequence[str], **overrides: Any) -> ConnectionSettings:
        """Parse one ``amqp://`` / ``amqps://`` URL, or several for a cluster.

        The URL form is ``amqp[s]://user:password@host[:port][,host2[:port]...]/vhost?query``;
        the vhost is percent-encoded (``%2F`` is ``/``, an empty path is ``/``). Query
        parameters: ``heartbeat``, ``connection_name``, ``connect_timeout``,
        ``blocked_connection_timeout``, ``max_message_size``, and for TLS ``cafile``,
        ``certfile``, ``keyfile``, ``server_hostname``.

        Args:
            url: One URL, or a sequence of URLs naming nodes of one cluster (credentials,
                vhost and options are taken from the first).
            **overrides: Settings that take precedence over the URL's.

        Returns:
            The validated settings.

        Raises:
            ValueError: The URL is malformed or a setting is invalid.
            TypeError: ``url`` is neither a string nor a sequence of strings.

        Example:
            >>> ConnectionSettings.from_url("amqp://u:p@h1,h2:5673/prod?heartbeat=10").addresses
            (Address(host='h1', port=5672), Address(host='h2', port=5673))
        """
        fields = _url_fields(url)
        if "tls" in overrides and isinstance(overrides["tls"], Mapping):
            overrides["tls"] = TlsOptions(**overrides["tls"])
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def from_environment(
        cls, url: str | Sequence[str] | None = None, **overrides: Any
    ) -> ConnectionSettings:
        """Settings from an explicit URL and options, the ``HUTCH_*`` variables and defaults.

        This is what :class:`~hutch.Connection` and :func:`~hutch.connect` use. Each setting
        comes from the first of: an explicit option (``overrides``), the URL (``url``, else
        the ``HUTCH_URL`` variable, else ``amqp://guest:guest@localhost:5672/``), the
        environment variable ``HUTCH_<FIELD>`` (``HUTCH_HEARTBEAT``, ``HUTCH_USERNAME``,
        ``HUTCH_PASSWORD``, ``HUTCH_VHOST``, ``HUTCH_CONNECTION_NAME``,
        ``HUTCH_CONNECT_TIMEOUT``, ``HUTCH_BLOCKED_CONNECTION_TIMEOUT``,
        ``HUTCH_PUBLISH_BLOCKED_TIMEOUT``, ``HUTCH_MAX_MESSAGE_SIZE``, ``HUTCH_TRACING``),
        the default. A URL sets only what it spells out: ``amqp://rabbit/`` leaves the user,
        password and vhost to the environment.

        Args:
            url: The broker URL(s); None reads ``HUTCH_URL``.
            **overrides: Settings that take precedence over the URL and the environment.

        Returns:
            The validated settings.

        Raises:
            ValueError: A malformed URL, or an invalid option or variable (the error names
                the variable, never its value).
            TypeError: ``url`` is neither a string nor a sequence of strings.

        Example:
            >>> import os
            >>> os.environ["HUTCH_URL"] = "amqp://rabbit:5673/"
            >>> ConnectionSettings.from_environment(heartbeat=5).addresses
            (Address(host='rabbit', port=5673),)
            >>> del os.environ["HUTCH_URL"]
        """
        env = _environment()
        if url is None:
            url = env.pop("url", None) or DEFAULT_URL
        else:
            env.pop("url", None)
        fields = {**env, **_url_fields(url)}
        if "tls" in overrides and isinstance(overrides["tls"], Mapping):
            overrides["tls"] = TlsOptions(**overrides["tls"])
        fields.update(overrides)
        try:
            return cls(**fields)
        except ValidationError as exc:
            from_env = sorted(
                {str(e["loc"][0]) for e in exc.errors() if e["loc"] and e["loc"][0] in env}
                - set(overrides)
            )
            if not from_env:
                raise
            problems = "; ".join(
                f"{ENV_PREFIX}{str(e['loc'][0]).upper()}: {e['msg']}"
                for e in exc.errors()
                if e["loc"] and str(e["loc"][0]) in from_env
            )
            raise ValueError(f"invalid environment variable: {problems}") from None

    def url_for(self, address: Address) -> str:
        """Return a URL for ``address`` with the password masked, for logs and reprs.

        Args:
            address: One of :attr:`addresses`.

        Returns:
            ``amqp://user:***@host:port/vhost``.
        """
        if self.memory is not None:
            clock = "" if self.memory_clock is None else f"?clock={self.memory_clock}"
            return f"memory://{quote(self.memory, safe='')}/{quote(self.vhost, safe='')}{clock}"
        scheme = "amqps" if self.tls else "amqp"
        return (
            f"{scheme}://{quote(self.username, safe='')}:***@{address}/{quote(self.vhost, safe='')}"
        )

    def __repr__(self) -> str:
        if self.memory is not None:
            return f"ConnectionSettings({self.url_for(self.addresses[0])})"
        hosts = ",".join(str(a) for a in self.addresses)
        scheme = "amqps" if self.tls else "amqp"
        return (
            f"ConnectionSettings({scheme}://{self.username}:***@{hosts}/"
            f"{quote(self.vhost, safe='')}, heartbeat={self.heartbeat}, "
            f"connection_name={self.connection_name!r})"
        )

    __str__ = __repr__


class _Environment(BaseSettings):
    """The ``HUTCH_*`` variables (read by pydantic-settings; validated by ConnectionSettings).

    Values stay text here: :class:`ConnectionSettings` converts and checks them, so a
    variable obeys exactly the rules an argument does. Other ``HUTCH_*`` names (the test
    plugin's, an application's) are ignored.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", hide_input_in_errors=True, frozen=True
    )

    url: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    vhost: str | None = None
    heartbeat: str | None = None
    connection_name: str | None = None
    connect_timeout: str | None = None
    blocked_connection_timeout: str | None = None
    publish_blocked_timeout: str | None = None
    max_message_size: str | None = None
    tracing: str | None = None


def _environment() -> dict[str, Any]:
    """The ``HUTCH_*`` settings that are set (an empty variable counts as unset).

    pydantic-settings reads them in ~0.6 ms, more than the rest of a connection's setup: the
    answer is kept for as long as the process's ``HUTCH_*`` variables stay the same.
    """
    # pydantic-settings matches names case-insensitively (case_sensitive=False)
    global _last_environment
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)))
    last = _last_environment  # one read of the shared slot: another thread may replace it
    if last is None or last[0] != key:
        env = _Environment()
        last = _last_environment = (
            key,
            {
                name: value
                for name in _Environment.model_fields
                if (value := getattr(env, name)) is not None
                and (value.get_secret_value() if isinstance(value, SecretStr) else value) != ""
            },
        )
    return dict(last[1])


# the variables as last read, and what they gave
_last_environment: tuple[tuple[tuple[str, str], ...], dict[str, Any]] | None = None


def _url_fields(url: str | Sequence[str]) -> dict[str, Any]:
    """The settings one URL (or a cluster's URLs) spells out, by field name."""
    urls = [url] if isinstance(url, str) else list(url)
    if not urls or not all(isinstance(u, str) for u in urls):
        raise TypeError("url must be an amqp:// URL string or a non-empty list of them")
    parsed = [_parse_url(u) for u in urls]
    first = parsed[0]
    addresses: list[Address] = []
    for p in parsed:
        if p["tls"] != first["tls"]:
            raise ValueError("mixing amqp:// and amqps:// URLs in one connection")
        if ("memory" in p) != ("memory" in first) or ("memory" in p and len(parsed) > 1):
            raise ValueError("a memory:// URL names one in-process broker: pass it alone")
        addresses.extend(p["addresses"])
    fields: dict[str, Any] = {k: v for k, v in first.items() if k not in {"addresses", "tls"}}
    fields["addresses"] = tuple(addresses)
    if first["tls"]:
        fields["tls"] = TlsOptions(**first["tls_options"])
    fields.pop("tls_options", None)
    return fields


_QUERY_FLOATS = {"connect_timeout", "blocked_connection_timeout", "publish_blocked_timeout"}
_QUERY_INTS = {"heartbeat", "max_message_size"}
_QUERY_TLS = {
    "cafile": "ca_file",
    "certfile": "cert_file",
    "keyfile": "key_file",
    "server_hostname": "server_hostname",
}


_NEEDS_ENCODING = (
    "the AMQP URL has an '@' after its host part: a password or user name containing "
    "'/', '?', '#' or '@' must be percent-encoded, e.g. with urllib.parse.quote(password, "
    "safe=''); so must an '@' in the vhost or in a query value (%40)"
)


def _parse_url(url: str) -> dict[str, Any]:
    # No error raised here quotes any part of the URL but the scheme and option names: a
    # password that was not percent-encoded would otherwise be read as host, port, vhost
    # or query, and echoed in the error.
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError(
            "malformed AMQP URL (not quoted here: it may hold a password); percent-encode "
            "special characters in the user name and password with urllib.parse.quote(..., "
            "safe='')"
        ) from None
    if "@" in parts.path or "@" in parts.query or "@" in parts.fragment:
        raise ValueError(_NEEDS_ENCODING)
    if parts.scheme not in ("amqp", "amqps", "memory"):
        raise ValueError(
            f"unsupported URL scheme {parts.scheme!r}: use amqp://user:pass@host:5672/vhost, "
            "amqps:// for TLS, or memory:// for the in-process test broker"
        )
    tls = parts.scheme == "amqps"
    default_port = DEFAULT_TLS_PORT if tls else DEFAULT_PORT
    netloc = parts.netloc
    userinfo, _, hostlist = netloc.rpartition("@")
    out: dict[str, Any] = {"tls": tls, "tls_options": {}}
    if parts.scheme == "memory":
        # memory://NAME/vhost: an in-process broker (tests only); no credentials, no hosts
        if userinfo:
            raise ValueError("a memory:// URL takes no user name or password: memory://NAME")
        out["memory"] = unquote(hostlist)
        userinfo, hostlist = "", ""
    if userinfo:
        user, sep, password = userinfo.partition(":")
        out["username"] = unquote(user)
        if sep:
            out["password"] = SecretStr(unquote(password))
    addresses = []
    for item in hostlist.split(","):
        item = item.strip()
        if not item:
            continue
        host, port = _split_host_port(item, default_port)
        addresses.append(Address(host=host, port=port))
    if not addresses:
        addresses.append(Address(host="localhost", port=default_port))
    out["addresses"] = addresses
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if path:  # an empty path is the default vhost "/", or HUTCH_VHOST's
        out["vhost"] = unquote(path)
    for key, values in parse_qs(parts.query, keep_blank_values=True).items():
        value = values[-1]
        if key in _QUERY_INTS:
            out[key] = _number(key, value, int)
        elif key in _QUERY_FLOATS:
            out[key] = _number(key, value, float)
        elif key == "connection_name":
            out[key] = value
        elif key == "clock" and parts.scheme == "memory":
            if value not in ("real", "virtual"):
                raise ValueError(f"URL option clock={value!r}: use clock=real or clock=virtual")
            out["memory_clock"] = value
        elif key in _QUERY_TLS:
            if not tls:
                raise ValueError(f"URL option {key!r} needs an amqps:// URL")
            out["tls_options"][_QUERY_TLS[key]] = value
        else:
            raise ValueError(
                f"unknown URL option {key!r}; known: "
                + ", ".join(
                    sorted(_QUERY_INTS | _QUERY_FLOATS | set(_QUERY_TLS) | {"connection_name"})
                )
            )
    return out


def _split_host_port(item: str, default_port: int) -> tuple[str, int]:
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif item.count(":") == 1:
        host, _, port_text = item.partition(":")
    else:
        host, port_text = item, ""
    if not port_text:
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit()):
        # not quoted: without a user name the "port" may be a password (amqp://user:pass)
        raise ValueError(
            "the port in the AMQP URL is not a number: write amqp://user:password@host:port/"
            "vhost, with the user name and password percent-encoded (urllib.parse.quote(..., "
            "safe=''))"
        )
    return host, int(port_text)


def _number(key: str, text: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"URL option {key}={text!r} is not a number") from None
