"""The PostgreSQL store's SQL: the tables, the optimistic append, reads, and the advisory
locks it takes.

Layout (schema ``evflow`` by default, created on ``open``)::

    workflows(workflow_id text PRIMARY KEY, last_seq bigint,      one row per log
              owner text)      the engine whose run the log leaves going (see below)
    events(workflow_id text, seq bigint, time float8, type text, payload bytea,
           PRIMARY KEY (workflow_id, seq))                         payload = encode_event
    mailbox(id bigserial PRIMARY KEY, workflow_id text, message bytea, created float8)
                                  messages for a workflow another live engine runs
    engines(engine_id text PRIMARY KEY, lock_key int, heartbeat timestamptz, lease float8)
                                  the writing engines and their leases

``workflows.owner`` is an index of who must run what, kept by the appends themselves: a
batch holding a ``WorkflowStarted`` (not pending) sets it to that event's owner, one
holding the run's end (finished, failed, canceled) or a pending start clears it (NULL).
``''`` marks a run its live owner let go of. Recovery looks for workflows whose owner
is ``''`` or not a live engine; ``UPDATE ... FOR UPDATE SKIP LOCKED`` hands each to one.

An engine is live while it holds its advisory lock (it goes with its connection: a
crash) *and* its heartbeat is younger than its lease (a paused or cut-off process),
judged by the database's clock, never the engines'.
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
            f" AND to_regclass('{s}.mailbox') IS NOT NULL AND to_regclass('{s}.engines') IS NOT NULL"
            f" AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('{s}.workflows')"
            " AND attname = 'owner' AND NOT attisdropped)"
        )
        self.create = f"""
            CREATE SCHEMA IF NOT EXISTS {s};
            CREATE TABLE IF NOT EXISTS {s}.workflows (
                workflow_id text PRIMARY KEY,
                last_seq bigint NOT NULL
            );
            ALTER TABLE {s}.workflows ADD COLUMN IF NOT EXISTS owner text;
            CREATE INDEX IF NOT EXISTS workflows_owner ON {s}.workflows (owner)
                WHERE owner IS NOT NULL;
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
            CREATE TABLE IF NOT EXISTS {s}.engines (
                engine_id text PRIMARY KEY,
                lock_key integer NOT NULL,
                heartbeat timestamptz NOT NULL,
                lease double precision NOT NULL
            );
        """
        # Move each workflow's last_seq from first_seq - 1 (row-locked: a concurrent append
        # to it waits, then misses) or create it at seq 1; ``accepted`` is who succeeded.
        # ``own``: NULL leaves the owner index as it is, '' clears it, else the new owner.
        claim = f"""
            WITH batch AS (
                SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[])
                    AS b(workflow_id, first_seq, last_seq, own)
            ), moved AS (
                UPDATE {s}.workflows AS w SET last_seq = batch.last_seq,
                    owner = CASE WHEN batch.own IS NULL THEN w.owner ELSE NULLIF(batch.own, '') END
                FROM batch
                WHERE batch.first_seq > 1 AND w.workflow_id = batch.workflow_id
                    AND w.last_seq = batch.first_seq - 1
                RETURNING w.workflow_id
            ), created AS (
                INSERT INTO {s}.workflows (workflow_id, last_seq, owner)
                SELECT workflow_id, last_seq, NULLIF(own, '') FROM batch WHERE first_seq = 1
                ON CONFLICT (workflow_id) DO NOTHING
                RETURNING workflow_id
            ), accepted AS (
                SELECT workflow_id FROM moved UNION ALL SELECT workflow_id FROM created
            )"""
        notify = """
            SELECT ids, CASE WHEN cardinality(ids) > 0
                THEN (SELECT count(pg_notify(${0}, p)) FROM unnest(${1}::text[]) AS p) END
            FROM (SELECT array(SELECT workflow_id FROM accepted) AS ids) AS a"""
        # The claim alone (the events follow by COPY in the same transaction) ...
        self.claim = claim + notify.format(5, 6)
        # ... or with the accepted workflows' events, in one statement and round trip.
        self.append = (
            claim
            + f""", inserted AS (
                INSERT INTO {s}.events (workflow_id, seq, time, type, payload)
                SELECT e.workflow_id, e.seq, e.time, e.type, e.payload
                FROM unnest($5::text[], $6::bigint[], $7::float8[], $8::text[], $9::bytea[])
                    AS e(workflow_id, seq, time, type, payload)
                WHERE e.workflow_id IN (SELECT workflow_id FROM accepted)
            )"""
            + notify.format(10, 11)
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
        # The live engines: their advisory lock is held and their lease has not run out.
        live = f"""
            SELECT e.engine_id FROM {s}.engines AS e
            WHERE clock_timestamp() - e.heartbeat <= make_interval(secs => e.lease)
                AND EXISTS (
                    SELECT 1 FROM pg_locks AS l
                    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                        AND l.classid = {OWNER_LOCK}::int4::oid AND l.objid = e.lock_key::int4::oid
                )"""
        self.engine_alive = f"SELECT EXISTS ({live} AND e.engine_id = $1)"
        self.heartbeat = f"""
            INSERT INTO {s}.engines (engine_id, lock_key, heartbeat, lease)
            VALUES ($1, $2, clock_timestamp(), $3)
            ON CONFLICT (engine_id) DO UPDATE
                SET lock_key = $2, heartbeat = clock_timestamp(), lease = $3"""
        self.leave = f"DELETE FROM {s}.engines WHERE engine_id = $1"
        # Hand up to $2 workflows left going by no live engine (or let go: '') to $1, each
        # to exactly one claimer; returns them with the owner they had.
        self.claim_orphans = f"""
            WITH picked AS (
                SELECT w.workflow_id, w.owner FROM {s}.workflows AS w
                WHERE w.owner IS NOT NULL AND w.owner <> $1
                    AND (w.owner = '' OR w.owner NOT IN ({live}))
                LIMIT $2
                FOR UPDATE OF w SKIP LOCKED
            )
            UPDATE {s}.workflows AS w SET owner = $1 FROM picked
            WHERE w.workflow_id = picked.workflow_id
            RETURNING w.workflow_id, picked.owner"""
        # Drop the index entry of a workflow this engine holds there but does not run:
        # $3 true marks it let go of ('': anyone's recovery takes it), false clears it.
        self.disown = f"""
            UPDATE {s}.workflows SET owner = CASE WHEN $3 THEN '' END
            WHERE workflow_id = $1 AND owner = $2"""
        self.not_owned = f"""
            SELECT workflow_id FROM {s}.workflows
            WHERE workflow_id = ANY($1::text[]) AND owner IS DISTINCT FROM $2"""
        self.cancel_note = "SELECT pg_notify($1, $2)"
