//! Search on PostgreSQL: the chat layer's FTS5 expression translated to a
//! `tsquery` ([`tsquery`]), and the two sides a search reads, channel
//! messages and direct messages, each matched against its GIN index, then
//! counted up to the cap and paged.

use tokio_postgres::error::SqlState;

use super::{classify, count_of, describe, message_row, sql_limit, Db, MESSAGE_COLUMNS};
use crate::store::{DirectScope, MessageId, Scope, SearchQuery, StoreError, StoredMessage};

/// The `tsquery` text of an FTS5 expression of the shape the chat layer
/// builds: terms separated by spaces, each a quoted phrase of words
/// (`"foo bar"`, the words in a row) or a bare word, either optionally
/// followed by `*` (its last word a prefix); every term must match. Each
/// word becomes a quoted lexeme (`'foo'`, `'foo':*`), joined by `<->` in a
/// phrase and `&` between terms, so nothing in it is tsquery syntax. Any
/// other shape (an operator, a bracket, a column filter) is refused as
/// [`StoreError::Query`].
pub fn tsquery(expression: &str) -> Result<String, StoreError> {
    let refuse = |why: &str| StoreError::Query(format!("{why} in the search expression"));
    let mut terms: Vec<String> = Vec::new();
    let mut rest = expression.trim_start();
    while !rest.is_empty() {
        let (words, tail) = if let Some(after) = rest.strip_prefix('"') {
            let end = after.find('"').ok_or_else(|| refuse("an unclosed quote"))?;
            (&after[..end], &after[end + 1..])
        } else {
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '*' || c == '"')
                .unwrap_or(rest.len());
            if end == 0 {
                return Err(refuse("an operator"));
            }
            (&rest[..end], &rest[end..])
        };
        let (prefix, tail) = match tail.strip_prefix('*') {
            Some(t) => (true, t),
            None => (false, tail),
        };
        if !tail.is_empty() && !tail.starts_with(char::is_whitespace) {
            return Err(refuse("a term not followed by a space"));
        }
        let words: Vec<&str> = words.split_whitespace().collect();
        if words.iter().any(|w| !w.chars().all(char::is_alphanumeric)) {
            return Err(refuse("a character other than a letter or digit"));
        }
        if let Some((last, first)) = words.split_last() {
            let mut lexemes: Vec<String> = first.iter().map(|w| format!("'{w}'")).collect();
            lexemes.push(if prefix {
                format!("'{last}':*")
            } else {
                format!("'{last}'")
            });
            terms.push(if lexemes.len() > 1 {
                format!("({})", lexemes.join(" <-> "))
            } else {
                lexemes.remove(0)
            });
        }
        rest = tail.trim_start();
    }
    if terms.is_empty() {
        return Err(refuse("nothing to search for"));
    }
    Ok(terms.join(" & "))
}

/// The text search configuration messages are indexed with.
const SEARCH_CONFIG: &str = "'chatmaster_search'::regconfig";

/// One side of a search (the channels, or the direct messages): the
/// condition that selects its messages, with parameters $1 (the tsquery)
/// to $4 (the sender's folded name), $5 and $6 being the limit and offset.
pub(super) struct SearchSide<'q> {
    /// The condition on `messages`.
    filter: String,
    /// The scope's keys (channel keys; or the conversation or party).
    keys: Vec<String>,
    /// The direct messages' lower id bound (unused for channels).
    from: MessageId,
    /// The query.
    query: &'q SearchQuery,
}

impl<'q> SearchSide<'q> {
    pub(super) fn channels(scope: &Scope, query: &'q SearchQuery) -> Self {
        let (only, keys) = match scope {
            Scope::Only(keys) => (true, keys),
            Scope::Except(keys) => (false, keys),
        };
        let scope = if only {
            "channel_key = ANY($2::text[])"
        } else {
            "NOT (channel_key = ANY($2::text[]))"
        };
        SearchSide {
            filter: format!(
                "channel_key <> '' AND {scope} AND $3::bigint IS NOT NULL \
                 AND ($4::text IS NULL OR sender_key = $4)"
            ),
            keys: keys.clone(),
            from: 0,
            query,
        }
    }

    pub(super) fn direct(scope: &DirectScope, query: &'q SearchQuery) -> Self {
        let (filter, key) = match scope {
            DirectScope::Conversation(key) => ("conversation = ($2::text[])[1]", key),
            DirectScope::Party(key) => (
                "position(' ' || ($2::text[])[1] || ' ' in ' ' || conversation || ' ') > 0",
                key,
            ),
        };
        SearchSide {
            filter: format!(
                "channel_key = '' AND conversation IS NOT NULL AND {filter} AND id >= $3 \
                 AND ($4::text IS NULL OR sender_key = $4)"
            ),
            keys: vec![key.clone()],
            from: query.direct_from,
            query,
        }
    }

    pub(super) fn count(
        &self,
        db: &mut Db<'_, tokio_postgres::Transaction<'_>>,
        q: &str,
    ) -> Result<usize, StoreError> {
        let sql = format!(
            "SELECT count(*) FROM (SELECT 1 FROM messages \
             WHERE search @@ to_tsquery({SEARCH_CONFIG}, $1) AND {} LIMIT $5) AS found",
            self.filter
        );
        let cap = sql_limit(self.query.count_cap);
        let n: i64 = db
            .query(
                &sql,
                &[&q, &self.keys, &self.from, &self.query.sender_key, &cap],
            )
            .map_err(classify_query)?
            .first()
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(classify)?
            .unwrap_or(0);
        Ok(count_of(n))
    }

    pub(super) fn page(
        &self,
        db: &mut Db<'_, tokio_postgres::Transaction<'_>>,
        q: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE search @@ to_tsquery({SEARCH_CONFIG}, $1) AND {} \
             ORDER BY id DESC LIMIT $5 OFFSET $6",
            self.filter
        );
        let (limit, offset) = (sql_limit(limit), sql_limit(offset));
        db.query(
            &sql,
            &[
                &q,
                &self.keys,
                &self.from,
                &self.query.sender_key,
                &limit,
                &offset,
            ],
        )
        .map_err(classify_query)?
        .iter()
        .map(message_row)
        .collect()
    }
}

/// A failure of a search: what the text search refused in the query is
/// the user's, the rest the database's.
fn classify_query(e: tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&SqlState::SYNTAX_ERROR) {
        return StoreError::Query(describe(&e));
    }
    classify(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts5_expressions_become_tsqueries_of_quoted_lexemes() {
        assert_eq!(tsquery("\"foo\"").unwrap(), "'foo'");
        assert_eq!(tsquery("\"foo\" \"ba\"*").unwrap(), "'foo' & 'ba':*");
        assert_eq!(
            tsquery("\"big red\" \"dog house\"*").unwrap(),
            "('big' <-> 'red') & ('dog' <-> 'house':*)"
        );
        assert_eq!(tsquery("café").unwrap(), "'café'");
        for bad in [
            "AND (",
            "\"open",
            "\"a\"\"b\"",
            "foo:bar",
            "\"it's\"",
            "",
            "   ",
            "\"\"",
            "a | b",
            "\"x\" -y",
        ] {
            assert!(
                matches!(tsquery(bad), Err(StoreError::Query(_))),
                "{bad:?}: {:?}",
                tsquery(bad)
            );
        }
    }
}
