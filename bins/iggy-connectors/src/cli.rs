//! Command-line parsing. Hand-written: the grammar is a few flags and two commands,
//! not worth a parser crate's compile time.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

/// The environment variable that names the config file when `--config` is not given.
pub const CONFIG_PATH_ENV: &str = "IGGY_CONNECTORS_CONFIG_PATH";

pub const USAGE: &str = "\
iggy-connectors: moves data between Apache Iggy and the outside world

Usage:
  iggy-connectors [--config PATH] [--strict] [run]
                                            run the connectors of a config (a connector
                                            whose config cannot run is listed as `error`
                                            and the others run; --strict refuses to
                                            start instead, as [connectors] strict = true)
  iggy-connectors demo                      run the bundled connectors end to end, with the
                                            HTTP API, against an in-memory Iggy server
                                            (or $IGGY_CONNECTORS_IGGY_ADDRESS)
  iggy-connectors [--config PATH] validate  check the config, every connector config and
                                            plugin, without connecting to Iggy
  iggy-connectors [--config PATH] connectors
                                            list the bundled connectors and the libraries
                                            the config's connectors name
  iggy-connectors [--config PATH] connectors describe NAME
                                            print the plugin_config reference of a
                                            connector (a bundled name like `stdout`, a
                                            configured connector's key, or a library path)
  iggy-connectors plugins PATH...           load plugin libraries and print what they are
  iggy-connectors [--config PATH] healthcheck
                                            exit 0 if the HTTP API of [http] address
                                            answers GET /health (for container checks)
  iggy-connectors transform --connector FILE --input FILE
                                            run a connector's transforms over sample
                                            messages (one payload per line; - is stdin)
                                            and print the results, without Iggy
  iggy-connectors --help | --version

Options:
  -c, --config PATH   runtime config file (default: $IGGY_CONNECTORS_CONFIG_PATH)
  -h, --help          print this help
  -V, --version       print the version and the connector ABI version

Plugin paths are tried as given (absolute), else against the working directory, then
the directory of this executable and the plugin directories; the platform's library
extension is added when the path has none. Except for `plugins PATH...`, a library is
opened only from the plugin directories ([plugins] directories).";

/// Where the config path came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOrigin {
    Flag,
    Environment,
}

impl fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigOrigin::Flag => f.write_str("--config"),
            ConfigOrigin::Environment => f.write_str(CONFIG_PATH_ENV),
        }
    }
}

/// The config file to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPath {
    pub path: PathBuf,
    pub origin: ConfigOrigin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run,
    Plugins(Vec<String>),
    Connectors,
    Describe(String),
    Transform { connector: PathBuf, input: PathBuf },
    Validate,
    Demo,
    Healthcheck,
    Help,
    Version,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    pub config: Option<ConfigPath>,
    /// `--strict`: refuse to run when any connector config cannot run.
    pub strict: bool,
}

/// Parses the arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Invocation, String> {
    parse_with_env(args, std::env::var_os(CONFIG_PATH_ENV))
}

