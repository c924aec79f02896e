"""Relations a failed release created, which ``pg_restore --clean`` cannot get past.

``--clean`` drops only what the dump contains. A table the failed release added with a foreign
key to an old table (or a view over one) then blocks the drop of that old table, and the restore
fails. Before restoring, every table, view, materialized view, sequence and foreign table that the
dump does not contain is dropped (with what depends on it) from the schemas the dump covers.
Dropping a relation the dump does contain would be harmless too: the restore recreates it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

_RELATION = re.compile(
    r"^\d+; \d+ \d+ "
    r"(?:TABLE(?! DATA )|VIEW|MATERIALIZED VIEW(?! DATA )|SEQUENCE(?! SET | OWNED BY )"
    r"|FOREIGN TABLE) "
    r"(?P<schema>\S+) (?P<name>.+) \S+$"
)


def relations_in(table_of_contents: Iterable[str]) -> set[tuple[str, str]]:
    """``(schema, name)`` of every relation in ``pg_restore --list`` output."""
    found = set()
    for line in table_of_contents:
        match = _RELATION.match(line)
        if match:
            found.add((match.group("schema"), match.group("name")))
    return found


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _missing_relations_query(kept: set[tuple[str, str]]) -> str:
    """Name and kind of the relations of the kept relations' schemas that are not kept.
    Sequences owned by a column and extension members go with their owner, never on their own."""
    schemas = sorted({schema for schema, _ in kept}) or ["public"]
    pairs = ", ".join(f"({_literal(schema)}, {_literal(name)})" for schema, name in sorted(kept))
    kept_clause = f"AND (n.nspname, c.relname) NOT IN (VALUES {pairs})" if pairs else ""
    # Every name is quoted by _literal.
    return f"""SELECT format('%I.%I', n.nspname, c.relname) AS name,
               CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                   WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END AS kind
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ({", ".join(_literal(schema) for schema in schemas)})
          AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
          AND NOT c.relispartition
          {kept_clause}
          AND NOT EXISTS (
              SELECT 1 FROM pg_depend d
              WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                AND d.deptype IN ('a', 'i', 'e'))"""  # noqa: S608


def count_missing_sql(kept: set[tuple[str, str]]) -> str:
    """A query counting the relations ``drop_missing_sql`` would drop."""
    return f"SELECT count(*) FROM ({_missing_relations_query(kept)}) AS missing"  # noqa: S608


def drop_missing_sql(kept: set[tuple[str, str]]) -> str:
    """A ``DO`` block dropping the relations of the kept relations' schemas that are not kept."""
    # An unguessable dollar-quote tag: no relation name can end the block early.
    tag = f"$specivod_{secrets.token_hex(8)}$"
    return f"""DO {tag}
DECLARE
    leftover record;
BEGIN
    FOR leftover IN
        {_missing_relations_query(kept)}
    LOOP
        RAISE NOTICE 'dropping %, which the backup does not have', leftover.name;
        EXECUTE format('DROP %s IF EXISTS %s CASCADE', leftover.kind, leftover.name);
    END LOOP;
END
{tag}"""
