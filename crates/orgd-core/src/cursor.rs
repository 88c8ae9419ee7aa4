//! Keyset paging for the lists ordered newest first by `(created_at, id)`: the audit log,
//! executions and members. A page after a cursor is an index range read, so a deep page costs
//! what the first does (an `OFFSET` reads and throws away every row before it).

/// Where a page starts: strictly older than this entry. Opaque to clients (`<ms>_<id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: i64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}_{}", self.created_at, self.id)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (ms, id) = s.split_once('_')?;
        let created_at = ms.parse().ok()?;
        crate::ids::is_valid(id).then(|| Self {
            created_at,
            id: id.to_string(),
        })
    }

    /// The SQL condition "strictly older than the cursor" over `created_at` and `id`, the
    /// cursor's values bound at the placeholders `created_at` and `id`. A row-value
    /// comparison: SQLite and PostgreSQL both read it as one range of a
    /// `(…, created_at, id)` index.
    pub fn older_than(created_at: &str, id: &str) -> String {
        format!("(created_at, id) < ({created_at}, {id})")
    }
}

/// `LIMIT … OFFSET …` with the numbers written into the SQL rather than bound: PostgreSQL
/// plans a prepared statement once for any parameters, and with a bound `LIMIT` it guesses a
/// tenth of the rows — enough for it to sort an organization's whole history instead of
/// reading the first rows of an index range (measured: 389 ms instead of 2 ms at 200,000
/// runs). Both are integers the caller validated, so nothing else can reach the SQL.
pub fn limit_clause(limit: i64, offset: i64) -> String {
    format!("LIMIT {limit} OFFSET {offset}")
}

/// The first `limit` of `rows` (fetched with `limit + 1`) and the cursor of the next page,
/// `None` when there is none.
pub fn split_page<T>(
    mut rows: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> Cursor,
) -> (Vec<T>, Option<Cursor>) {
    let limit = usize::try_from(limit).unwrap_or(0);
    if rows.len() <= limit {
        return (rows, None);
    }
    rows.truncate(limit);
    let next = rows.last().map(key);
    (rows, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            created_at: 1_700_000_000_123,
            id: "507f191e810c19729de860ea".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("garbage"), None);
        assert_eq!(Cursor::decode("12_507F191E810C19729DE860EA"), None);
        assert_eq!(Cursor::decode("x_507f191e810c19729de860ea"), None);
    }

    #[test]
    fn a_page_knows_whether_another_follows() {
        let key = |n: &i64| Cursor {
            created_at: *n,
            id: "507f191e810c19729de860ea".into(),
        };
        assert_eq!(split_page(vec![3, 2, 1], 3, key), (vec![3, 2, 1], None));
        let (page, next) = split_page(vec![4, 3, 2, 1], 3, key);
        assert_eq!(page, vec![4, 3, 2]);
        assert_eq!(next.map(|c| c.created_at), Some(2));
    }
}
