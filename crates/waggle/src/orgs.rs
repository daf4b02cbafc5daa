//! Making organizations: each comes with its signature key, a first API key and,
//! optionally, a dashboard user.

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use serde::Serialize;

use crate::api::auth::issue_key;
use crate::domain::ids::{OrgId, UserId};
use crate::domain::signature::SignatureKey;
use crate::domain::{parse_text, Invalid};
use crate::storage::{DashboardUser, Organization, Store};

/// What `waggle org create` prints: the secrets, shown this once.
#[derive(Debug, Serialize)]
pub struct CreatedOrg {
    pub org_id: OrgId,
    pub api_key: String,
    pub signature_key: String,
}

/// A dashboard login to create with the organization.
pub struct Admin<'a> {
    pub email: &'a str,
    pub password: &'a str,
}

pub async fn create(
    store: &dyn Store,
    name: &str,
    admin: Option<Admin<'_>>,
) -> anyhow::Result<CreatedOrg> {
    let org = Organization {
        id: OrgId::new(),
        name: parse_text(name, 255, "organization name")?,
        signature_key: SignatureKey::generate(),
        retiring_key: None,
    };
    let user = admin.map(|a| dashboard_user(org.id, a)).transpose()?;
    let key = issue_key("First key");
    store
        .create_organization(&org, &key.stored, user.as_ref())
        .await?;
    Ok(CreatedOrg {
        org_id: org.id,
        api_key: key.secret,
        signature_key: org.signature_key.expose().to_owned(),
    })
}

fn dashboard_user(org_id: OrgId, admin: Admin<'_>) -> Result<DashboardUser, Invalid> {
    let email = crate::domain::connector::parse_email(admin.email)?;
    if admin.password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Invalid::new(
            "value_error.password",
            format!("the password must have at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(DashboardUser {
        id: UserId::new(),
        org_id,
        email,
        password_hash: hash_password(admin.password),
    })
}

/// The shortest dashboard password accepted, at creation and at every change.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// An argon2id hash in PHC string form.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password")
        .to_string()
}
