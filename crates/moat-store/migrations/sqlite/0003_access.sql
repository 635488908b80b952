-- Topic access: named ACL policies (MQTT filter templates), the policy of each group, and
-- per-identity kind (device or backend application), group and policy. Kept apart from
-- `devices` so identities without a row here get the defaults (kind device, default policy).

CREATE TABLE acl_policies (
    name        TEXT   NOT NULL PRIMARY KEY,
    publish     TEXT   NOT NULL,
    subscribe   TEXT   NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE group_policies (
    group_name  TEXT NOT NULL PRIMARY KEY,
    policy      TEXT NOT NULL
);

CREATE TABLE identity_access (
    device_id   TEXT NOT NULL PRIMARY KEY,
    kind        TEXT NOT NULL,
    group_name  TEXT,
    policy      TEXT
);
