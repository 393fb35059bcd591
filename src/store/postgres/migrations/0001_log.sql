-- The log, its idempotency records and the stored read side.

-- One row: the last record of the log. Every append updates it in the
-- same transaction as its inserts, checked against the head the batch
-- was decided on, so appends are serialised by this row's lock and commit
-- in position order: a reader tailing position > last never skips a row.
CREATE TABLE ledger_head (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    position bigint NOT NULL,
    hash bytea NOT NULL
);
INSERT INTO ledger_head (position, hash) VALUES (0, '\x0000000000000000000000000000000000000000000000000000000000000000');

-- The records, byte for byte what was hashed.
CREATE TABLE ledger_events (
    position bigint PRIMARY KEY,
    aggregate_id text NOT NULL,
    aggregate_version bigint NOT NULL,
    record bytea NOT NULL,
    UNIQUE (aggregate_id, aggregate_version)
);

-- Idempotency records, keyed by actor and token.
CREATE TABLE ledger_tokens (
    key bytea PRIMARY KEY,
    value bytea NOT NULL
);

-- The stored read side and the position it is current at.
CREATE TABLE ledger_projections (
    key bytea PRIMARY KEY,
    value bytea NOT NULL
);
CREATE TABLE ledger_checkpoint (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    position bigint NOT NULL
);
