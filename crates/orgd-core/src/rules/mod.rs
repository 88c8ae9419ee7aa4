//! The rules that must hold under any concurrency, each in one place: a function over the
//! transaction that holds the organization's lock (`Tx::lock_organization`), so the check
//! and the write it guards see one state. Tests for each run on SQLite and PostgreSQL.
//!
//! | rule | where |
//! |---|---|
//! | seats: members + pending invitations ≤ `maxUsers` | `seats` |
//! | an invitation counts through its expiry millisecond | `expiry` |
//! | an organization keeps an active admin | `last_admin` |
//! | monthly `maxTestRuns`, `maxConcurrentRuns` | `runs` |
//! | live runs counted per status, exact at every commit | `run_counts` |
//! | storage reserved before bytes land | `storage` |
//! | `maxProjects` | `projects` |
//! | run counters (KPIs, groups) move with every run created, finished or deleted | `run_stats` |
//! | an idempotency key is claimed once | `crate::idempotency` |
//! | a usage threshold is announced once per level and month | `thresholds` |

pub mod expiry;
pub mod last_admin;
pub mod projects;
pub mod run_counts;
pub mod run_stats;
pub mod runs;
pub mod seats;
pub mod storage;
pub mod thresholds;
