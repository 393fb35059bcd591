//! `--config FILE` (or `IMAGE_LEDGER_CONFIG`): one TOML file for every
//! setting of `serve`, keyed by the flag's name with `_` for `-`
//! (`data_dir = "/var/lib/image-ledger"`, `regions = ["ap-guangzhou"]`),
//! plus `signing_key_seed`, which is never a flag.
//!
//! Precedence is flag > environment > file > default: a setting from the
//! file becomes a flag on the command line only when neither the flag nor
//! its environment variable was given. An unknown key is refused with its
//! name; a key the command at hand does not take (`addr` for `audit
//! verify`) is left alone.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::CommandFactory;

use super::{Cli, FileSettings};

/// The environment variable naming the file.
const CONFIG_VARIABLE: &str = "IMAGE_LEDGER_CONFIG";

/// Settings that are not flags: secrets, and tables.
const NOT_FLAGS: &[&str] = &["signing_key_seed", "auth", "tls", "cloud_api"];

/// What the file adds to a command line.
#[derive(Default)]
pub struct FromFile {
    /// The command line with the file's settings added as flags.
    pub args: Vec<OsString>,
    /// What the file holds that is not a flag.
    pub file: FileSettings,
}

/// Reads the file `args` or the environment name, if any, and returns the
/// command line it gives.
pub fn apply(args: Vec<OsString>) -> anyhow::Result<FromFile> {
    let Some(path) = config_path(&args) else {
        return Ok(FromFile {
            args,
            ..FromFile::default()
        });
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    apply_text(args, &text, &path, |name| std::env::var_os(name).is_some())
}

/// [`apply`] of the file's `text`, with `env_set` telling which
/// environment variables are set.
pub fn apply_text(
    mut args: Vec<OsString>,
    text: &str,
    path: &Path,
    env_set: impl Fn(&str) -> bool,
) -> anyhow::Result<FromFile> {
    let table: toml::Table = toml::from_str(text)
        .with_context(|| format!("the config file {} is not valid TOML", path.display()))?;
    let command = Cli::command();
    let serve = command
        .find_subcommand("serve")
        .context("the command line has no serve command")?;
    // The subcommand this command line runs, and its own subcommand.
    let mut running = &command;
    for arg in args.iter().skip(1) {
        let Some(arg) = arg.to_str() else { continue };
        if let Some(sub) = running.find_subcommand(arg) {
            running = sub;
        }
    }
    let mut seed = None;
    let mut auth = None;
    let mut tls = None;
    let mut cloud_api = None;
    let mut added = Vec::new();
    for (key, value) in &table {
        if key == "signing_key_seed" {
            seed = Some(scalar(key, value)?);
            continue;
        }
        if key == "auth" {
            auth = Some(table_of(key, value, path)?);
            continue;
        }
        if key == "tls" {
            tls = Some(table_of(key, value, path)?);
            continue;
        }
        if key == "cloud_api" {
            cloud_api = Some(table_of(key, value, path)?);
            continue;
        }
        let flag = key.replace('_', "-");
        let known = |cmd: &clap::Command| {
            cmd.get_arguments()
                .find(|arg| arg.get_long() == Some(flag.as_str()))
                .cloned()
        };
        if known(serve).is_none() && !NOT_FLAGS.contains(&key.as_str()) {
            bail!(
                "the config file {} has an unknown setting `{key}` (settings are serve's flags, \
                 with _ for -, signing_key_seed, [auth], [tls] and [cloud_api])",
                path.display()
            );
        }
        let Some(arg) = known(running) else { continue };
        let given = args.iter().any(|a| {
            a.to_str()
                .is_some_and(|a| a == format!("--{flag}") || a.starts_with(&format!("--{flag}=")))
        });
        let from_env = arg
            .get_env()
            .and_then(|name| name.to_str())
            .is_some_and(&env_set);
        if !given && !from_env {
            match (arg.get_action(), value) {
                // A switch (`--insecure-no-auth`) takes no value: given
                // when true, left out when false.
                (clap::ArgAction::SetTrue, toml::Value::Boolean(on)) => {
                    if *on {
                        added.push(OsString::from(format!("--{flag}")));
                    }
                }
                _ => added.push(OsString::from(format!("--{flag}={}", scalar(key, value)?))),
            }
        }
    }
    // After the subcommand's name, so they belong to it.
    args.extend(added);
    Ok(FromFile {
        args,
        file: FileSettings {
            signing_key_seed: seed,
            auth,
            tls,
            cloud_api,
            path: Some(path.to_owned()),
        },
    })
}

/// The `[cloud_api]` table of the config file at `path`, read anew (a
/// reload).
pub fn cloud_api_of(path: &Path) -> anyhow::Result<Option<image_ledger::auth::CloudApiConfig>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("the config file {} is not valid TOML", path.display()))?;
    table
        .get("cloud_api")
        .map(|value| table_of("cloud_api", value, path))
        .transpose()
}

