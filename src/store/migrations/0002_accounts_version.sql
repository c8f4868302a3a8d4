-- Schema v2: a version of the set of account names, so a server can keep
-- the names in memory and notice, with one cheap read, when another
-- process (the admin commands) changed them.
--
-- `meta` holds one row per named value. `accounts_version` goes up by one
-- with every account created, deleted or renamed, in the same transaction,
-- whoever writes: the triggers do it, so no writer can forget. Password
-- changes do not count: a server reads the password at every login.

CREATE TABLE meta (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (name, value) VALUES ('accounts_version', 0);

CREATE TRIGGER accounts_version_insert AFTER INSERT ON accounts BEGIN
    UPDATE meta SET value = value + 1 WHERE name = 'accounts_version';
END;
CREATE TRIGGER accounts_version_delete AFTER DELETE ON accounts BEGIN
    UPDATE meta SET value = value + 1 WHERE name = 'accounts_version';
END;
CREATE TRIGGER accounts_version_rename AFTER UPDATE OF name, name_key, skeleton ON accounts BEGIN
    UPDATE meta SET value = value + 1 WHERE name = 'accounts_version';
END;
