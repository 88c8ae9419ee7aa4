//! Invitations to join an organization: a token shown once to the inviting admin and stored
//! as its SHA-256, a seat reserved from creation, 7 days to accept. Accepting moves an existing
//! user over (unless they are their organization's last admin); signing up with the token
//! creates the user in the inviting organization.

use serde_json::json;

use crate::audit::{self, Actor, AuditEvent};
use crate::db::notify::Change;
use crate::db::{Db, Tx};
use crate::error::{CoreError, CoreResult};
use crate::idempotency::{self, Replay};
use crate::outbox::{self, MEMBER_JOINED, MEMBER_REMOVED, MemberNotice};
use crate::rules::expiry::{is_expired, pending_at};
use crate::rules::last_admin;
use crate::rules::seats::{self, SeatUsage};
use crate::rules::thresholds::{self, Figure};
use crate::usage::Resource;
use crate::users::{NewUser, Role, UserRecord, member_in};

/// An invitation's secret: 32 random bytes as 64 hex characters (accepted in either case).
pub struct InviteToken(String);

impl InviteToken {
    pub fn generate() -> Self {
        Self(crate::ids::random_hex(32))
    }

    pub fn parse(raw: &str) -> Option<Self> {
        (raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self(raw.to_ascii_lowercase()))
    }

    pub fn hash(&self) -> String {
        crate::ids::sha256_hex(&self.0)
    }

    /// The plain token, for the one answer that shows it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvitationRecord {
    pub id: String,
    pub organization_id: String,
    pub email: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub status: String,
    pub invited_by: String,
    pub expires_at: i64,
    pub created_at: i64,
    pub accepted_at: Option<i64>,
}

impl InvitationRecord {
    pub fn is_expired(&self, now: i64) -> bool {
        is_expired(self.expires_at, now)
    }
}

/// A pending invitation as the organization's admins list it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingInvitation {
    #[sqlx(flatten)]
    pub invitation: InvitationRecord,
    pub invited_by_name: Option<String>,
}

/// What the holder of an invitation token may learn about it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvitationPreview {
    #[sqlx(flatten)]
    pub invitation: InvitationRecord,
    pub organization_name: String,
    pub inviter_name: Option<String>,
}

pub struct NewInvitation {
    pub id: String,
    pub organization_id: String,
    pub email: String,
    pub role: Role,
    pub token_hash: String,
    pub invited_by: String,
    pub expires_at: i64,
}

#[derive(Debug)]
pub enum Invited {
    Created,
    AlreadyMember,
    AlreadyInvited,
    SeatsFull(SeatUsage),
}

/// A user who just joined an organization with an invitation.
#[derive(Debug)]
pub struct Membership {
    pub invitation: InvitationRecord,
    pub organization_name: String,
    /// The user as they are now, in the inviting organization.
    pub user: UserRecord,
}

/// Result of joining an organization with an invitation (accept, or signup with a token).
#[derive(Debug)]
pub enum Joined {
    Joined(Box<Membership>),
    /// No pending invitation with that token (or, at signup, not for this email).
    NotFound,
    Expired,
    EmailMismatch,
    AlreadyMember,
    /// The caller is the last admin of the organization they would leave.
    LastAdmin,
    SeatsFull(SeatUsage),
    /// Signup only: the email already has an account.
    EmailTaken,
    /// The caller's membership changed while the request ran (moved or removed).
    MembershipChanged,
}

/// Who accepts an invitation.
pub struct Joiner<'a> {
    pub user_id: &'a str,
    /// The organization the caller belonged to when the request was authenticated.
    pub organization_id: &'a str,
}

const INVITATION_COLUMNS: &str = "i.id, i.organization_id, i.email, i.role, i.status, i.invited_by, i.expires_at, i.created_at, i.accepted_at";

async fn pending_by_token(tx: &mut Tx, token_hash: &str) -> CoreResult<Option<InvitationRecord>> {
    let sql = format!(
        "SELECT {INVITATION_COLUMNS} FROM invitations i WHERE i.token_hash = $1 AND i.status = 'pending'"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(token_hash)
        .fetch_optional(&mut **tx)
        .await?)
}

