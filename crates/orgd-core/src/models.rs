//! The AI model catalogue: configuration, not code (API.md, ai-config). The built-in default
//! is the JSON below; `ORGD_MODEL_CATALOG` names a file in the same format that replaces it.
//! A model with `retiresAt` in the past cannot be chosen and is replaced by `replacement`.

use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

/// The catalogue shipped with the service (providers' model pages, late 2026).
pub const BUILTIN_CATALOG: &str = r#"{
  "defaultModel": "gemini-3.8-flash",
  "models": [
    {"id": "gemini-3.8-flash", "provider": "gemini"},
    {"id": "gemini-4-argon", "provider": "gemini"},
    {"id": "gemini-3.5-flash-lite", "provider": "gemini"},
    {"id": "gpt-6.1-sol", "provider": "openai"},
    {"id": "gpt-6-astra", "provider": "openai"},
    {"id": "gpt-6-luna", "provider": "openai"},
    {"id": "claude-sonnet-5-5", "provider": "anthropic"},
    {"id": "claude-opus-5-5", "provider": "anthropic"},
    {"id": "claude-haiku-5-5", "provider": "anthropic"},
    {"id": "gemini-2.5-flash", "provider": "gemini", "retiresAt": "2026-12-01", "replacement": "gemini-3.8-flash"},
    {"id": "gpt-4o", "provider": "openai", "retiresAt": "2027-01-14", "replacement": "gpt-6-luna"},
    {"id": "claude-3-5-sonnet", "provider": "anthropic", "retiresAt": "2025-10-22", "replacement": "claude-sonnet-5-5"}
  ]
}"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AiProvider {
    Gemini,
    Openai,
    Anthropic,
}

impl AiProvider {
    pub const ALL: [AiProvider; 3] = [Self::Gemini, Self::Openai, Self::Anthropic];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gemini => "gemini",
            Self::Openai => "openai",
            Self::Anthropic => "anthropic",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub id: String,
    pub provider: AiProvider,
    /// Epoch ms from which the model can no longer be used.
    pub retires_at: Option<i64>,
    pub replacement: Option<String>,
}

impl Model {
    pub fn is_retired(&self, now: i64) -> bool {
        self.retires_at.is_some_and(|at| at <= now)
    }
}

/// Why a model cannot be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    Unknown,
    Retired {
        retired_at: i64,
        replacement: String,
    },
}

