//! Text that leaves orgd: cut on character boundaries, with secrets redacted.

/// The last at most `max` bytes of `s`, starting on a character boundary.
pub fn utf8_tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// The first at most `max` bytes of `s`, ending on a character boundary.
pub fn utf8_head(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub const REDACTED: &str = "[REDACTED]";
/// Shorter values would blank out ordinary words; stored credentials are far longer.
const MIN_SECRET_CHARS: usize = 4;

pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut secrets: Vec<&str> = secrets
        .iter()
        .map(String::as_str)
        .filter(|s| s.chars().count() >= MIN_SECRET_CHARS)
        .collect();
    // Longest first, so a secret containing another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut text = text.to_string();
    for secret in secrets {
        if text.contains(secret) {
            text = text.replace(secret, REDACTED);
        }
    }
    text
}

/// `redact` applied to every string of a JSON value (keys and structure untouched).
pub fn redact_json(value: &mut serde_json::Value, secrets: &[String]) {
    use serde_json::Value;
    match value {
        Value::String(text) => *text = redact(text, secrets),
        Value::Array(items) => items.iter_mut().for_each(|v| redact_json(v, secrets)),
        Value::Object(fields) => fields.values_mut().for_each(|v| redact_json(v, secrets)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_redacted_structure_kept() {
        let mut value =
            serde_json::json!({"error": "token sk-123456 leaked", "n": 1, "list": ["sk-123456"]});
        redact_json(&mut value, &["sk-123456".to_string()]);
        assert_eq!(
            value,
            serde_json::json!({"error": "token [REDACTED] leaked", "n": 1, "list": ["[REDACTED]"]})
        );
    }

    #[test]
    fn utf8_cuts() {
        assert_eq!(utf8_tail("aé", 1), "");
        assert_eq!(utf8_tail("aé", 2), "é");
        assert_eq!(utf8_tail("abc", 10), "abc");
        assert_eq!(utf8_head("éa", 1), "");
        assert_eq!(utf8_head("éa", 3), "éa");
    }
}
