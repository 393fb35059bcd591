//! The operator's client: `image-ledger account …` and `image-ledger image
//! …` call a running server's `ImageLedger` service, one RPC a subcommand.
//! This module owns what they share: where the server is, how replies are
//! printed, and how a failure becomes an exit code. `audit follow` and
//! `audit key` live here too; the other audit reads with `--addr` are in
//! `cli::audit`.

pub mod account;
pub mod audit;
mod connect;
pub mod image;
mod query;
mod render;

pub use render::instant;

use std::time::Duration;

use clap::Args;
use image_ledger::grpc::pb::image_ledger_client::ImageLedgerClient;
use image_ledger::grpc::{Bearer, ClientError};
use serde_json::json;
use thiserror::Error;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

pub use self::account::AccountCmd;
pub use self::connect::{channel, TlsArgs};
pub use self::image::ImageCmd;

/// The environment variable holding the bearer token.
pub const TOKEN_VARIABLE: &str = "IMAGE_LEDGER_TOKEN";

/// The exit code of a refusal by the ledger's rules (and of a denied
/// `image authorize`).
pub const EXIT_REFUSED: u8 = 3;
/// The exit code of bad input: usage errors (as clap's) and
/// INVALID_ARGUMENT from the server.
pub const EXIT_BAD_INPUT: u8 = 2;
/// The exit code of a server that cannot be reached or cannot answer now.
pub const EXIT_UNAVAILABLE: u8 = 4;

/// Where the server is and how to print its replies.
#[derive(Args, Clone)]
pub struct RemoteArgs {
    /// The server: host:port or http://host:port.
    #[arg(long, env = "IMAGE_LEDGER_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Print the reply (or the failure) as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Give up on a call after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// A file holding the bearer token to send (IMAGE_LEDGER_TOKEN holds
    /// the token itself; never a flag, which `ps` would show).
    #[arg(long, env = "IMAGE_LEDGER_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// A client of `ImageLedger` that sends the bearer token, if any.
pub type Client = ImageLedgerClient<InterceptedService<Channel, Bearer>>;

impl RemoteArgs {
    /// A client of the server's `ImageLedger` service.
    async fn connect(&self) -> Result<Client, Failure> {
        Ok(ImageLedgerClient::with_interceptor(
            self.channel().await?,
            self.bearer()?,
        ))
    }

    /// The bearer token: `--token-file`'s, else IMAGE_LEDGER_TOKEN's.
    fn bearer(&self) -> Result<Bearer, Failure> {
        bearer(self.token_file.as_deref())
    }

    /// A connection to the server.
    async fn channel(&self) -> Result<Channel, Failure> {
        self.endpoint(true).await
    }

    /// A connection for a stream that may stay open for ever: only its
    /// connection has the timeout.
    async fn channel_for_streams(&self) -> Result<Channel, Failure> {
        self.endpoint(false).await
    }

    async fn endpoint(&self, call_timeout: bool) -> Result<Channel, Failure> {
        let timeout = Duration::try_from_secs_f64(self.timeout)
            .ok()
            .filter(|t| !t.is_zero())
            .ok_or_else(|| {
                Failure::BadInput(format!("--timeout {} is not a duration", self.timeout))
            })?;
        channel(&self.addr, &self.tls, timeout, call_timeout).await
    }

    /// Prints `value` as JSON, or `human` for people.
    fn print(&self, value: serde_json::Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", human());
        }
    }
}

/// Why a remote command failed, which decides its exit code.
#[derive(Debug, Error)]
pub enum Failure {
    /// The input was wrong (here or as the server judged it).
    #[error("{0}")]
    BadInput(String),
    /// The ledger's rules refused it.
    #[error("refused: {code:?} {reason}: {message}")]
    Refused {
        /// The gRPC code.
        code: Code,
        /// The `ErrorInfo` reason (README, "Errors").
        reason: String,
        /// What the server said.
        message: String,
    },
    /// `AuthorizeImageUse` answered that the use is not allowed.
    #[error("the use is denied: {reason}")]
    Denied {
        /// The error code that denies it.
        reason: String,
    },
    /// The server could not be reached or could not answer now.
    #[error("{0}")]
    Unreachable(String),
    /// The server failed in another way.
    #[error("{0}")]
    Server(String),
}

