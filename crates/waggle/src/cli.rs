//! The `waggle` command line: `serve`, `org create`, `config check|print` and `listen`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

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
    Serve(Box<Config>),
    /// Manage organizations.
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// A local receiver for developing a webhook handler: prints each delivery and
    /// whether its signatures are valid, and answers 200 or forwards it.
    Listen(crate::listen::Listen),
    /// Check or show a configuration file for `serve --config`.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Exit 0 when `serve --config FILE` would start with this file (and this
    /// environment); otherwise print what is wrong, naming the key, and exit 2.
    Check {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the configuration `serve --config FILE` would run with (the file, then the
    /// environment, over the defaults), as TOML, the database password hidden.
    Print {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// Parses the command line; for `serve --config FILE`, with the file's values as the
/// flags' defaults (see [`crate::config::file`]). Exits on a usage error, as clap does.
pub fn parse() -> anyhow::Result<Cli> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = Cli::parse_from(&args);
    let Command::Serve(config) = &cli.command else {
        return Ok(cli);
    };
    let Some(path) = &config.config_file else {
        return Ok(cli);
    };
    let values = crate::config::file::read(path)?;
    let command =
        Cli::command().mut_subcommand("serve", |serve| crate::config::file::apply(serve, &values));
    let matches = command.get_matches_from(&args);
    Ok(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}

/// `serve`'s arguments as a file and the environment make them, with no flags.
fn from_file(path: &Path) -> anyhow::Result<clap::ArgMatches> {
    let values = crate::config::file::read(path)?;
    let serve =
        crate::config::file::apply(Config::augment_args(clap::Command::new("serve")), &values);
    serve
        .try_get_matches_from(["serve"])
        .map_err(|e| anyhow::anyhow!("{}", e.render().to_string().trim_end()))
}

/// The configuration as TOML: every flag under its file key, the database password
/// hidden.
fn print_config(matches: &clap::ArgMatches) -> anyhow::Result<String> {
    let mut table = toml::Table::new();
    let serve = Config::augment_args(clap::Command::new("serve"));
    for (key, id) in crate::config::file::keys() {
        let Some(arg) = serve.get_arguments().find(|a| a.get_id() == id.as_str()) else {
            continue;
        };
        let Some(raw) = matches.get_raw(&id) else {
            continue;
        };
        let mut values: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
        if matches!(id.as_str(), "database" | "otlp_endpoint") {
            values = values.iter().map(|url| redact(url)).collect();
        }
        let value = match arg.get_action() {
            clap::ArgAction::Append => {
                toml::Value::Array(values.into_iter().map(toml::Value::String).collect())
            }
            clap::ArgAction::SetTrue => toml::Value::Boolean(values.join("") == "true"),
            _ => {
                let value = values.join(",");
                match value.parse::<i64>() {
                    Ok(n) => toml::Value::Integer(n),
                    Err(_) => toml::Value::String(value),
                }
            }
        };
        table.insert(key, value);
    }
    Ok(toml::to_string(&table)?)
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
        Command::Listen(listen) => crate::listen::run(listen).await,
        Command::Config {
            command: ConfigCommand::Check { config },
        } => match from_file(&config).and_then(|m| Ok(Config::from_arg_matches(&m)?)) {
            Ok(parsed) => {
                parsed.sender()?;
                println!("{}: ok", config.display());
                Ok(())
            }
            Err(e) => {
                eprintln!("{}: {e:#}", config.display());
                std::process::exit(2);
            }
        },
        Command::Config {
            command: ConfigCommand::Print { config },
        } => {
            let matches = from_file(&config)?;
            Config::from_arg_matches(&matches)?;
            print!("{}", print_config(&matches)?);
            Ok(())
        }
        Command::Serve(config) => {
            let traces = crate::telemetry::init(config.log_json, config.otlp_endpoint.as_deref())?;
            let app = App::build(*config.clone()).await?;
            first_run(&app).await?;
            tracing::info!(address = %app.local_addr(), database = %redact(&config.database), "waggle is serving");
            let served = app.run_until_stopped().await;
            if let Some(traces) = traces {
                let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
            }
            served
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
            crate::telemetry::init(false, None)?;
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
