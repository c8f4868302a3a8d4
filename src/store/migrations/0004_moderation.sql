-- Schema: moderation of registered channels: a topic per channel, and the
-- bans that keep people out of it.
--
-- A ban on someone logged in to an account holds the account (`account`),
-- whatever name it uses later; `name`, `name_key` and `skeleton` are the
-- name it had when banned (the server shows the account's current name
-- and compares its current skeleton). A ban on a guest holds the name:
-- anyone whose folded name has the same confusable skeleton is kept out,
-- so a look-alike spelling does not get past it. Deleting the account
-- keeps the ban as a ban on the name. No uniqueness on the name: an
-- account renamed since its ban leaves an old name in its row, which a
-- guest may later be banned under too.

ALTER TABLE channels ADD COLUMN topic TEXT;

CREATE TABLE channel_bans (
    id         INTEGER PRIMARY KEY,
    channel    INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    account    INTEGER REFERENCES accounts (id) ON DELETE SET NULL,
    name       TEXT    NOT NULL,
    name_key   TEXT    NOT NULL,
    skeleton   TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX channel_bans_channel ON channel_bans (channel);
CREATE INDEX channel_bans_account ON channel_bans (account) WHERE account IS NOT NULL;
