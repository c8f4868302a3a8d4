-- Schema v3: direct messages, the offline queue, ignore lists.
--
-- A direct message is a row of `messages` like a channel message, with
-- `channel_key` and `channel` empty ('' is no channel's key) and the
-- recipient filled in: the name as it was when sent (`recipient`,
-- `recipient_key`) and the account, if the recipient has one.
--
-- `conversation` names the pair of people talking, whichever of them
-- sent: the two participants' identities sorted and joined by a space
-- (which no name contains), an identity being `#` and the account id for
-- an account holder (so a rename keeps the conversation) and the folded
-- name for a guest. History and search over one conversation page it by
-- id with `messages_conversation`. An account's deletion clears the
-- `conversation` of its messages (trigger below): SQLite may hand the
-- highest id to the next account created, which must not inherit them.
--
-- `offline` marks a message kept for a recipient who was offline (or whose
-- backlog was still being delivered): those are delivered after the
-- recipient's next login, in id order, from `messages_inbox`.
-- `direct_delivered.up_to` is, per account, the highest id of its backlog
-- written to its connection; a message above it is delivered (again)
-- after the next login, so none is lost when a connection or the server
-- dies in the middle of a delivery.

ALTER TABLE messages ADD COLUMN recipient TEXT;
ALTER TABLE messages ADD COLUMN recipient_key TEXT;
ALTER TABLE messages ADD COLUMN recipient_account INTEGER
    REFERENCES accounts (id) ON DELETE SET NULL;
ALTER TABLE messages ADD COLUMN conversation TEXT;
ALTER TABLE messages ADD COLUMN offline INTEGER NOT NULL DEFAULT 0
    CHECK (offline IN (0, 1));

CREATE INDEX messages_conversation ON messages (conversation, id)
    WHERE conversation IS NOT NULL;
CREATE INDEX messages_inbox ON messages (recipient_account, id)
    WHERE offline = 1;
-- For the ON DELETE SET NULL of an account's deletion.
CREATE INDEX messages_recipient_account ON messages (recipient_account)
    WHERE recipient_account IS NOT NULL;

CREATE TABLE direct_delivered (
    account INTEGER PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    up_to   INTEGER NOT NULL
);

-- The names an account ignores: folded (compared) and as given (shown).
CREATE TABLE ignores (
    account  INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name_key TEXT    NOT NULL,
    name     TEXT    NOT NULL,
    PRIMARY KEY (account, name_key)
) WITHOUT ROWID;

CREATE TRIGGER direct_forget_account BEFORE DELETE ON accounts BEGIN
    UPDATE messages SET conversation = NULL
     WHERE conversation IS NOT NULL
       AND (account = OLD.id OR recipient_account = OLD.id);
END;