/// The file's `[key]` table as `T`, refused with what is wrong in it.
fn table_of<T: serde::de::DeserializeOwned>(
    key: &str,
    value: &toml::Value,
    path: &Path,
) -> anyhow::Result<T> {
    value
        .clone()
        .try_into()
        .with_context(|| format!("the config file {}: [{key}]", path.display()))
}

/// A value as the flag would take it: lists joined by commas.
fn scalar(key: &str, value: &toml::Value) -> anyhow::Result<String> {
    Ok(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| scalar(key, item))
            .collect::<anyhow::Result<Vec<_>>>()?
            .join(","),
        _ => bail!("the config file's `{key}` must be a string, a number, a boolean or a list"),
    })
}

/// `--config FILE`, `--config=FILE`, or the environment's.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let Some(text) = arg.to_str() else { continue };
        if text == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(CONFIG_VARIABLE).map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn line(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn run(args: &[&str], text: &str, env: &[&str]) -> anyhow::Result<Vec<String>> {
        let given = apply_text(line(args), text, Path::new("ledger.toml"), |name| {
            env.contains(&name)
        })?;
        Ok(given
            .args
            .into_iter()
            .map(|a| a.into_string().unwrap_or_default())
            .collect())
    }

    #[test]
    fn a_setting_from_the_file_yields_to_a_flag_and_to_the_environment() -> anyhow::Result<()> {
        let file = "addr = \"127.0.0.1:7000\"\nimage_quota = 9\nregions = [\"ap-guangzhou\", \"ap-shanghai\"]\n";
        // Only the file: its settings become flags.
        assert_eq!(
            run(&["image-ledger", "serve"], file, &[])?,
            [
                "image-ledger",
                "serve",
                "--addr=127.0.0.1:7000",
                "--image-quota=9",
                "--regions=ap-guangzhou,ap-shanghai"
            ]
        );
        // A flag wins over the file; so does the environment.
        assert_eq!(
            run(
                &["image-ledger", "serve", "--addr", "127.0.0.1:8000"],
                file,
                &["IMAGE_LEDGER_IMAGE_QUOTA"]
            )?,
            [
                "image-ledger",
                "serve",
                "--addr",
                "127.0.0.1:8000",
                "--regions=ap-guangzhou,ap-shanghai"
            ]
        );
        Ok(())
    }

    #[test]
    fn a_switch_in_the_file_is_given_when_true_and_left_out_when_false() -> anyhow::Result<()> {
        assert_eq!(
            run(&["image-ledger", "serve"], "insecure_no_auth = true\n", &[])?,
            ["image-ledger", "serve", "--insecure-no-auth"]
        );
        assert_eq!(
            run(
                &["image-ledger", "serve"],
                "insecure_no_auth = false\n",
                &[]
            )?,
            ["image-ledger", "serve"]
        );
        // The whole line parses as the command line it becomes.
        let given = run(&["image-ledger", "serve"], "insecure_no_auth = true\n", &[])?;
        let cli = Cli::try_parse_from(given)?;
        assert!(
            matches!(cli.command, super::super::Cmd::Serve(args) if args.server.insecure_no_auth)
        );
        Ok(())
    }

    #[test]
    fn an_unknown_setting_is_refused_by_its_name_and_one_the_command_lacks_is_left(
    ) -> anyhow::Result<()> {
        let refused = run(&["image-ledger", "serve"], "adr = \"x\"\n", &[])
            .err()
            .ok_or_else(|| anyhow::anyhow!("an unknown key passed"))?;
        assert!(
            refused.to_string().contains("unknown setting `adr`"),
            "{refused}"
        );
        // `addr` is serve's; `audit verify` does not take it.
        assert_eq!(
            run(
                &["image-ledger", "audit", "verify"],
                "addr = \"127.0.0.1:1\"\ndata_dir = \"/srv/ledger\"\n",
                &[]
            )?,
            ["image-ledger", "audit", "verify", "--data-dir=/srv/ledger"]
        );
        Ok(())
    }

    #[test]
    fn the_seed_comes_from_the_file_never_as_a_flag() -> anyhow::Result<()> {
        let given = apply_text(
            line(&["image-ledger", "serve"]),
            "signing_key_seed = \"ab\"\n",
            Path::new("ledger.toml"),
            |_| false,
        )?;
        assert_eq!(given.file.signing_key_seed.as_deref(), Some("ab"));
        assert_eq!(given.args, line(&["image-ledger", "serve"]));
        Ok(())
    }
}
