"""PostgreSQL storage URLs: the evflow-only ``schema`` parameter, the schema name's
rules, and the URL shown in messages (the password left out)."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = ["DEFAULT_SCHEMA", "check_schema", "pop_schema", "redact"]

DEFAULT_SCHEMA = "evflow"
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def check_schema(schema: str) -> str:
    """``schema``, or ``ValueError`` when it is not a name the store can quote safely."""
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(
            f"invalid PostgreSQL schema name {schema!r}: use letters, digits and '_', "
            "not starting with a digit, at most 63 characters"
        )
    return schema


def pop_schema(dsn: str) -> tuple[str, str | None]:
    """Split the evflow-only ``schema`` query parameter (asyncpg would refuse it) off a URI."""
    if "://" not in dsn:
        return dsn, None
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in query if k == "schema"]
    if not schemas:
        return dsn, None
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return _unsplit(parts.scheme, parts.netloc, parts.path, rest, parts.fragment), schemas[-1]


def redact(dsn: str, schema: str) -> str:
    """The dsn without its password, naming the schema unless it is the default."""
    if "://" not in dsn:  # libpq key=value form
        dsn = re.sub(r"\s*\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S*)", "", dsn)
        return dsn if schema == DEFAULT_SCHEMA else f"{dsn} schema={schema}"
    parts = urlsplit(dsn)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}@{hosts}" if at else hosts
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() != "password"]
    if schema != DEFAULT_SCHEMA:
        query.append(("schema", schema))
    return _unsplit(parts.scheme, netloc, parts.path, urlencode(query), parts.fragment)


def _unsplit(scheme: str, netloc: str, path: str, query: str, fragment: str) -> str:
    # urlunsplit would drop the empty authority of "postgresql:///db?host=/socket".
    return (
        f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "") + (f"#{fragment}" if fragment else "")
    )