fn parse_with_env(
    args: impl IntoIterator<Item = OsString>,
    env_config: Option<OsString>,
) -> Result<Invocation, String> {
    let mut args = args.into_iter();
    let mut config = None;
    let mut connector = None;
    let mut input = None;
    let mut command = None;
    let mut operands: Vec<String> = Vec::new();
    let mut strict = false;
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|arg| format!("argument {arg:?} is not valid UTF-8"))?;
        match arg.as_str() {
            "-h" | "--help" => command = Some(Command::Help),
            "-V" | "--version" => command = command.or(Some(Command::Version)),
            "-c" | "--config" => {
                let path = args.next().ok_or_else(|| format!("{arg} needs a PATH"))?;
                config = Some(PathBuf::from(path));
            }
            "--connector" => {
                let path = args.next().ok_or_else(|| format!("{arg} needs a FILE"))?;
                connector = Some(PathBuf::from(path));
            }
            "--input" => {
                let path = args.next().ok_or_else(|| format!("{arg} needs a FILE"))?;
                input = Some(PathBuf::from(path));
            }
            "--strict" => strict = true,
            "-" => operands.push(arg),
            _ if arg.starts_with("--config=") => {
                config = Some(PathBuf::from(&arg["--config=".len()..]));
            }
            _ if arg.starts_with('-') => return Err(format!("unknown option {arg}")),
            _ => operands.push(arg),
        }
    }
    let command = match command {
        Some(command) => command,
        None => match operands.split_first() {
            None => Command::Run,
            Some((first, rest)) => match first.as_str() {
                "run" if rest.is_empty() => Command::Run,
                "run" => return Err(format!("run takes no arguments, got {rest:?}")),
                "validate" if rest.is_empty() => Command::Validate,
                "validate" => return Err(format!("validate takes no arguments, got {rest:?}")),
                "demo" if rest.is_empty() => Command::Demo,
                "healthcheck" if rest.is_empty() => Command::Healthcheck,
                "healthcheck" => {
                    return Err(format!("healthcheck takes no arguments, got {rest:?}"));
                }
                "demo" => return Err(format!("demo takes no arguments, got {rest:?}")),
                "plugins" if rest.is_empty() => {
                    return Err("plugins needs at least one PATH".to_owned());
                }
                "plugins" => Command::Plugins(rest.to_vec()),
                "connectors" => match rest {
                    [] => Command::Connectors,
                    [describe, name] if describe == "describe" => Command::Describe(name.clone()),
                    _ => {
                        return Err(format!(
                            "connectors takes nothing or `describe NAME`, got {rest:?}"
                        ));
                    }
                },
                "transform" if rest.is_empty() => match (connector.take(), input.take()) {
                    (Some(connector), Some(input)) => Command::Transform { connector, input },
                    _ => return Err("transform needs --connector FILE and --input FILE".to_owned()),
                },
                "transform" => return Err(format!("transform takes no operands, got {rest:?}")),
                other => return Err(format!("unknown command {other:?}")),
            },
        },
    };
    if connector.is_some() || input.is_some() {
        return Err("--connector and --input go with the transform command".to_owned());
    }
    if strict && command != Command::Run {
        return Err("--strict goes with the run command".to_owned());
    }
    let config = match config {
        Some(path) => Some(ConfigPath {
            path,
            origin: ConfigOrigin::Flag,
        }),
        None => env_config
            .filter(|path| !path.is_empty())
            .map(|path| ConfigPath {
                path: PathBuf::from(path),
                origin: ConfigOrigin::Environment,
            }),
    };
    Ok(Invocation {
        command,
        config,
        strict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str], env: Option<&str>) -> Result<Invocation, String> {
        parse_with_env(args.iter().map(OsString::from), env.map(OsString::from))
    }

    #[test]
    fn the_flag_wins_over_the_environment() {
        let invocation = parse_args(&["--config", "a.toml"], Some("b.toml")).unwrap();
        assert_eq!(invocation.command, Command::Run);
        assert_eq!(
            invocation.config,
            Some(ConfigPath {
                path: "a.toml".into(),
                origin: ConfigOrigin::Flag
            })
        );
        let invocation = parse_args(&["run"], Some("b.toml")).unwrap();
        assert_eq!(invocation.config.unwrap().origin, ConfigOrigin::Environment);
        let invocation = parse_args(&["--config=c.toml"], None).unwrap();
        assert_eq!(invocation.config.unwrap().path, PathBuf::from("c.toml"));
        assert_eq!(parse_args(&[], Some("")).unwrap().config, None);
    }

    #[test]
    fn strict_goes_with_run() {
        assert!(parse_args(&["--strict"], None).unwrap().strict);
        assert!(parse_args(&["run", "--strict"], None).unwrap().strict);
        assert!(!parse_args(&["run"], None).unwrap().strict);
        assert!(parse_args(&["validate", "--strict"], None).is_err());
    }

    #[test]
    fn the_connectors_command_lists_or_describes() {
        assert_eq!(
            parse_args(&["connectors"], None).unwrap().command,
            Command::Connectors
        );
        assert_eq!(
            parse_args(&["connectors", "describe", "stdout"], None)
                .unwrap()
                .command,
            Command::Describe("stdout".into())
        );
        assert!(parse_args(&["connectors", "describe"], None).is_err());
        assert!(parse_args(&["connectors", "list", "x"], None).is_err());
    }

    #[test]
    fn commands_and_errors() {
        assert_eq!(
            parse_args(&["plugins", "a", "b"], None).unwrap().command,
            Command::Plugins(vec!["a".into(), "b".into()])
        );
        assert_eq!(parse_args(&["-V"], None).unwrap().command, Command::Version);
        assert_eq!(
            parse_args(&["plugins", "--help"], None).unwrap().command,
            Command::Help
        );
        assert!(
            parse_args(&["--config"], None)
                .unwrap_err()
                .contains("needs a PATH")
        );
        assert!(
            parse_args(&["--frobnicate"], None)
                .unwrap_err()
                .contains("unknown option")
        );
        assert!(
            parse_args(&["plugins"], None)
                .unwrap_err()
                .contains("at least one PATH")
        );
        assert!(
            parse_args(&["launch"], None)
                .unwrap_err()
                .contains("unknown command")
        );
    }
}
