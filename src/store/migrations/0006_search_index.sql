-- Schema: the search index moves to a file of its own (`PATH-search`, see
-- `store::search_index`), written by a thread of its own beside the
-- message writer, so that no commit of new messages waits for indexing.
--
-- The database keeps what the index needs to follow it: every edit and
-- deletion of a message is noted in `search_stale` (the index takes the
-- message out and puts back what is there now, then deletes the note),
-- and `search_token` names this database, so an index made for another
-- one is rebuilt. An index file is rebuilt from the messages whenever it
-- is missing.

DROP TRIGGER messages_fts_delete;
DROP TRIGGER messages_fts_update;
DROP TRIGGER direct_fts_delete;
DROP TRIGGER direct_fts_update;
DROP TABLE messages_fts;
DROP TABLE direct_fts;
DELETE FROM meta WHERE name = 'fts_indexed';
INSERT INTO meta (name, value) VALUES ('search_token', abs(random()));

CREATE TABLE search_stale (
    seq INTEGER PRIMARY KEY,
    id  INTEGER NOT NULL
);
CREATE TRIGGER search_stale_delete AFTER DELETE ON messages BEGIN
    INSERT INTO search_stale (id) VALUES (old.id);
END;
CREATE TRIGGER search_stale_update AFTER UPDATE OF text ON messages BEGIN
    INSERT INTO search_stale (id) VALUES (old.id);
END;
