-- Factory enrollment over EST: the serials a manufacturer will produce (the allow-list), the
-- stations on the line that enroll them, and the factory identity of devices enrolled so.

-- One row per serial the manufacturer uploaded. `enrolled_at` NULL: the serial may enroll
-- (once); an admin reset sets it back to NULL. `device_id`: the device it enrolled as.
CREATE TABLE allowlist (
    serial       TEXT    NOT NULL PRIMARY KEY,
    mac          TEXT,
    model        TEXT,
    added_at     BIGINT  NOT NULL,
    enrolled_at  BIGINT,
    device_id    TEXT
);

-- A factory station: authenticates to EST with the hub-issued certificate whose serial is
-- `cert_serial` (only that one: a re-created station does not revive an old certificate) or
-- with HTTP Basic and the token whose SHA-256 is `token_hash`.
CREATE TABLE stations (
    name         TEXT    NOT NULL PRIMARY KEY,
    cert_serial  TEXT,
    token_hash   TEXT,
    created_at   BIGINT  NOT NULL
);

-- The factory identity of a device enrolled from the allow-list (NULL for other devices).
ALTER TABLE devices ADD COLUMN hw_serial TEXT;
ALTER TABLE devices ADD COLUMN mac TEXT;
ALTER TABLE devices ADD COLUMN model TEXT;
