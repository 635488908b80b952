-- Registry schema (SQLite). Timestamps are Unix microseconds (INTEGER).

CREATE TABLE devices (
    id          TEXT    NOT NULL PRIMARY KEY,
    state       TEXT    NOT NULL,
    policy      TEXT    NOT NULL,
    token_hash  TEXT,
    ca_name     TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- No foreign key to devices: certificate rows outlive their device (serial uniqueness, audit).
-- The primary key (serial, ca_name) is the UNIQUE(ca_name, serial) rule and the serial index.
CREATE TABLE certificates (
    serial             TEXT    NOT NULL,
    ca_name            TEXT    NOT NULL,
    device_id          TEXT,
    subject            TEXT    NOT NULL,
    not_before         INTEGER NOT NULL,
    not_after          INTEGER NOT NULL,
    fingerprint        TEXT    NOT NULL UNIQUE,
    spki_sha256        TEXT    NOT NULL,
    source             TEXT    NOT NULL,
    der                BLOB    NOT NULL,
    created_at         INTEGER NOT NULL,
    revoked_at         INTEGER,
    revocation_reason  TEXT,
    PRIMARY KEY (serial, ca_name)
);
CREATE INDEX certificates_device_id ON certificates (device_id);
CREATE INDEX certificates_spki_sha256 ON certificates (spki_sha256);
-- Partial: costs nothing on insert (new certificates are unrevoked), serves CRLs and the
-- broker's revoked set without a table scan.
CREATE INDEX certificates_revoked ON certificates (ca_name, serial) WHERE revoked_at IS NOT NULL;

CREATE TABLE cas (
    name           TEXT    NOT NULL PRIMARY KEY,
    kind           TEXT    NOT NULL,
    cert_der       BLOB    NOT NULL,
    key_ref        TEXT,
    identity_rule  TEXT    NOT NULL,
    auto_register  BOOLEAN NOT NULL,
    fingerprint    TEXT    NOT NULL UNIQUE,
    created_at     INTEGER NOT NULL,
    crl_number     INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE crls (
    ca_name      TEXT    NOT NULL PRIMARY KEY REFERENCES cas (name) ON DELETE CASCADE,
    number       INTEGER NOT NULL,
    der          BLOB    NOT NULL,
    this_update  INTEGER NOT NULL,
    next_update  INTEGER NOT NULL
);

CREATE TABLE registration_codes (
    code_hash   TEXT    NOT NULL PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);

CREATE TABLE settings (
    key    TEXT NOT NULL PRIMARY KEY,
    value  TEXT NOT NULL
);

CREATE TABLE audit_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    actor    TEXT    NOT NULL,
    action   TEXT    NOT NULL,
    target   TEXT,
    outcome  TEXT    NOT NULL,
    detail   TEXT
);