/// Marks the invitation accepted if it is still pending (false: someone else used it first).
async fn mark_accepted(tx: &mut Tx, invitation_id: &str, now: i64) -> CoreResult<bool> {
    let done = sqlx::query("UPDATE invitations SET status = 'accepted', accepted_at = $1 WHERE id = $2 AND status = 'pending'")
        .bind(now)
        .bind(invitation_id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

async fn organization_name(tx: &mut Tx, organization_id: &str) -> CoreResult<String> {
    Ok(
        sqlx::query_scalar("SELECT name FROM organizations WHERE id = $1")
            .bind(organization_id)
            .fetch_one(&mut **tx)
            .await?,
    )
}

fn accepted_event(invitation: &InvitationRecord, user_id: &str, ip: Option<String>) -> AuditEvent {
    AuditEvent {
        organization_id: invitation.organization_id.clone(),
        user_id: Some(user_id.to_string()),
        actor: Actor::User,
        action: "invitation.accepted",
        target_type: "invitation",
        target_id: invitation.id.clone(),
        details: json!({"email": invitation.email, "role": invitation.role.as_str()}),
        ip,
    }
}

/// Creates an invitation, reserving a seat; expired pending invitations of the
/// organization are marked `expired` first so they stop blocking and counting.
pub async fn create(
    db: &Db,
    invitation: &NewInvitation,
    audit: &AuditEvent,
    now: i64,
    replay: Option<&Replay<'_, NewInvitation>>,
) -> CoreResult<Invited> {
    let org = &invitation.organization_id;
    let mut tx = db.begin_write().await?;
    tx.lock_organization(org).await?;
    sqlx::query(
        "UPDATE invitations SET status = 'expired'
         WHERE organization_id = $1 AND status = 'pending' AND expires_at < $2",
    )
    .bind(org)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let member: Option<String> =
        sqlx::query_scalar("SELECT id FROM users WHERE organization_id = $1 AND email = $2")
            .bind(org)
            .bind(&invitation.email)
            .fetch_optional(&mut *tx)
            .await?;
    if member.is_some() {
        return Ok(Invited::AlreadyMember);
    }
    let pending: Option<String> =
        sqlx::query_scalar("SELECT id FROM invitations WHERE organization_id = $1 AND email = $2 AND status = 'pending'")
            .bind(org)
            .bind(&invitation.email)
            .fetch_optional(&mut *tx)
            .await?;
    if pending.is_some() {
        return Ok(Invited::AlreadyInvited);
    }
    let seats = seats::usage(&mut tx, org, now).await?;
    if !seats.admits(1) {
        return Ok(Invited::SeatsFull(seats));
    }
    sqlx::query(
        "INSERT INTO invitations (id, organization_id, email, role, token_hash, status, invited_by, expires_at, created_at, accepted_at)
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, NULL)",
    )
    .bind(&invitation.id)
    .bind(org)
    .bind(&invitation.email)
    .bind(invitation.role.as_str())
    .bind(&invitation.token_hash)
    .bind(&invitation.invited_by)
    .bind(invitation.expires_at)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    // The invitation takes a seat: the seat figure may cross a threshold.
    let figure = |used| Figure {
        used,
        limit: seats.limit,
    };
    thresholds::record(
        &mut tx,
        org,
        Resource::Users,
        figure(seats.used),
        figure(seats.used + 1),
        now,
    )
    .await?;
    audit::insert(&mut tx, audit, now).await?;
    idempotency::store(&mut tx, replay, invitation).await?;
    tx.commit().await?;
    Ok(Invited::Created)
}

/// One page of an organization's pending, unexpired invitations, newest first, and the total.
pub async fn pending(
    db: &Db,
    organization_id: &str,
    now: i64,
    limit: i64,
    offset: i64,
) -> CoreResult<(Vec<PendingInvitation>, i64)> {
    let sql = format!(
        "SELECT {INVITATION_COLUMNS}, u.name AS invited_by_name
         FROM invitations i LEFT JOIN users u ON u.id = i.invited_by
         WHERE i.organization_id = $1 AND {pending}
         ORDER BY i.created_at DESC, i.id DESC LIMIT $3 OFFSET $4",
        pending = pending_at("i", "$2"),
    );
    let invitations = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(organization_id)
        .bind(now)
        .bind(limit)
        .bind(offset)
        .fetch_all(db.pool())
        .await?;
    let total = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM invitations i WHERE i.organization_id = $1 AND {}",
        pending_at("i", "$2")
    )))
    .bind(organization_id)
    .bind(now)
    .fetch_one(db.pool())
    .await?;
    Ok((invitations, total))
}

