-- Several hub nodes on one registry (PostgreSQL; the tables exist on SQLite too, unused).
--
-- cluster_events: the cluster's event log. Every domain event a node emits is appended here
-- (then announced on NATS); a node that missed some (NATS down, restarted, slow) reads them
-- back in order. cluster_log_head hands out the sequence numbers: an append updates its one
-- row, so appends are serialised and commit in sequence order (a reader that has seen seq n
-- never finds a lower seq committed later).
CREATE TABLE cluster_log_head (
    id   BIGINT NOT NULL PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL
);
INSERT INTO cluster_log_head (id, seq) VALUES (1, 0);

CREATE TABLE cluster_events (
    seq    BIGINT NOT NULL PRIMARY KEY,
    -- The node that emitted it.
    node   TEXT   NOT NULL,
    -- The event, JSON (moat-core's Event).
    event  TEXT   NOT NULL,
    at     BIGINT NOT NULL
);
CREATE INDEX cluster_events_at ON cluster_events (at);

-- One row per node, refreshed by its heartbeat (`moat cluster status`).
CREATE TABLE cluster_nodes (
    name          TEXT    NOT NULL PRIMARY KEY,
    started_at    BIGINT  NOT NULL,
    heartbeat_at  BIGINT  NOT NULL,
    -- How often it records itself (a node silent for three of these is down).
    heartbeat_ms  BIGINT  NOT NULL,
    -- Live MQTT sessions on the node.
    sessions      BIGINT  NOT NULL,
    -- The last cluster event it has applied.
    applied_seq   BIGINT  NOT NULL,
    -- Whether it is connected to NATS.
    nats_ok       BOOLEAN NOT NULL,
    -- Its MQTT (TLS) and admin API addresses, as it serves them.
    mqtt          TEXT    NOT NULL,
    api           TEXT    NOT NULL
);

-- Which node a client id is on (its live connection, its persistent session), claimed at
-- every CONNECT: the epoch orders claims, so of two CONNECTs racing on two nodes the later
-- claim wins; prev_node is the node the client was on before (to hand its session over).
-- A node restores the persistent sessions claimed by it.
CREATE TABLE mqtt_client_claims (
    client_id  TEXT   NOT NULL PRIMARY KEY,
    node       TEXT   NOT NULL,
    epoch      BIGINT NOT NULL,
    prev_node  TEXT
);
CREATE INDEX mqtt_client_claims_node ON mqtt_client_claims (node);

-- Work one node of the cluster does at a time (CRL refresh, the retirement sweep, campaign
-- steps, OTA notice renewal): the holder of a lease renews it while alive; when it stops,
-- another node takes it once it has expired.
CREATE TABLE cluster_leases (
    name        TEXT   NOT NULL PRIMARY KEY,
    holder      TEXT   NOT NULL,
    expires_at  BIGINT NOT NULL
);
