//! Making other people's text safe to print on a terminal.
//!
//! Everything that comes from the server (messages, names, reasons) passes
//! through [`sanitize`] before it reaches the screen. A terminal interprets
//! control characters and escape sequences (clearing the screen, moving
//! the cursor, retitling the window, even answering back on some
//! terminals), and bidirectional overrides or invisible characters let a
//! sender make text look like something else. Such characters are shown as
//! visible escapes like `\u{1b}` instead of being interpreted; the text
//! itself is never dropped, so nothing can be hidden either.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Returns `text` with every character a terminal could interpret, or that
/// could disguise the text, replaced by a visible escape: `\n`, `\r`, `\t`
/// and `\u{..}` for the rest. Text without such characters is returned as
/// is, without allocating.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    let chars: Vec<char> = text.chars().collect();
    let escape = escapes(&chars);
    if !escape.iter().any(|&e| e) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for (&c, &e) in chars.iter().zip(&escape) {
        if !e {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            other => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{{{:x}}}", other as u32);
            }
        }
    }
    Cow::Owned(out)
}

/// For each character, whether it must be shown escaped. Joiners and tag
/// characters are needed inside emoji sequences (families, flags of
/// regions), so they are let through there and escaped anywhere else,
/// where they only hide things.
fn escapes(chars: &[char]) -> Vec<bool> {
    let mut out = Vec::with_capacity(chars.len());
    // Whether the previous character kept a flag's tag sequence going.
    let mut in_flag = false;
    for (i, &c) in chars.iter().enumerate() {
        let escape = if c == '\u{200d}' {
            let before = i.checked_sub(1).map(|j| chars[j]);
            let after = chars.get(i + 1).copied();
            !(before.is_some_and(is_emoji_part) && after.is_some_and(is_emoji_part))
        } else if is_tag(c) {
            !in_flag
        } else {
            is_dangerous(c)
        };
        in_flag = c == '\u{1f3f4}' || (is_tag(c) && !escape);
        out.push(escape);
    }
    out
}

/// Characters that are never shown as themselves.
fn is_dangerous(c: char) -> bool {
    c.is_control() // C0, DEL and C1: ESC, CSI (U+009B), BEL, backspace, ...
        || matches!(
            c,
            // Bidirectional marks, embeddings, overrides and isolates.
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
            // Zero-width and invisible formatting characters.
            | '\u{180e}' | '\u{200b}' | '\u{200c}' | '\u{2060}'..='\u{2064}' | '\u{feff}'
            // Line and paragraph separators act like newlines in some terminals.
            | '\u{2028}' | '\u{2029}'
            // Interlinear annotation marks hide the text between them.
            | '\u{fff9}'..='\u{fffb}'
        )
}

/// Tag characters (U+E0000 block): invisible, used only in subdivision flags.
fn is_tag(c: char) -> bool {
    ('\u{e0000}'..='\u{e007f}').contains(&c)
}

/// Characters that can stand next to a zero-width joiner in an emoji
/// sequence: pictographs, symbols, skin tones and the emoji presentation
/// selector.
fn is_emoji_part(c: char) -> bool {
    ('\u{1f000}'..='\u{1faff}').contains(&c)
        || ('\u{2190}'..='\u{2bff}').contains(&c)
        || c == '\u{fe0f}'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for text in ["hello", "Grüße, 世界", "tab-free", "👍 ok", "שלום עולם", ""] {
            assert!(
                matches!(sanitize(text), Cow::Borrowed(t) if t == text),
                "{text}"
            );
        }
    }

    #[test]
    fn escape_sequences_are_shown_not_interpreted() {
        assert_eq!(
            sanitize("\u{1b}[2J\u{1b}[31mred"),
            "\\u{1b}[2J\\u{1b}[31mred"
        );
        assert_eq!(sanitize("\u{1b}]0;title\u{7}"), "\\u{1b}]0;title\\u{7}");
        // The 8-bit CSI introducer is a C1 control.
        assert_eq!(sanitize("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(sanitize("a\u{8}\u{8}b\u{7f}"), "a\\u{8}\\u{8}b\\u{7f}");
        assert_eq!(sanitize("nul\0"), "nul\\u{0}");
    }

    #[test]
    fn line_breaks_and_tabs_are_escaped() {
        assert_eq!(sanitize("one\ntwo\r\tthree"), "one\\ntwo\\r\\tthree");
        assert_eq!(sanitize("a\u{2028}b\u{2029}"), "a\\u{2028}b\\u{2029}");
    }

    #[test]
    fn bidi_controls_are_escaped() {
        assert_eq!(sanitize("abc\u{202e}fdp.exe"), "abc\\u{202e}fdp.exe");
        for c in [
            '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{2066}', '\u{2067}', '\u{2068}',
            '\u{2069}', '\u{200e}', '\u{200f}', '\u{061c}',
        ] {
            let text = format!("x{c}y");
            assert_eq!(sanitize(&text), format!("x\\u{{{:x}}}y", c as u32));
        }
    }

    #[test]
    fn invisible_characters_are_escaped() {
        assert_eq!(sanitize("ad\u{200b}min"), "ad\\u{200b}min");
        assert_eq!(sanitize("\u{feff}bom"), "\\u{feff}bom");
        assert_eq!(sanitize("a\u{2060}b\u{200c}c"), "a\\u{2060}b\\u{200c}c");
        // A joiner outside an emoji sequence hides nothing useful.
        assert_eq!(sanitize("ab\u{200d}cd"), "ab\\u{200d}cd");
        // Tags outside a flag are the "invisible ASCII" trick.
        assert_eq!(sanitize("hi\u{e0041}\u{e0042}"), "hi\\u{e0041}\\u{e0042}");
    }

    #[test]
    fn emoji_sequences_survive() {
        let family = "👨\u{200d}👩\u{200d}👧";
        assert_eq!(sanitize(family), family);
        let heart_on_fire = "❤\u{fe0f}\u{200d}🔥";
        assert_eq!(sanitize(heart_on_fire), heart_on_fire);
        let england = "🏴\u{e0067}\u{e0062}\u{e0065}\u{e006e}\u{e0067}\u{e007f}";
        assert_eq!(sanitize(england), england);
    }

    #[test]
    fn output_never_contains_interpretable_characters() {
        // Every char in a wide range, one at a time and all together.
        let all: String = (0u32..0x3000)
            .chain(0xfe00..0x10000)
            .chain(0xe0000..0xe0080)
            .filter_map(char::from_u32)
            .collect();
        let out = sanitize(&all);
        let chars: Vec<char> = out.chars().collect();
        for (c, escape) in chars.iter().zip(escapes(&chars)) {
            assert!(!escape, "U+{:04X} survived", *c as u32);
        }
        // Each escaped character became a visible escape, none vanished.
        let escaped = escapes(&all.chars().collect::<Vec<_>>())
            .into_iter()
            .filter(|&e| e)
            .count();
        assert_eq!(
            out.matches('\\').count(),
            escaped + all.matches('\\').count()
        );
    }
}