/// Marks a pending invitation `revoked`; `audit` is completed with `{email, role}`.
/// False when the organization has no pending invitation with that id.
pub async fn revoke(
    db: &Db,
    organization_id: &str,
    id: &str,
    audit: AuditEvent,
    now: i64,
) -> CoreResult<bool> {
    let mut tx = db.begin_write().await?;
    let revoked: Option<(String, String)> = sqlx::query_as(
        "UPDATE invitations SET status = 'revoked'
         WHERE id = $1 AND organization_id = $2 AND status = 'pending'
         RETURNING email, role",
    )
    .bind(id)
    .bind(organization_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((email, role)) = revoked else {
        return Ok(false);
    };
    audit::insert(
        &mut tx,
        &audit.with_details(json!({"email": email, "role": role})),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// The pending invitation with that token hash, with its organization and inviter names.
pub async fn preview(db: &Db, token_hash: &str) -> CoreResult<Option<InvitationPreview>> {
    let sql = format!(
        "SELECT {INVITATION_COLUMNS}, o.name AS organization_name, u.name AS inviter_name
         FROM invitations i
         JOIN organizations o ON o.id = i.organization_id
         LEFT JOIN users u ON u.id = i.invited_by
         WHERE i.token_hash = $1 AND i.status = 'pending'"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(token_hash)
        .fetch_optional(db.pool())
        .await?)
}

/// An existing user moves into the inviting organization with the invited role.
pub async fn accept(
    db: &Db,
    token_hash: &str,
    joiner: Joiner<'_>,
    ip: Option<String>,
    now: i64,
) -> CoreResult<Joined> {
    let mut tx = db.begin_write().await?;
    let Some(invitation) = pending_by_token(&mut tx, token_hash).await? else {
        return Ok(Joined::NotFound);
    };
    if invitation.is_expired(now) {
        return Ok(Joined::Expired);
    }
    // Both organizations, in a fixed order so two opposite moves cannot deadlock.
    let mut orgs = [invitation.organization_id.as_str(), joiner.organization_id];
    orgs.sort_unstable();
    tx.lock_organization(orgs[0]).await?;
    if orgs[1] != orgs[0] {
        tx.lock_organization(orgs[1]).await?;
    }
    let Some(user) = member_in(&mut tx, joiner.organization_id, joiner.user_id).await? else {
        return Ok(Joined::MembershipChanged);
    };
    if user.email != invitation.email {
        return Ok(Joined::EmailMismatch);
    }
    if user.organization_id == invitation.organization_id {
        return Ok(Joined::AlreadyMember);
    }
    if last_admin::would_orphan(&mut tx, &user).await? {
        return Ok(Joined::LastAdmin);
    }
    // The invitation already holds a seat: accepting only converts it, so this refuses
    // only an organization that is over its limit (e.g. the operator lowered it).
    let seats = seats::usage(&mut tx, &invitation.organization_id, now).await?;
    if !seats.admits(0) {
        return Ok(Joined::SeatsFull(seats));
    }
    if !mark_accepted(&mut tx, &invitation.id, now).await? {
        return Ok(Joined::NotFound);
    }
    tx.notify(Change::User(user.id.clone())).await?;
    sqlx::query("UPDATE users SET organization_id = $1, role = $2, updated_at = $3 WHERE id = $4")
        .bind(&invitation.organization_id)
        .bind(invitation.role.as_str())
        .bind(now)
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;
    // API keys are bound to the organization they were made in.
    sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;
    let left = AuditEvent {
        organization_id: user.organization_id.clone(),
        user_id: Some(user.id.clone()),
        actor: Actor::User,
        action: "user.left",
        target_type: "user",
        target_id: user.id.clone(),
        details: json!({"targetEmail": user.email, "targetRole": user.role.as_str()}),
        ip: ip.clone(),
    };
    audit::insert(&mut tx, &left, now).await?;
    audit::insert(&mut tx, &accepted_event(&invitation, &user.id, ip), now).await?;
    let left = MemberNotice {
        id: &user.id,
        name: &user.name,
        email: &user.email,
        role: user.role.as_str(),
    };
    outbox::member_event(
        &mut tx,
        &user.organization_id,
        MEMBER_REMOVED,
        &left,
        None,
        now,
    )
    .await?;
    let joined = MemberNotice {
        role: invitation.role.as_str(),
        ..left
    };
    outbox::member_event(
        &mut tx,
        &invitation.organization_id,
        MEMBER_JOINED,
        &joined,
        None,
        now,
    )
    .await?;
    let organization_name = organization_name(&mut tx, &invitation.organization_id).await?;
    tx.commit().await?;
    let user = UserRecord {
        organization_id: invitation.organization_id.clone(),
        role: invitation.role,
        updated_at: now,
        ..user
    };
    Ok(Joined::Joined(Box::new(Membership {
        invitation,
        organization_name,
        user,
    })))
}

/// A new user is created in the inviting organization with the invited role.
pub async fn signup(
    db: &Db,
    token_hash: &str,
    user: &NewUser,
    ip: Option<String>,
    now: i64,
) -> CoreResult<Joined> {
    let mut tx = db.begin_write().await?;
    let Some(invitation) = pending_by_token(&mut tx, token_hash)
        .await?
        .filter(|i| i.email == user.email)
    else {
        return Ok(Joined::NotFound);
    };
    if invitation.is_expired(now) {
        return Ok(Joined::Expired);
    }
    let org = &invitation.organization_id;
    tx.lock_organization(org).await?;
    let seats = seats::usage(&mut tx, org, now).await?;
    if !seats.admits(0) {
        return Ok(Joined::SeatsFull(seats));
    }
    if !mark_accepted(&mut tx, &invitation.id, now).await? {
        return Ok(Joined::NotFound);
    }
    let inserted = sqlx::query(
        "INSERT INTO users (id, organization_id, email, name, password_hash, role, status, last_login_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'active', NULL, $7, $7)",
    )
    .bind(&user.id)
    .bind(org)
    .bind(&user.email)
    .bind(&user.name)
    .bind(&user.password_hash)
    .bind(invitation.role.as_str())
    .bind(now)
    .execute(&mut *tx)
    .await;
    match inserted.map_err(CoreError::from) {
        Err(e) if e.is_conflict_on("email") => return Ok(Joined::EmailTaken),
        other => other?,
    };
    audit::insert(&mut tx, &accepted_event(&invitation, &user.id, ip), now).await?;
    let joined = MemberNotice {
        id: &user.id,
        name: &user.name,
        email: &user.email,
        role: invitation.role.as_str(),
    };
    outbox::member_event(&mut tx, org, MEMBER_JOINED, &joined, None, now).await?;
    let organization_name = organization_name(&mut tx, org).await?;
    tx.commit().await?;
    let record = UserRecord {
        id: user.id.clone(),
        organization_id: org.clone(),
        email: user.email.clone(),
        name: user.name.clone(),
        role: invitation.role,
        status: "active".into(),
        last_login_at: None,
        created_at: now,
        updated_at: now,
    };
    Ok(Joined::Joined(Box::new(Membership {
        invitation,
        organization_name,
        user: record,
    })))
}
