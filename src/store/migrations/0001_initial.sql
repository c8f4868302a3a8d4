-- Schema v1: accounts, registered channels, the accounts admitted to
-- private registered channels, and every accepted chat message.
--
-- Names are kept twice: as the owner spelled them (`name`, shown) and as
-- the folded key the server compares (`name_key`, unique). `skeleton` is
-- the confusable skeleton of the key, indexed so a look-alike of an
-- existing name is found without a scan. Times the server sets itself are
-- Unix milliseconds; a message keeps the RFC 3339 `timestamp` exactly as
-- it was sent, so history replays byte for byte.

CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL,
    name_key      TEXT    NOT NULL UNIQUE,
    skeleton      TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX accounts_skeleton ON accounts (skeleton);

-- A registered channel belongs to its owner account: deleting the account
-- unregisters its channels.
CREATE TABLE channels (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    name_key   TEXT    NOT NULL UNIQUE,
    owner      INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    private    INTEGER NOT NULL DEFAULT 0 CHECK (private IN (0, 1)),
    created_at INTEGER NOT NULL
);
CREATE INDEX channels_owner ON channels (owner);

CREATE TABLE channel_access (
    channel INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    account INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    PRIMARY KEY (channel, account)
) WITHOUT ROWID;
CREATE INDEX channel_access_account ON channel_access (account);

-- `id` is assigned by the server (increasing in the order messages are
-- stored), not by SQLite, so deliveries can carry it before the commit.
-- A message outlives its sender's account: the name stays, the link goes.
CREATE TABLE messages (
    id          INTEGER PRIMARY KEY,
    channel_key TEXT    NOT NULL,
    channel     TEXT    NOT NULL,
    sender      TEXT    NOT NULL,
    account     INTEGER REFERENCES accounts (id) ON DELETE SET NULL,
    text        TEXT    NOT NULL,
    timestamp   TEXT    NOT NULL
);
CREATE INDEX messages_channel ON messages (channel_key, id);
CREATE INDEX messages_account ON messages (account) WHERE account IS NOT NULL;
