"""The PostgreSQL store's SQL: the tables, the optimistic append, reads, and the advisory
locks it takes.

Layout (schema ``evflow`` by default, created on ``open``)::

    workflows(workflow_id text PRIMARY KEY, last_seq bigint)      one row per log
    events(workflow_id text, seq bigint, time float8, type text, payload bytea,
           PRIMARY KEY (workflow_id, seq))                         payload = encode_event
    mailbox(id bigserial PRIMARY KEY, workflow_id text, message bytea, created float8)
                                  messages for a workflow another live engine runs
"""

from __future__ import annotations

__all__ = ["DDL_LOCK", "OWNER_LOCK", "Sql"]

#: First key of the two-int advisory lock ("EVFD") that serialises creating the tables;
#: the second is the schema's key.
DDL_LOCK = 0x45564644
#: First key of an engine's own advisory lock ("EVOW"); the second is its id's crc32.
OWNER_LOCK = 0x45564F57


class Sql:
    """The statements, for one (validated, quoted) schema name."""

    def __init__(self, s: str) -> None:
        self.tables_exist = (
            f"SELECT to_regclass('{s}.workflows') IS NOT NULL AND to_regclass('{s}.events') IS NOT NULL"
            f" AND to_regclass('{s}.mailbox') IS NOT NULL"
        )
        self.create = f"""
            CREATE SCHEMA IF NOT EXISTS {s};
            CREATE TABLE IF NOT EXISTS {s}.workflows (
                workflow_id text PRIMARY KEY,
                last_seq bigint NOT NULL
            );
            CREATE TABLE IF NOT EXISTS {s}.events (
                workflow_id text NOT NULL,
                seq bigint NOT NULL,
                time double precision NOT NULL,
                type text NOT NULL,
                payload bytea NOT NULL,
                PRIMARY KEY (workflow_id, seq)
            );
            CREATE TABLE IF NOT EXISTS {s}.mailbox (
                id bigserial PRIMARY KEY,
                workflow_id text NOT NULL,
                message bytea NOT NULL,
                created double precision NOT NULL
            );
            CREATE INDEX IF NOT EXISTS mailbox_workflow_id ON {s}.mailbox (workflow_id);
        """
        # Move each workflow's last_seq from first_seq - 1 (row-locked: a concurrent append
        # to it waits, then misses) or create it at seq 1; ``accepted`` is who succeeded.
        claim = f"""
            WITH batch AS (
                SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
                    AS b(workflow_id, first_seq, last_seq)
            ), moved AS (
                UPDATE {s}.workflows AS w SET last_seq = batch.last_seq
                FROM batch
                WHERE batch.first_seq > 1 AND w.workflow_id = batch.workflow_id
                    AND w.last_seq = batch.first_seq - 1
                RETURNING w.workflow_id
            ), created AS (
                INSERT INTO {s}.workflows (workflow_id, last_seq)
                SELECT workflow_id, last_seq FROM batch WHERE first_seq = 1
                ON CONFLICT (workflow_id) DO NOTHING
                RETURNING workflow_id
            ), accepted AS (
                SELECT workflow_id FROM moved UNION ALL SELECT workflow_id FROM created
            )"""
        notify = """
            SELECT ids, CASE WHEN cardinality(ids) > 0 THEN pg_notify(${0}, ${1}) END
            FROM (SELECT array(SELECT workflow_id FROM accepted) AS ids) AS a"""
        # The claim alone (the events follow by COPY in the same transaction) ...
        self.claim = claim + notify.format(4, 5)
        # ... or with the accepted workflows' events, in one statement and round trip.
        self.append = (
            claim
            + f""", inserted AS (
                INSERT INTO {s}.events (workflow_id, seq, time, type, payload)
                SELECT e.workflow_id, e.seq, e.time, e.type, e.payload
                FROM unnest($4::text[], $5::bigint[], $6::float8[], $7::text[], $8::bytea[])
                    AS e(workflow_id, seq, time, type, payload)
                WHERE e.workflow_id IN (SELECT workflow_id FROM accepted)
            )"""
            + notify.format(9, 10)
        )
        self.last_seqs = (
            f"SELECT workflow_id, last_seq FROM {s}.workflows WHERE workflow_id = ANY($1::text[])"
        )
        self.all_last_seqs = f"SELECT workflow_id, last_seq FROM {s}.workflows"
        self.max_seqs = (
            f"SELECT workflow_id, max(seq) FROM {s}.events WHERE workflow_id = ANY($1::text[]) "
            "GROUP BY workflow_id"
        )
        self.read = f"SELECT seq, payload FROM {s}.events WHERE workflow_id = $1 AND seq > $2 ORDER BY seq"
        self.read_all = f"SELECT workflow_id, seq, payload FROM {s}.events ORDER BY workflow_id, seq"
        self.list = f"SELECT workflow_id FROM {s}.workflows"
        self.has_events = f"SELECT EXISTS (SELECT 1 FROM {s}.events WHERE workflow_id = $1 AND seq > $2)"
        self.delete_workflow = f"DELETE FROM {s}.workflows WHERE workflow_id = $1 RETURNING 1"
        self.delete_events = f"DELETE FROM {s}.events WHERE workflow_id = $1"
        # one bigint key (objsubid 1): never the two-int keys above
        self.named_lock = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
        self.post_mail = f"""
            WITH m AS (
                INSERT INTO {s}.mailbox (workflow_id, message, created) VALUES ($1, $2, $3)
                RETURNING id
            )
            SELECT id, pg_notify($4, $5) FROM m"""
        self.read_mail = (
            f"SELECT id, workflow_id, message FROM {s}.mailbox "
            "WHERE workflow_id = ANY($1::text[]) ORDER BY id"
        )
        self.delete_mail = f"DELETE FROM {s}.mailbox WHERE id = ANY($1::bigint[])"
        self.delete_workflow_mail = f"DELETE FROM {s}.mailbox WHERE workflow_id = $1"
        self.lock_held = """
            SELECT EXISTS (
                SELECT 1 FROM pg_locks
                WHERE locktype = 'advisory' AND granted AND objsubid = 2
                    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                    AND classid = $1::int4::oid AND objid = $2::int4::oid
            )
        """