#[derive(Debug, Clone)]
pub struct ModelCatalog {
    /// Index into `models`, checked on load.
    default: usize,
    models: Vec<Model>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CatalogFile {
    default_model: String,
    models: Vec<ModelFile>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ModelFile {
    id: String,
    provider: AiProvider,
    retires_at: Option<String>,
    replacement: Option<String>,
}

/// `YYYY-MM-DD` (midnight UTC) or a full RFC 3339 timestamp.
fn parse_date(s: &str) -> Option<i64> {
    crate::clock::parse_rfc3339(s)
        .or_else(|| crate::clock::parse_rfc3339(&format!("{s}T00:00:00Z")))
}

impl ModelCatalog {
    pub fn builtin() -> anyhow::Result<Self> {
        Self::from_json(BUILTIN_CATALOG).context("the built-in model catalogue")
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read ORGD_MODEL_CATALOG {}", path.display()))?;
        Self::from_json(&text)
            .with_context(|| format!("invalid ORGD_MODEL_CATALOG {}", path.display()))
    }

    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        let file: CatalogFile = serde_json::from_str(text)?;
        let models = file
            .models
            .into_iter()
            .map(|m| {
                let retires_at = m
                    .retires_at
                    .map(|s| {
                        parse_date(&s)
                            .with_context(|| format!("{}: retiresAt {s:?} is not a date", m.id))
                    })
                    .transpose()?;
                Ok(Model {
                    id: m.id,
                    provider: m.provider,
                    retires_at,
                    replacement: m.replacement,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut catalog = Self { default: 0, models };
        catalog.default = catalog.check(&file.default_model)?;
        Ok(catalog)
    }

    /// Ids unique and non-empty, the default known and never retiring, every replacement
    /// known, and every replacement chain ending at a model that does not retire.
    fn check(&self, default_model: &str) -> anyhow::Result<usize> {
        for (i, m) in self.models.iter().enumerate() {
            if m.id.trim().is_empty() || m.id.len() > 100 {
                bail!("model ids must be 1-100 characters");
            }
            if self.models[..i].iter().any(|other| other.id == m.id) {
                bail!("model {} is listed twice", m.id);
            }
            match (&m.retires_at, &m.replacement) {
                (Some(_), None) => bail!("{} retires but names no replacement", m.id),
                (None, Some(_)) => bail!("{} names a replacement but no retiresAt", m.id),
                _ => {}
            }
            let mut current = m;
            for _ in 0..=self.models.len() {
                let Some(next) = &current.replacement else {
                    break;
                };
                current = self
                    .get(next)
                    .with_context(|| format!("{}: unknown replacement {next}", m.id))?;
            }
            if current.retires_at.is_some() {
                bail!(
                    "the replacements of {} never reach a model that stays available",
                    m.id
                );
            }
        }
        match self.models.iter().position(|m| m.id == default_model) {
            Some(i) if self.models[i].retires_at.is_none() => Ok(i),
            Some(_) => bail!("defaultModel {default_model} must not retire"),
            None => bail!("defaultModel {default_model} is not in the catalogue"),
        }
    }

    pub fn get(&self, id: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.id == id)
    }

    /// Models that can be chosen at `now`, in catalogue order.
    pub fn available(&self, now: i64) -> impl Iterator<Item = &Model> {
        self.models.iter().filter(move |m| !m.is_retired(now))
    }

    /// A model an organization may choose at `now`.
    pub fn choose(&self, id: &str, now: i64) -> Result<&Model, Unavailable> {
        let model = self.get(id).ok_or(Unavailable::Unknown)?;
        match (model.retires_at, &model.replacement) {
            (Some(retired_at), Some(replacement)) if retired_at <= now => {
                Err(Unavailable::Retired {
                    retired_at,
                    replacement: replacement.clone(),
                })
            }
            _ => Ok(model),
        }
    }

    /// The model actually used for an organization's choice at `now`: the catalogue default
    /// when it chose nothing (or a model no longer listed), else its choice, following
    /// replacements while it is retired.
    pub fn effective(&self, chosen: Option<&str>, now: i64) -> &Model {
        let mut model = chosen
            .and_then(|id| self.get(id))
            .unwrap_or(&self.models[self.default]);
        // `check` guarantees every chain ends; the bound only guards against a bad edit.
        for _ in 0..self.models.len() {
            match &model.replacement {
                Some(next) if model.is_retired(now) => match self.get(next) {
                    Some(m) => model = m,
                    None => break,
                },
                _ => break,
            }
        }
        model
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEC_2_2026: i64 = 1_796_169_600_000;

    #[test]
    fn builtin_catalogue_is_valid_and_current() {
        let c = ModelCatalog::from_json(BUILTIN_CATALOG).unwrap();
        let now = crate::clock::parse_rfc3339("2026-11-23T00:00:00Z").unwrap();
        assert_eq!(c.effective(None, now).id, "gemini-3.8-flash");
        assert!(
            c.choose("gemini-2.5-flash", now).is_ok(),
            "retires only on 2026-12-01"
        );
        assert_eq!(
            c.choose("claude-3-5-sonnet", now),
            Err(Unavailable::Retired {
                retired_at: parse_date("2025-10-22").unwrap(),
                replacement: "claude-sonnet-5-5".into()
            })
        );
        assert_eq!(c.choose("gpt-4", now), Err(Unavailable::Unknown));
        assert!(matches!(
            c.choose("gemini-2.5-flash", DEC_2_2026),
            Err(Unavailable::Retired { .. })
        ));
        assert_eq!(
            c.effective(Some("gemini-2.5-flash"), DEC_2_2026).id,
            "gemini-3.8-flash"
        );
        assert_eq!(c.effective(Some("gone-model"), now).id, "gemini-3.8-flash");
        assert!(!c.available(now).any(|m| m.id == "claude-3-5-sonnet"));
        assert!(c.available(now).any(|m| m.id == "gpt-4o"));
    }

    #[test]
    fn rejects_broken_catalogues() {
        let bad = [
            r#"{"defaultModel":"a","models":[]}"#,
            r#"{"defaultModel":"a","models":[{"id":"a","provider":"openai"},{"id":"a","provider":"openai"}]}"#,
            r#"{"defaultModel":"a","models":[{"id":"a","provider":"mistral"}]}"#,
            r#"{"defaultModel":"a","models":[{"id":"a","provider":"openai","retiresAt":"2026-01-01","replacement":"a"}]}"#,
            r#"{"defaultModel":"a","models":[{"id":"a","provider":"openai"},{"id":"b","provider":"openai","retiresAt":"soon","replacement":"a"}]}"#,
            r#"{"defaultModel":"a","models":[{"id":"a","provider":"openai"},{"id":"b","provider":"openai","retiresAt":"2026-01-01"}]}"#,
        ];
        for text in bad {
            assert!(ModelCatalog::from_json(text).is_err(), "{text}");
        }
        assert_eq!(parse_date("2026-12-01"), Some(1_796_083_200_000));
    }
}
