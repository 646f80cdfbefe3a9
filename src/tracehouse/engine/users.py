"""Users, settings profiles, constraints and quotas from a ClickHouse users file.

The file is the one a ClickHouse server loads (`users.xml` or a `users.d/` fragment): `<users>`,
`<profiles>` (with `<constraints>` and `<profile>` inheritance) and `<quotas>`, under a
`<clickhouse>` root. Values may come from the environment with ClickHouse's `from_env` attribute,
so the same file carries no secrets. What the engine does not implement (host-name networks, grants,
row policies) makes loading fail or is named in a warning, never silently ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from tracehouse.engine import errors
from tracehouse.engine.errors import EngineError
from tracehouse.errors import ConfigError

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# User elements the engine knows it does not enforce: loading warns about them.
UNENFORCED_USER_ELEMENTS = frozenset({"grants", "databases", "allow_databases", "access_management", "settings"})
_USER_ELEMENTS = frozenset(
    {
        "password",
        "password_sha256_hex",
        "password_double_sha1_hex",
        "no_password",
        "networks",
        "profile",
        "quota",
        "default_database",
    }
)
QUOTA_RESOURCES = frozenset(
    {
        "queries",
        "query_selects",
        "query_inserts",
        "errors",
        "result_rows",
        "result_bytes",
        "read_rows",
        "read_bytes",
        "written_bytes",
        "execution_time",
    }
)


@dataclass(frozen=True)
class Constraint:
    """ClickHouse's <constraints> entry for one setting."""

    min: str | None = None
    max: str | None = None
    fixed: bool = False  # <readonly/> or <const/>: the setting cannot be changed
    changeable_in_readonly: bool = False


@dataclass(frozen=True)
class Profile:
    name: str
    settings: Mapping[str, str] = field(default_factory=dict)
    constraints: Mapping[str, Constraint] = field(default_factory=dict)


@dataclass(frozen=True)
class QuotaInterval:
    duration_s: int
    limits: Mapping[str, float]  # resource -> maximum per interval (0 = unlimited, dropped at load)


@dataclass(frozen=True)
class Quota:
    name: str
    intervals: tuple[QuotaInterval, ...] = ()


@dataclass(frozen=True)
class User:
    name: str
    password_kind: str  # "none", "plain", "sha256", "double_sha1"
    password: str  # the plain password or the hex digest
    networks: tuple[IpNetwork, ...] | None  # None = from anywhere
    profile: Profile
    quota: Quota | None
    default_database: str | None = None

    def password_matches(self, given: str) -> bool:
        if self.password_kind == "none":
            return given == ""
        if self.password_kind == "plain":
            return hmac.compare_digest(given.encode(), self.password.encode())
        if self.password_kind == "sha256":
            return hmac.compare_digest(hashlib.sha256(given.encode()).hexdigest(), self.password.lower())
        digest = hashlib.sha1(hashlib.sha1(given.encode()).digest()).hexdigest()
        return hmac.compare_digest(digest, self.password.lower())

    def allowed_from(self, address: str | None) -> bool:
        if self.networks is None:
            return True
        if address is None:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        # As in ClickHouse, ::/0 covers IPv4 clients too (by their IPv4-mapped form), and the reverse.
        forms: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
        if isinstance(ip, ipaddress.IPv4Address):
            forms.append(ipaddress.IPv6Address(f"::ffff:{ip}"))
        elif ip.ipv4_mapped is not None:
            forms.append(ip.ipv4_mapped)
        return any(form in net for form in forms for net in self.networks if form.version == net.version)


@dataclass(frozen=True)
class UsersConfig:
    users: Mapping[str, User]
    source: str
    warnings: tuple[str, ...] = ()

    def authenticate(self, name: str, password: str, address: str | None) -> User:
        """The user, or ClickHouse's AUTHENTICATION_FAILED (which never says which part was wrong)."""
        user = self.users.get(name)
        if user is None or not user.password_matches(password) or not user.allowed_from(address):
            raise EngineError(
                errors.AUTHENTICATION_FAILED,
                f"{name}: Authentication failed: password is incorrect, or there is no user with such name",
            )
        return user


