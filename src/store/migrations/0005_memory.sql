-- Schema: what history, search, edits, attachments and unread counts need.
--
-- `sender_key` is the sender's folded name (as the server compares
-- names), so a search can be narrowed to one author; rows written before
-- it existed get an ASCII lower-casing of the name, which is the folded
-- form of every ASCII name. `attachments` is the JSON array of a
-- message's attachments as the server validated it (NULL: none);
-- `edited` the RFC 3339 time of the last edit (NULL: never edited).

ALTER TABLE messages ADD COLUMN sender_key TEXT;
ALTER TABLE messages ADD COLUMN attachments TEXT;
ALTER TABLE messages ADD COLUMN edited TEXT;
UPDATE messages SET sender_key = lower(sender);

-- The last message id an account has seen in a registered channel:
-- everything up to its departure, or what it marked read. Unread counts
-- are the channel's messages above it.
CREATE TABLE read_marks (
    account INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    channel INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    last_id INTEGER NOT NULL,
    PRIMARY KEY (account, channel)
) WITHOUT ROWID;
CREATE INDEX read_marks_channel ON read_marks (channel);

-- Full-text search over the message text: external-content FTS5 tables
-- (the text is kept once, in `messages`). Channel messages and direct
-- messages (those with an empty `channel_key`) are indexed apart, so a
-- search of the channels counts its matches on its index alone, and one
-- of a person's direct messages looks at theirs only. The tokenizer folds
-- case and removes diacritics, so `cafe` finds `Café`.
--
-- New messages are indexed in batches rather than by an insert trigger:
-- FTS5 writes a segment per transaction, and the writer commits every
-- millisecond or so while busy, so a trigger made each commit a segment to
-- write and soon merge (half of the writer's cost per message). The
-- writer indexes what is above `fts_indexed` every so often, and before
-- every search, in one statement. Edits and deletions of indexed messages
-- are applied to the index by the triggers below; those of messages not
-- indexed yet need nothing, the batch reads the current rows.
CREATE VIRTUAL TABLE messages_fts USING fts5(
    text,
    content = 'messages',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);
CREATE VIRTUAL TABLE direct_fts USING fts5(
    text,
    content = 'messages',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);
INSERT INTO messages_fts (rowid, text) SELECT id, text FROM messages WHERE channel_key <> '';
INSERT INTO direct_fts (rowid, text) SELECT id, text FROM messages WHERE channel_key = '';
INSERT INTO meta (name, value) VALUES ('fts_indexed', (SELECT coalesce(max(id), 0) FROM messages));

CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN old.channel_key <> '' AND old.id <= (SELECT value FROM meta WHERE name = 'fts_indexed') BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages
WHEN old.channel_key <> '' AND old.id <= (SELECT value FROM meta WHERE name = 'fts_indexed') BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER direct_fts_delete AFTER DELETE ON messages
WHEN old.channel_key = '' AND old.id <= (SELECT value FROM meta WHERE name = 'fts_indexed') BEGIN
    INSERT INTO direct_fts (direct_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER direct_fts_update AFTER UPDATE OF text ON messages
WHEN old.channel_key = '' AND old.id <= (SELECT value FROM meta WHERE name = 'fts_indexed') BEGIN
    INSERT INTO direct_fts (direct_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO direct_fts (rowid, text) VALUES (new.id, new.text);
END;
