//! The text sent to a model: the execution's error and the tail of its log, with the
//! organization's stored secrets replaced by `[REDACTED]` before anything is cut, so no
//! part of a secret survives at the cut either.

use orgd_core::text::{utf8_head, utf8_tail};

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

/// The error (its start) and the log (its end), together at most `budget` bytes of text.
pub fn log_text(
    error: Option<&str>,
    output: Option<&str>,
    secrets: &[String],
    budget: usize,
) -> String {
    let error = redact(error.unwrap_or_default(), secrets);
    let output = redact(output.unwrap_or_default(), secrets);
    let error = utf8_head(&error, budget);
    let output = utf8_tail(&output, budget - error.len());
    format!("Error:\n{error}\n\nLog (last part):\n{output}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_before_the_cut() {
        let secrets = vec!["sk-secret-123".to_string(), "ab".to_string()];
        let text = log_text(Some("boom ab"), Some("x sk-secret-123 y"), &secrets, 1000);
        assert!(!text.contains("sk-secret-123") && text.contains("boom ab"));
        assert!(text.contains("x [REDACTED] y"));
        let cut = log_text(None, Some("aaaa sk-secret-123"), &secrets, 6);
        assert!(cut.ends_with("ACTED]"), "{cut}");
        let both = log_text(Some("éééé"), Some("zzzz"), &[], 5);
        assert!(both.contains("éé\n") && both.ends_with("\nz"), "{both}");
    }
}
