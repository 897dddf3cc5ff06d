-- The screening history: every screened address of every decision, the events' amounts, and the watchlist's
-- change log with the lookback's progress. docs/history.md explains every table; migrations are applied in order
-- by `aml-screener history migrate` (history/migrate.py), each in one transaction, never edited once published.

CREATE SCHEMA IF NOT EXISTS aml_history;

-- One row per screened address per decision: a withdrawal's destination (address_index 0) or each source of a
-- deposit (address_index = its position in the decision's sources: source_addresses, each address once). Partitioned by month of the event's time
-- (requested_at / observed_at: fixed for an event, so a re-screened duplicate lands on the same row). The
-- primary key makes writes idempotent on (decision id, address); it must contain the partition key.
CREATE TABLE aml_history.screened_addresses (
    event_time        timestamptz NOT NULL,
    decision_id       uuid        NOT NULL,
    address_index     smallint    NOT NULL,
    direction         text        NOT NULL CHECK (direction IN ('withdrawal', 'deposit')),
    event_id          text        NOT NULL,
    exchange_id       text        NOT NULL,
    asset             text        NOT NULL,
    network           text        NOT NULL,
    address           text        NOT NULL,                 -- exactly as the event typed it
    address_key       text,                                 -- normalized lookup key; NULL when unscreenable
    checked_keys      text[]      NOT NULL DEFAULT '{}',    -- the related keys it was also checked under
    checked_relations text[]      NOT NULL DEFAULT '{}',    -- their relations, index by index
    outcome           text        NOT NULL,                 -- this address's: CLEAR, FLAGGED, UNSCREENABLE
    decision          text        NOT NULL,                 -- the event's
    reason            text,
    severity          text,
    action            text,                                 -- the action policy's, once it decides one
    matched_keys      text[]      NOT NULL DEFAULT '{}',    -- table keys its matches were found under
    matched_entries   text[]      NOT NULL DEFAULT '{}',    -- 'list/entry_id' of each match
    watchlist_version text,
    decided_at        timestamptz NOT NULL,
    record_time       timestamptz NOT NULL,                 -- Kafka timestamp of the input record
    source_topic      text        NOT NULL,
    source_partition  integer     NOT NULL,
    source_offset     bigint      NOT NULL,
    source_schema_id  integer     NOT NULL,                 -- writer schema id of the input record
    indexed_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (decision_id, address_index, event_time)
) PARTITION BY RANGE (event_time);

-- "Which past events touched this address": by its own key, and by the related keys it was checked under (a
-- listing added later under a related key must find it, exactly as the screener would have).
CREATE INDEX screened_addresses_key ON aml_history.screened_addresses (address_key, event_time);
CREATE INDEX screened_addresses_checked ON aml_history.screened_addresses USING gin (checked_keys);
-- Delistings look up the flagged rows by the keys they matched under (few rows: only flagged ones).
CREATE INDEX screened_addresses_matched ON aml_history.screened_addresses USING gin (matched_keys)
    WHERE cardinality(matched_keys) > 0;

-- The screened events themselves, from the input topics: account, amount and USD value (decisions do not carry
-- them). Same partitioning; joined to screened_addresses on (direction, event_id, event_time).
CREATE TABLE aml_history.screened_events (
    event_time       timestamptz    NOT NULL,
    direction        text           NOT NULL CHECK (direction IN ('withdrawal', 'deposit')),
    event_id         text           NOT NULL,
    exchange_id      text           NOT NULL,
    account_id       text           NOT NULL,
    asset            text           NOT NULL,
    network          text           NOT NULL,
    amount           numeric(38, 18) NOT NULL,
    usd_value        numeric(20, 2),
    tx_hash          text,
    record_time      timestamptz    NOT NULL,
    source_topic     text           NOT NULL,
    source_partition integer        NOT NULL,
    source_offset    bigint         NOT NULL,
    indexed_at       timestamptz    NOT NULL DEFAULT now(),
    PRIMARY KEY (direction, event_id, event_time)
) PARTITION BY RANGE (event_time);

-- Rows whose event time has no monthly partition (clock skew, a hostile producer, months before the first
-- migration) are kept here, never refused; ensure_partitions moves them when their month is created.
CREATE TABLE aml_history.screened_addresses_default PARTITION OF aml_history.screened_addresses DEFAULT;
CREATE TABLE aml_history.screened_events_default PARTITION OF aml_history.screened_events DEFAULT;

-- Creates the monthly partition of `parent` that holds `month` (its first day) if missing: a table of the
-- parent's shape, filled with the default partition's rows of that month, then attached (which adds the indexes).
-- Safe to call concurrently: an advisory lock per parent serialises the creators.
CREATE FUNCTION aml_history.ensure_partition(parent text, month date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    lo date := date_trunc('month', month)::date;
    hi date := (date_trunc('month', month) + interval '1 month')::date;
    name text := format('%s_p%s', parent, to_char(lo, 'YYYY_MM'));
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('aml_history.partitions.' || parent));
    IF to_regclass(format('aml_history.%I', name)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE aml_history.%I (LIKE aml_history.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   name, parent);
    EXECUTE format('WITH moved AS (DELETE FROM aml_history.%I WHERE event_time >= %L AND event_time < %L RETURNING *)'
                   ' INSERT INTO aml_history.%I SELECT * FROM moved', parent || '_default', lo, hi, name);
    EXECUTE format('ALTER TABLE aml_history.%I ATTACH PARTITION aml_history.%I FOR VALUES FROM (%L) TO (%L)',
                   parent, name, lo, hi);
    RETURN true;
END
$$;

-- The partitions of both tables for the months from `months_back` before now to `months_ahead` after it. The
-- migrator and the indexer (hourly) call it, so a month's partition exists before its first row arrives.
CREATE FUNCTION aml_history.ensure_partitions(months_back integer, months_ahead integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    created integer := 0;
    m integer;
    parent text;
BEGIN
    FOREACH parent IN ARRAY ARRAY['screened_addresses', 'screened_events'] LOOP
        FOR m IN -months_back..months_ahead LOOP
            IF aml_history.ensure_partition(parent, (date_trunc('month', now()) + make_interval(months => m))::date)
            THEN
                created := created + 1;
            END IF;
        END LOOP;
    END LOOP;
    RETURN created;
END
$$;

-- When a watchlist version id says it was created (ids start with the UTC build time, e.g.
-- 20261123T194500Z-3f2a1c9d04be: watchlist/store.py new_version_id), to the second; NULL for other ids. Used for
-- versions the lookback never saw (garbage-collected in Redis, or older than its baseline).
CREATE FUNCTION aml_history.version_time(version text) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN version ~ '^[0-9]{8}T[0-9]{6}Z'
                THEN to_timestamp(left(version, 15), 'YYYYMMDD"T"HH24MISS')::timestamp AT TIME ZONE 'UTC'
           END
$$;

-- Every watchlist version the lookback has seen, in the order it processed them. The first one it ever saw is
-- the baseline (its content is where the change log starts, not a change). lookback_done_at is set once every
-- retroactive match and delisting of the version was produced and acknowledged by Kafka: the lookback's durable
-- progress. A version that was garbage-collected in Redis before the lookback saw it is not here; its changes
-- are folded into the next version's.
CREATE TABLE aml_history.watchlist_versions (
    version          text PRIMARY KEY,
    seq              bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    parent           text,                     -- the sync's previous active version
    previous         text,                     -- the version the lookback compared it with (its last ingested)
    created_at       timestamptz NOT NULL,     -- when the sync activated it
    ingested_at      timestamptz NOT NULL DEFAULT now(),
    baseline         boolean     NOT NULL DEFAULT false,
    added            integer     NOT NULL DEFAULT 0,   -- listings added, removed and updated (listing level)
    removed          integer     NOT NULL DEFAULT 0,
    updated          integer     NOT NULL DEFAULT 0,
    lookback_done_at timestamptz,
    retroactive_matches integer,
    delisted_decisions  integer
);

-- The lookback's copy of the watchlist as of the last version it ingested: per source, its table and every
-- key's listings (the table's JSON value). New versions are diffed against this copy, not against an old
-- version in Redis, so any number of versions may pass (and be garbage-collected) while the lookback is down.
CREATE TABLE aml_history.watchlist_sources (
    source    text PRIMARY KEY,
    table_key text NOT NULL,
    version   text NOT NULL
);
CREATE TABLE aml_history.watchlist_entries (
    source   text NOT NULL,
    key      text NOT NULL,
    listings text NOT NULL,
    PRIMARY KEY (source, key)
);
CREATE INDEX watchlist_entries_key ON aml_history.watchlist_entries (key);

-- The change log: one row per listing added, removed or updated (same list and address, other details)
-- per version. The retroactive matches and delistings are computed from it (and can be recomputed after a
-- crash); with the versions' times it says what was listed when (`watchlist as-of`).
CREATE TABLE aml_history.watchlist_changes (
    version   text NOT NULL REFERENCES aml_history.watchlist_versions (version),
    key       text NOT NULL,
    change    text NOT NULL CHECK (change IN ('added', 'removed', 'updated')),
    identity  text NOT NULL,       -- list, listed address and asset, source file, relation (JSON; changes.py)
    source    text NOT NULL,       -- the sync source whose table holds it
    listing   jsonb NOT NULL,      -- the WatchlistMatch as stored
    PRIMARY KEY (version, key, change, identity, source)
);
CREATE INDEX watchlist_changes_key ON aml_history.watchlist_changes (key);
