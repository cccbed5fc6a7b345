//! # lifecycle-escape
//!
//! Text that comes from outside (a hook socket reply, an IMDS answer, a GitHub error body, an
//! EventBridge field) may carry terminal control sequences: `ESC [ 2 J` clears an operator's
//! screen, `ESC ] 52` writes their clipboard, a bare `\r` overwrites a log line with a forged one.
//! Everything such text goes through before it reaches a terminal or a log passes [`escape`].
//!
//! Escaped, as Rust writes them (`\u{1b}`, `\n`, `\r`, `\t`):
//!
//! - the C0 controls U+0000..U+001F (ESC, BEL, BS, CR, LF, TAB included) and DEL U+007F;
//! - the C1 controls U+0080..U+009F (CSI U+009B and OSC U+009D act like `ESC [` / `ESC ]` on
//!   terminals that honour 8-bit controls);
//! - the Unicode bidirectional overrides and isolates (U+202A..U+202E, U+2066..U+2069) and the
//!   directional marks U+200E, U+200F, U+061C, which reorder what is displayed around them.
//!
//! Everything else, non-ASCII letters included, is kept as is, and so is a backslash: the point is
//! that nothing untrusted can drive the terminal, not a reversible encoding.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal or a log as is.
pub fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{61c}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

/// `text` with every unsafe character (see the crate docs) escaped; borrowed when there is none.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Bytes that should be text: invalid UTF-8 becomes U+FFFD, then [`escape`].
pub fn escape_bytes(bytes: &[u8]) -> String {
    escape(&String::from_utf8_lossy(bytes)).into_owned()
}

/// At most `max_chars` characters of `text`, escaped (the limit applies before escaping).
pub fn clip(text: &str, max_chars: usize) -> String {
    let head: String = text.chars().take(max_chars).collect();
    escape(&head).into_owned()
}

/// JSON text (as `serde_json` writes or accepts it) made safe to print: C1 controls, DEL and the
/// bidirectional controls, which JSON allows raw inside strings, become `\u00XX` escapes, so the
/// output is the same JSON value. C0 controls other than JSON whitespace cannot appear in valid
/// JSON; if they do anyway (the text is not JSON), they are escaped the same way.
pub fn escape_json_text(json: &str) -> Cow<'_, str> {
    let unsafe_in_json = |c: char| is_unsafe(c) && !matches!(c, '\n' | '\r' | '\t');
    if !json.chars().any(unsafe_in_json) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if unsafe_in_json(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn controls_are_escaped_and_text_is_kept() {
        assert_eq!(escape("InService"), "InService");
        assert!(matches!(escape("Grüße, 日本"), Cow::Borrowed(_)));
        assert_eq!(escape("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape("line\r\nforged"), "line\\r\\nforged");
        assert_eq!(escape("\u{7f}\u{9b}31m\u{202e}"), "\\u{7f}\\u{9b}31m\\u{202e}");
        assert_eq!(escape("tab\there"), "tab\\there");
        assert_eq!(escape_bytes(b"\xff\x1b"), "\u{fffd}\\u{1b}");
        assert_eq!(clip("\u{1b}abcdef", 3), "\\u{1b}ab");
    }

    #[test]
    fn json_stays_the_same_value() {
        assert_eq!(escape_json_text("{\"a\": \"x\"}\n"), "{\"a\": \"x\"}\n");
        assert_eq!(
            escape_json_text("{\"a\":\"\u{9b}2J\u{7f}\"}"),
            "{\"a\":\"\\u009b2J\\u007f\"}"
        );
        assert_eq!(escape_json_text("\u{1b}"), "\\u001b");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn nothing_unsafe_survives(s in any::<String>()) {
            let e = escape(&s);
            prop_assert!(!e.chars().any(is_unsafe));
            if !s.chars().any(is_unsafe) {
                prop_assert_eq!(e.as_ref(), s.as_str());
            }
            prop_assert!(!escape_json_text(&s).chars().any(|c| is_unsafe(c) && !matches!(c, '\n' | '\r' | '\t')));
        }

        #[test]
        fn escaped_json_is_the_same_value(s in any::<String>()) {
            let json = serde_json::to_string(&s).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back: String = serde_json::from_str(&escape_json_text(&json))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, s);
        }

        #[test]
        fn bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            prop_assert!(!escape_bytes(&b).chars().any(is_unsafe));
        }
    }
}
