//! Test runs: their identifiers, states and report-file paths, parsed at the edge.

/// Where an execution is in its life. PENDING → RUNNING → one of the finished states
/// (PENDING may finish directly); a finished execution never moves again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Running,
    Passed,
    Failed,
    Error,
    Unstable,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Self::Pending,
        Self::Running,
        Self::Passed,
        Self::Failed,
        Self::Error,
        Self::Unstable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Passed => "PASSED",
            Self::Failed => "FAILED",
            Self::Error => "ERROR",
            Self::Unstable => "UNSTABLE",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// PENDING and RUNNING executions hold a concurrency slot; the others are finished.
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
    }

    /// The states a failure analysis is for.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::Error | Self::Unstable)
    }
}

impl TryFrom<String> for Status {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("unknown execution status {s:?}"))
    }
}

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

/// A client-chosen run identifier: 1–128 of `A-Za-z0-9._:-`, unique within an organization.
/// It names a directory of report files, so `.` and `..` are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskId(String);

impl TaskId {
    pub fn parse(raw: &str) -> Option<Self> {
        let valid = (1..=128).contains(&raw.len())
            && raw != "."
            && raw != ".."
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
        valid.then(|| Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Prefix of the names the report storage uses for uploads in progress; refused in paths.
pub const UPLOAD_TEMP_PREFIX: &str = ".orgd-upload-";

/// The relative path of a report file below its execution's directory: `/`-separated
/// segments, none empty, `.` or `..`, no NUL, backslash or control character, not absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportPath(String);

impl ReportPath {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.is_empty() {
            return Err("The report path is empty");
        }
        if raw.len() > 1024 {
            return Err("The report path is longer than 1024 bytes");
        }
        if raw.starts_with('/') {
            return Err("The report path must be relative");
        }
        if raw.chars().any(|c| c == '\\' || c.is_control()) {
            return Err("The report path contains a backslash, NUL or control character");
        }
        for segment in raw.split('/') {
            match segment {
                "" => return Err("The report path has an empty segment"),
                "." | ".." => return Err("The report path may not contain . or .. segments"),
                s if s.len() > 255 => return Err("A report path segment is longer than 255 bytes"),
                s if s.starts_with(UPLOAD_TEMP_PREFIX) => {
                    return Err("Report path segments may not start with .orgd-upload-");
                }
                _ => {}
            }
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.0.split('/')
    }

    /// The `Content-Type` a download of this file is served with.
    pub fn content_type(&self) -> &'static str {
        let file_name = self.segments().next_back().unwrap_or_default();
        let extension = file_name
            .rsplit_once('.')
            .map(|(_, ext)| ext.to_ascii_lowercase());
        match extension.as_deref() {
            Some("html" | "htm") => "text/html; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("js" | "mjs") => "text/javascript; charset=utf-8",
            Some("json") => "application/json",
            Some("xml") => "application/xml",
            Some("txt" | "log") => "text/plain; charset=utf-8",
            Some("csv") => "text/csv; charset=utf-8",
            Some("md") => "text/markdown; charset=utf-8",
            Some("png") => "image/png",
            Some("jpg" | "jpeg") => "image/jpeg",
            Some("gif") => "image/gif",
            Some("svg") => "image/svg+xml",
            Some("webp") => "image/webp",
            Some("ico") => "image/x-icon",
            Some("webm") => "video/webm",
            Some("mp4") => "video/mp4",
            Some("pdf") => "application/pdf",
            Some("zip") => "application/zip",
            Some("gz") => "application/gzip",
            Some("woff") => "font/woff",
            Some("woff2") => "font/woff2",
            Some("ttf") => "font/ttf",
            _ => "application/octet-stream",
        }
    }
}
