//! The members of an organization: who they are, role changes and removals. Both re-check,
//! under the organization's lock, that the acting admin still is one, and keep an active
//! admin (`rules::last_admin`).

use serde_json::json;

use crate::audit::{self, AuditEvent};
use crate::cursor::{Cursor, limit_clause, split_page};
use crate::db::notify::Change;
use crate::db::{Db, Tx};
use crate::error::CoreResult;
use crate::outbox::{self, MEMBER_REMOVED, MEMBER_ROLE_CHANGED, MemberNotice};
use crate::rules::last_admin;
use crate::users::{self, Role, USER_COLUMNS, UserRecord};

/// Result of changing or removing a member.
#[derive(Debug)]
pub enum MemberChange {
    /// Done; the target as it was before the change.
    Done(UserRecord),
    NotFound,
    LastAdmin,
    /// The acting admin is no longer an admin of this organization (their current role, or
    /// `None` when they are no longer in it).
    ActorNotAdmin(Option<Role>),
}

/// Re-checks, under the organization lock, that the acting admin still is one: the check
/// made when the request was authenticated may be stale by now.
async fn check_actor(
    tx: &mut Tx,
    organization_id: &str,
    actor_id: &str,
) -> CoreResult<Result<(), MemberChange>> {
    let actor = users::member_in(tx, organization_id, actor_id).await?;
    Ok(match actor {
        Some(a) if a.role == Role::Admin && a.status == "active" => Ok(()),
        other => Err(MemberChange::ActorNotAdmin(other.map(|a| a.role))),
    })
}

/// True when taking `target`'s admin role away would leave the organization without an
/// active admin. (With the acting admin re-checked first this cannot happen for role changes
/// and removals; it is the rule itself, kept where the write happens.)
/// Starts a member change: locks the organization, re-checks that the actor is still an
/// active admin, and finds the target — all inside the returned transaction.
async fn lock_actor_and_target(
    db: &Db,
    organization_id: &str,
    actor_id: &str,
    target_id: &str,
) -> CoreResult<Result<(Tx, UserRecord), MemberChange>> {
    let mut tx = db.begin_write().await?;
    tx.lock_organization(organization_id).await?;
    if let Err(refused) = check_actor(&mut tx, organization_id, actor_id).await? {
        return Ok(Err(refused));
    }
    Ok(
        match users::member_in(&mut tx, organization_id, target_id).await? {
            Some(target) => Ok((tx, target)),
            None => Err(MemberChange::NotFound),
        },
    )
}

/// A page of members.
#[derive(Debug)]
pub struct MemberPage {
    pub members: Vec<UserRecord>,
    /// Every member of the organization.
    pub total: i64,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// One page of an organization's members, newest first (`users_page_idx`), after `after`
/// when given, and how many there are.
pub async fn list(
    db: &Db,
    organization_id: &str,
    limit: i64,
    offset: i64,
    after: Option<&Cursor>,
) -> CoreResult<MemberPage> {
    let older = match after {
        Some(_) => format!(" AND {}", Cursor::older_than("$2", "$3")),
        None => String::new(),
    };
    let page = limit_clause(limit + 1, offset);
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM users u WHERE u.organization_id = $1{older}
         ORDER BY u.created_at DESC, u.id DESC {page}"
    );
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(organization_id);
    if let Some(cursor) = after {
        query = query.bind(cursor.created_at).bind(&cursor.id);
    }
    let users: Vec<UserRecord> = query.fetch_all(db.pool()).await?;
    let total = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE organization_id = $1")
        .bind(organization_id)
        .fetch_one(db.pool())
        .await?;
    let (members, next) = split_page(users, limit, |u| Cursor {
        created_at: u.created_at,
        id: u.id.clone(),
    });
    Ok(MemberPage {
        members,
        total,
        next,
    })
}

pub async fn get(db: &Db, organization_id: &str, user_id: &str) -> CoreResult<Option<UserRecord>> {
    let sql =
        format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1 AND u.organization_id = $2");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .bind(organization_id)
        .fetch_optional(db.pool())
        .await?)
}

/// Sets a member's role unless that leaves no admin; `audit` is completed with
/// `{oldRole, newRole, targetEmail}`. Nothing is written when the role is unchanged.
pub async fn change_role(
    db: &Db,
    organization_id: &str,
    actor_id: &str,
    target_id: &str,
    role: Role,
    audit: AuditEvent,
    now: i64,
) -> CoreResult<MemberChange> {
    let (mut tx, target) =
        match lock_actor_and_target(db, organization_id, actor_id, target_id).await? {
            Ok(locked) => locked,
            Err(refused) => return Ok(refused),
        };
    if target.role == role {
        return Ok(MemberChange::Done(target));
    }
    if role != Role::Admin && last_admin::would_orphan(&mut tx, &target).await? {
        return Ok(MemberChange::LastAdmin);
    }
    tx.notify(Change::User(target_id.to_string())).await?;
    sqlx::query("UPDATE users SET role = $1, updated_at = $2 WHERE id = $3")
        .bind(role.as_str())
        .bind(now)
        .bind(target_id)
        .execute(&mut *tx)
        .await?;
    let audit = audit.with_details(json!({
        "oldRole": target.role.as_str(),
        "newRole": role.as_str(),
        "targetEmail": target.email,
    }));
    audit::insert(&mut tx, &audit, now).await?;
    let member = MemberNotice {
        id: &target.id,
        name: &target.name,
        email: &target.email,
        role: role.as_str(),
    };
    outbox::member_event(
        &mut tx,
        organization_id,
        MEMBER_ROLE_CHANGED,
        &member,
        Some(target.role.as_str()),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(MemberChange::Done(target))
}

/// Deletes a member (their API keys go with them) unless that leaves no admin; `audit` is
/// completed with `{targetEmail, targetRole, targetName}`.
pub async fn remove(
    db: &Db,
    organization_id: &str,
    actor_id: &str,
    target_id: &str,
    audit: AuditEvent,
    now: i64,
) -> CoreResult<MemberChange> {
    let (mut tx, target) =
        match lock_actor_and_target(db, organization_id, actor_id, target_id).await? {
            Ok(locked) => locked,
            Err(refused) => return Ok(refused),
        };
    if last_admin::would_orphan(&mut tx, &target).await? {
        return Ok(MemberChange::LastAdmin);
    }
    // api_keys rows go with the user (ON DELETE CASCADE); sessions die because
    // `identity` no longer finds the user.
    tx.notify(Change::User(target_id.to_string())).await?;
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(target_id)
        .execute(&mut *tx)
        .await?;
    let audit = audit.with_details(json!({
        "targetEmail": target.email,
        "targetRole": target.role.as_str(),
        "targetName": target.name,
    }));
    audit::insert(&mut tx, &audit, now).await?;
    let member = MemberNotice {
        id: &target.id,
        name: &target.name,
        email: &target.email,
        role: target.role.as_str(),
    };
    outbox::member_event(&mut tx, organization_id, MEMBER_REMOVED, &member, None, now).await?;
    tx.commit().await?;
    Ok(MemberChange::Done(target))
}
