//! The `waggle` command line: `serve`, and `org create`.

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::orgs::{self, Admin};
use crate::startup::App;
use crate::storage;

#[derive(Debug, Parser)]
#[command(
    name = "waggle",
    version,
    about = "Signed, retried, logged webhooks for connector syncs and data changes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API, the dashboard and the dispatcher.
    Serve(Config),
    /// Manage organizations.
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization; prints {"org_id", "api_key", "signature_key"}.
    Create {
        #[arg(long)]
        name: String,
        /// Email of a dashboard user to create with it.
        #[arg(long, requires = "admin_password")]
        admin_email: Option<String>,
        /// Password of that dashboard user (at least 8 characters).
        #[arg(
            long,
            requires = "admin_email",
            env = "WAGGLE_ADMIN_PASSWORD",
            hide_env_values = true
        )]
        admin_password: Option<String>,
        #[arg(
            long,
            env = "WAGGLE_DATABASE_URL",
            default_value = "sqlite://waggle.db"
        )]
        database: String,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(config) => {
            crate::telemetry::init(config.log_json);
            let app = App::build(config.clone()).await?;
            first_run(&app).await?;
            tracing::info!(address = %app.local_addr(), database = %redact(&config.database), "waggle is serving");
            app.run_until_stopped().await
        }
        Command::Org {
            command:
                OrgCommand::Create {
                    name,
                    admin_email,
                    admin_password,
                    database,
                },
        } => {
            crate::telemetry::init(false);
            // An organization's keys are shown once: written to disk before they are.
            let store = storage::open(&database, storage::SqliteSync::Full).await?;
            let admin = admin_email
                .as_deref()
                .zip(admin_password.as_deref())
                .map(|(email, password)| Admin { email, password });
            let created = orgs::create(store.as_ref(), &name, admin).await?;
            println!("{}", serde_json::to_string(&created)?);
            Ok(())
        }
    }
}

/// On an empty database, makes a first organization and prints its secrets once, so a
/// new user needs no other command.
async fn first_run(app: &App) -> anyhow::Result<()> {
    let store = app.store();
    if store.organization_count().await? > 0 {
        return Ok(());
    }
    let password = random_password();
    let email = "admin@localhost.localdomain";
    let created = orgs::create(
        store.as_ref(),
        "My organization",
        Some(Admin {
            email,
            password: &password,
        }),
    )
    .await?;
    let url = format!("http://{}", app.local_addr());
    println!(
        "\nFirst start: created an organization. These secrets are shown once.\n\
         \n  Dashboard      {url}/\n  Login          {email}\n  Password       {password}\
         \n  API key        {}\n  Signature key  {}\n\
         \n  Try: curl -H 'Authorization: Bearer {}' {url}/api/v1/webhooks\n",
        created.api_key, created.signature_key, created.api_key
    );
    Ok(())
}

fn random_password() -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(char::from)
        .collect()
}

/// A database URL without its password, for logs.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
