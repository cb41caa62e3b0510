-- Operator actions can pause a run; and the log's integrity no longer rests on
-- anything the database could recompute by itself.

ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check
  CHECK (status IN ('running', 'waiting', 'paused', 'succeeded', 'failed', 'canceled'));

-- Each link of the hash chain is an HMAC under a key the database never holds
-- (src/domain/hash-chain.ts); kid names which key of the keyring. A null kid is
-- a plain SHA-256 link written by the first releases.
ALTER TABLE run_events ADD COLUMN kid text;

-- The run's head, signed with the same keys: the last event's number and hash,
-- so that a log cut short at a batch boundary no longer matches its head.
ALTER TABLE runs ADD COLUMN head_hash text;
ALTER TABLE runs ADD COLUMN head_mac text;