DEFAULT_USERS_XML = """<clickhouse>
  <users><default><password></password><profile>default</profile><quota>default</quota></default></users>
  <profiles><default/></profiles>
  <quotas><default/></quotas>
</clickhouse>"""


def load_users(path: Path | None) -> UsersConfig:
    """Parse a users file (None: ClickHouse's stock `default` user, no password, no limits)."""
    if path is None:
        return _parse(ET.fromstring(DEFAULT_USERS_XML), "built-in default user")
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise ConfigError(f"cannot read users file {path}: {exc}") from None
    return _parse(root, str(path))


def _parse(root: ET.Element, source: str) -> UsersConfig:
    if root.tag not in ("clickhouse", "yandex"):
        raise ConfigError(f"users file {source}: the root element must be <clickhouse>, not <{root.tag}>")
    profiles = _profiles(root.find("profiles"), source)
    quotas = _quotas(root.find("quotas"), source)
    users: dict[str, User] = {}
    warnings: list[str] = []
    section = root.find("users")
    for element in list(section) if section is not None else []:
        users[element.tag] = _user(element, profiles, quotas, source, warnings)
    if not users:
        raise ConfigError(f"users file {source}: no users defined under <users>")
    return UsersConfig(users, source, tuple(warnings))


def _text(element: ET.Element | None, source: str) -> str:
    """An element's value, taken from the environment when it says from_env (as ClickHouse does)."""
    if element is None:
        return ""
    for unsupported in ("incl", "from_zk"):
        if unsupported in element.attrib:
            raise ConfigError(f"users file {source}: <{element.tag} {unsupported}=...> is not supported")
    variable = element.get("from_env")
    if variable is not None:
        value = os.environ.get(variable)
        if value is None:
            raise ConfigError(f"users file {source}: <{element.tag}> reads {variable}, which is not set")
        return value
    return (element.text or "").strip()


def _profiles(section: ET.Element | None, source: str) -> dict[str, Profile]:
    raw = {element.tag: element for element in list(section if section is not None else [])}
    resolved: dict[str, Profile] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> Profile:
        if name in resolved:
            return resolved[name]
        if name not in raw:
            raise ConfigError(f"users file {source}: profile {name!r} is not defined")
        if name in chain:
            raise ConfigError(f"users file {source}: profile {name!r} inherits from itself")
        settings: dict[str, str] = {}
        constraints: dict[str, Constraint] = {}
        for child in list(raw[name]):
            if child.tag == "profile":
                parent = resolve(_text(child, source), (*chain, name))
                settings.update(parent.settings)
                constraints.update(parent.constraints)
            elif child.tag == "constraints":
                constraints.update(_constraints(child, source))
            else:
                settings[child.tag] = _text(child, source)
        resolved[name] = Profile(name, settings, constraints)
        return resolved[name]

    for name in raw:
        resolve(name, ())
    return resolved


def _constraints(section: ET.Element, source: str) -> dict[str, Constraint]:
    found = {}
    for setting in list(section):
        parts = {child.tag: child for child in setting}
        found[setting.tag] = Constraint(
            min=_text(parts["min"], source) if "min" in parts else None,
            max=_text(parts["max"], source) if "max" in parts else None,
            fixed="readonly" in parts or "const" in parts,
            changeable_in_readonly="changeable_in_readonly" in parts,
        )
    return found