impl Failure {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::BadInput(_) => EXIT_BAD_INPUT,
            Failure::Refused { .. } | Failure::Denied { .. } => EXIT_REFUSED,
            Failure::Unreachable(_) => EXIT_UNAVAILABLE,
            Failure::Server(_) => 1,
        }
    }

    /// The failure of a call that ended with `status`.
    pub fn of_status(status: &tonic::Status) -> Self {
        let reason = status
            .get_details_error_info()
            .map(|info| info.reason)
            .unwrap_or_default();
        let message = status.message().to_owned();
        let said = |code: Code| {
            if reason.is_empty() {
                format!("{code:?}: {message}")
            } else {
                format!("{code:?} {reason}: {message}")
            }
        };
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => Failure::BadInput(said(status.code())),
            Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::NotFound
            | Code::AlreadyExists
            | Code::ResourceExhausted
            | Code::Unauthenticated => Failure::Refused {
                code: status.code(),
                reason,
                message,
            },
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                Failure::Unreachable(said(status.code()))
            }
            code => Failure::Server(said(code)),
        }
    }

    /// The failure as the JSON object `--json` prints (none for a denial,
    /// whose reply is the answer).
    fn to_json(&self) -> Option<serde_json::Value> {
        // Every error object has a code: the gRPC code a refusal came
        // with, else the one its kind stands for.
        let (kind, code, message) = match self {
            Failure::Denied { .. } => return None,
            Failure::BadInput(m) => ("bad_input", "InvalidArgument", m.as_str()),
            Failure::Refused {
                code,
                reason,
                message,
            } => {
                return Some(json!({"error": {
                    "kind": "refused",
                    "code": format!("{code:?}"),
                    "reason": reason,
                    "message": message,
                }}))
            }
            Failure::Unreachable(m) => ("unavailable", "Unavailable", m.as_str()),
            Failure::Server(m) => ("server", "Internal", m.as_str()),
        };
        Some(json!({"error": {"kind": kind, "code": code, "reason": "", "message": message}}))
    }
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Failure::of_status(&status)
    }
}

/// An error and its causes in one line (tonic's transport errors say
/// little at the top).
fn source_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        // hyper and tonic often repeat their cause's words in their own.
        let said = err.to_string();
        if !text.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = err.source();
    }
    text
}

/// Runs a remote command: prints a failure as JSON too under `--json`,
/// and hands it back so `main` picks the exit code.
pub(super) fn run<F>(remote: &RemoteArgs, call: F) -> anyhow::Result<()>
where
    F: std::future::Future<Output = Result<(), Failure>>,
{
    let result = super::runtime()?.block_on(call);
    if let Err(failure) = &result {
        if let Some(json) = failure.to_json().filter(|_| remote.json) {
            println!("{json}");
        }
    }
    result.map_err(anyhow::Error::new)
}

impl From<ClientError> for Failure {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::Connect(err) => {
                Failure::Unreachable(format!("cannot reach the server: {}", source_chain(&err)))
            }
            ClientError::Call(status) => Failure::of_status(&status),
            other => Failure::Server(other.to_string()),
        }
    }
}

/// The exit code for an error from any command: a remote failure's own,
/// else 1.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.downcast_ref::<Failure>()
        .map(Failure::exit_code)
        .unwrap_or(1)
}

/// `--client-token`, the idempotency key that makes a retry safe.
#[derive(Args, Clone)]
pub struct TokenArg {
    /// A client token (at most 64 printable ASCII characters): a retry with
    /// the same token and parameters gets the first reply and changes nothing.
    #[arg(long = "client-token")]
    pub token: Option<String>,
}

impl TokenArg {
    fn value(&self) -> String {
        self.token.clone().unwrap_or_default()
    }
}

/// `--min-position`, a query's consistency token.
#[derive(Args, Clone)]
pub struct MinPositionArg {
    /// Answer from a state that includes this log position (a command's
    /// reply gives it); without it the query is linearizable.
    #[arg(long, default_value_t = 0)]
    pub min_position: u64,
}

/// "at position N", or what a position of 0 means.
fn at_position(position: u64) -> String {
    if position == 0 {
        "nothing recorded".to_owned()
    } else {
        format!("position {position}")
    }
}

/// The bearer token in `token_file`, else in IMAGE_LEDGER_TOKEN, if any.
pub fn bearer(token_file: Option<&std::path::Path>) -> Result<Bearer, Failure> {
    let token = match token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|err| Failure::BadInput(format!("cannot read {}: {err}", path.display())))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var(TOKEN_VARIABLE).ok(),
    };
    Bearer::new(token.as_deref()).map_err(Failure::BadInput)
}
