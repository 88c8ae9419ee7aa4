//! Run requests (`POST /api/execution-request`): what a runner needs to start a requested
//! run — image, command, tests, configuration and environment variables. The variables'
//! values are sealed by the vault before they reach the store and are opened only for a
//! runner (`read_run_request`, audited); every other view shows their names.

use std::collections::BTreeMap;
use std::fmt;

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::audit::{self, AuditEvent};
use crate::db::{Db, Tx};
use crate::error::{CoreError, CoreResult};

/// At most this many variables per run request.
pub const MAX_ENV_VARS: usize = 100;
/// A variable's value is at most this many bytes (UTF-8).
pub const MAX_ENV_VALUE_BYTES: usize = 4096;

/// A run request's environment variables, by name. `Debug` never shows a value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EnvVars(BTreeMap<String, String>);

impl fmt::Debug for EnvVars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`: what every shell accepts as a variable name.
fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl EnvVars {
    /// Checks each variable; the error says what is wrong.
    pub fn parse(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for (name, value) in vars {
            if !is_env_name(&name) || name.len() > 256 {
                return Err(format!(
                    "config.envVars names must match [A-Za-z_][A-Za-z0-9_]* (at most 256 characters); {:?} does not",
                    name.chars().take(64).collect::<String>()
                ));
            }
            if value.len() > MAX_ENV_VALUE_BYTES {
                return Err(format!(
                    "config.envVars.{name} is longer than {MAX_ENV_VALUE_BYTES} bytes"
                ));
            }
            map.insert(name, value);
            if map.len() > MAX_ENV_VARS {
                return Err(format!(
                    "config.envVars may hold at most {MAX_ENV_VARS} variables"
                ));
            }
        }
        Ok(Self(map))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The plaintext the vault seals: a JSON object of strings.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".into())
    }

    /// Reads what `to_json` wrote (after the vault opened it).
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text)
            .map(Self)
            .map_err(|e| format!("run request envVars: {e}"))
    }
}

/// A run request to record with its execution, already checked; `env_values` is sealed
/// for `SecretTable::RunRequests.binding(organization, execution id)`.
#[derive(Debug, Clone)]
pub struct NewRunRequest {
    pub image: String,
    pub command: String,
    pub folder: String,
    pub tests: Vec<String>,
    pub environment: Option<String>,
    pub base_url: Option<String>,
    pub env_names: Vec<String>,
    pub env_values: Option<String>,
}

/// A stored run request. `env_values` is still sealed.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub execution_id: String,
    pub image: String,
    pub command: String,
    pub folder: String,
    pub tests: Vec<String>,
    pub environment: Option<String>,
    pub base_url: Option<String>,
    pub env_names: Vec<String>,
    pub env_values: Option<String>,
    pub project_id: Option<String>,
}

fn json_strings(text: &str, what: &str) -> CoreResult<Vec<String>> {
    serde_json::from_str(text).map_err(|e| CoreError::Corrupt(format!("run request {what}: {e}")))
}

impl RunRequest {
    /// From a row of `run_requests r` joined with its execution `e`.
    pub(super) fn from_row(row: &AnyRow) -> CoreResult<Self> {
        let tests: String = row.try_get("rr_tests")?;
        let names: String = row.try_get("rr_env_names")?;
        Ok(Self {
            execution_id: row.try_get("rr_execution_id")?,
            image: row.try_get("rr_image")?,
            command: row.try_get("rr_command")?,
            folder: row.try_get("rr_folder")?,
            tests: json_strings(&tests, "tests")?,
            environment: row.try_get("environment")?,
            base_url: row.try_get("rr_base_url")?,
            env_names: json_strings(&names, "envVars names")?,
            env_values: row.try_get("rr_env_values")?,
            project_id: row.try_get("project_id")?,
        })
    }
}

/// The columns `RunRequest::from_row` reads besides the execution's own, from `run_requests r`.
pub(super) const RUN_REQUEST_COLUMNS: &str =
    "r.execution_id AS rr_execution_id, r.image AS rr_image, r.command AS rr_command,
    r.folder AS rr_folder, r.tests AS rr_tests, r.base_url AS rr_base_url,
    r.env_names AS rr_env_names, r.env_values AS rr_env_values";

/// Records `request` for the execution `execution_id` inside the transaction creating it.
pub(super) async fn insert(
    tx: &mut Tx,
    org_id: &str,
    execution_id: &str,
    request: &NewRunRequest,
    now: i64,
) -> CoreResult<()> {
    let tests = serde_json::to_string(&request.tests).unwrap_or_else(|_| "[]".into());
    let names = serde_json::to_string(&request.env_names).unwrap_or_else(|_| "[]".into());
    sqlx::query(
        "INSERT INTO run_requests (execution_id, organization_id, image, command, folder, tests, base_url,
                                   env_names, env_values, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(execution_id)
    .bind(org_id)
    .bind(&request.image)
    .bind(&request.command)
    .bind(&request.folder)
    .bind(tests)
    .bind(request.base_url.as_deref())
    .bind(names)
    .bind(request.env_values.as_deref())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The run request of a live execution, for a runner: written to the audit log (`audit`)
/// before it is returned, in one transaction, so no values are handed out unrecorded.
/// `None` when the execution does not exist or was not requested as a run.
pub async fn read_run_request(
    db: &Db,
    org_id: &str,
    task_id: &str,
    audit: &AuditEvent,
    now: i64,
) -> CoreResult<Option<RunRequest>> {
    let mut tx = db.begin_write().await?;
    let sql = format!(
        "SELECT {RUN_REQUEST_COLUMNS}, e.environment, e.project_id
         FROM executions e JOIN run_requests r ON r.execution_id = e.id
         WHERE e.organization_id = $1 AND e.task_id = $2 AND e.deleted_at IS NULL"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(org_id)
        .bind(task_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let request = RunRequest::from_row(&row)?;
    audit::insert(&mut tx, audit, now).await?;
    tx.commit().await?;
    Ok(Some(request))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Result<EnvVars, String> {
        EnvVars::parse(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn env_var_rules() {
        assert!(vars(&[("BASE_URL", "x"), ("_a1", ""), ("z", "é")]).is_ok());
        for bad in ["1A", "A-B", "", "A B", "É"] {
            assert!(vars(&[(bad, "x")]).is_err(), "{bad:?}");
        }
        assert!(vars(&[("A", &"x".repeat(MAX_ENV_VALUE_BYTES))]).is_ok());
        assert!(vars(&[("A", &"x".repeat(MAX_ENV_VALUE_BYTES + 1))]).is_err());
        // Bytes, not characters.
        assert!(vars(&[("A", &"é".repeat(MAX_ENV_VALUE_BYTES / 2 + 1))]).is_err());
        let hundred: Vec<(String, String)> = (0..MAX_ENV_VARS)
            .map(|i| (format!("V{i}"), "x".into()))
            .collect();
        assert!(EnvVars::parse(hundred.clone()).is_ok());
        let mut too_many = hundred;
        too_many.push(("V_EXTRA".into(), "x".into()));
        assert!(EnvVars::parse(too_many).is_err());
    }

    #[test]
    fn values_round_trip_and_never_show_in_debug() {
        let v = vars(&[("TOKEN", "s3cret-value"), ("A", "1")]).unwrap();
        assert_eq!(EnvVars::from_json(&v.to_json()).unwrap(), v);
        assert_eq!(v.names(), ["A", "TOKEN"]);
        assert!(!format!("{v:?}").contains("s3cret"));
    }
}