def _quotas(section: ET.Element | None, source: str) -> dict[str, Quota]:
    quotas = {}
    for element in list(section if section is not None else []):
        intervals = []
        for interval in element.findall("interval"):
            duration = int(_text(interval.find("duration"), source) or 0)
            limits = {}
            for child in interval:
                if child.tag in ("duration", "randomize"):
                    continue
                if child.tag not in QUOTA_RESOURCES:
                    raise ConfigError(f"users file {source}: quota {element.tag!r}: unknown resource <{child.tag}>")
                value = float(_text(child, source) or 0)
                if value > 0:
                    limits[child.tag] = value
            if duration > 0 and limits:
                intervals.append(QuotaInterval(duration, limits))
        quotas[element.tag] = Quota(element.tag, tuple(intervals))
    return quotas


def _user(
    element: ET.Element, profiles: dict[str, Profile], quotas: dict[str, Quota], source: str, warnings: list[str]
) -> User:
    name = element.tag
    kind, password = _password(element, source)
    profile_name = _text(element.find("profile"), source) or "default"
    if profile_name not in profiles:
        raise ConfigError(f"users file {source}: user {name!r} uses profile {profile_name!r}, which is not defined")
    quota_name = _text(element.find("quota"), source)
    if quota_name and quota_name not in quotas:
        raise ConfigError(f"users file {source}: user {name!r} uses quota {quota_name!r}, which is not defined")
    ignored = sorted({child.tag for child in element} & UNENFORCED_USER_ELEMENTS)
    if ignored:
        warnings.append(f"user {name!r}: <{'>, <'.join(ignored)}> not enforced by the engine")
    unknown = sorted({child.tag for child in element} - _USER_ELEMENTS - UNENFORCED_USER_ELEMENTS)
    if unknown:
        raise ConfigError(f"users file {source}: user {name!r}: unsupported <{'>, <'.join(unknown)}>")
    return User(
        name=name,
        password_kind=kind,
        password=password,
        networks=_networks(element.find("networks"), name, source),
        profile=profiles[profile_name],
        quota=quotas.get(quota_name) if quota_name else None,
        default_database=_text(element.find("default_database"), source) or None,
    )


def _password(element: ET.Element, source: str) -> tuple[str, str]:
    for tag, kind in (("password_sha256_hex", "sha256"), ("password_double_sha1_hex", "double_sha1")):
        found = element.find(tag)
        if found is not None:
            digest = _text(found, source)
            if len(digest) not in (64, 40) or any(c not in "0123456789abcdefABCDEF" for c in digest):
                raise ConfigError(f"users file {source}: user {element.tag!r}: <{tag}> is not a hex digest")
            return kind, digest
    found = element.find("password")
    if found is not None:
        value = _text(found, source)
        return ("plain", value) if value else ("none", "")
    return "none", ""


def _networks(section: ET.Element | None, user: str, source: str) -> tuple[IpNetwork, ...] | None:
    if section is None:
        return None
    networks = []
    for child in section:
        if child.tag != "ip":
            raise ConfigError(
                f"users file {source}: user {user!r}: <networks><{child.tag}> is not supported (use <ip>)"
            )
        try:
            networks.append(ipaddress.ip_network(_text(child, source), strict=False))
        except ValueError as exc:
            raise ConfigError(f"users file {source}: user {user!r}: {exc}") from None
    return tuple(networks)


def cap_threads(config: UsersConfig, cores: int) -> UsersConfig:
    """Profiles' `max_threads` no larger than this machine's cores (ClickHouse's own default). A users
    file is written for the servers it is deployed to; on a smaller machine a query with more threads
    than cores only waits on itself and, beside it, everything else (at max_threads 4 on 2 cores the
    interactive reads' idle p95 was up to 22% higher and their CPU wait 10x that at 2)."""

    def capped(profile: Profile) -> Profile:
        value = profile.settings.get("max_threads")
        try:
            wanted = int(float(value)) if value is not None else 0
        except ValueError:  # 'auto': the number of cores already
            return profile
        if wanted <= cores:
            return profile
        return replace(profile, settings={**profile.settings, "max_threads": str(cores)})

    users = {name: replace(user, profile=capped(user.profile)) for name, user in config.users.items()}
    return replace(config, users=users)
