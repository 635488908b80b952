-- Operator accounts of the admin API, console and CLI: a role and the SHA-256 of a bearer
-- token (the token itself is shown once). The bootstrap admin token (data dir admin.token)
-- stays outside this table.
CREATE TABLE operators (
    name        TEXT    NOT NULL PRIMARY KEY,
    role        TEXT    NOT NULL,
    token_hash  TEXT    NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);
