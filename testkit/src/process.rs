//! A server process started from the `image-ledger` binary: one builder
//! for every test and tool that needs one, which reads the address from
//! the `listening on ADDR` line the server prints first, or says why the
//! server stopped before it.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What becomes of the server's stderr (its logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// Dropped.
    Null,
    /// The caller's stderr.
    Inherit,
    /// Kept, read by a thread of its own so the server never blocks on it;
    /// [`ServerProcess::logs`] returns it once the server has stopped.
    Capture,
}

/// Why a server did not start.
#[derive(Debug)]
pub enum StartError {
    /// The process could not be spawned or read.
    Io(std::io::Error),
    /// It stopped, or said something else, before `listening on`.
    Refused {
        /// How it ended (`None`: it was killed after a wrong first line).
        status: Option<ExitStatus>,
        /// Its first line on stdout, if any.
        said: String,
        /// Its stderr, when captured.
        stderr: String,
    },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Io(err) => write!(f, "cannot run the server: {err}"),
            StartError::Refused {
                status,
                said,
                stderr,
            } => write!(
                f,
                "the server did not start ({status:?}); it said {said:?}; stderr: {stderr}"
            ),
        }
    }
}

impl std::error::Error for StartError {}

impl From<std::io::Error> for StartError {
    fn from(err: std::io::Error) -> Self {
        StartError::Io(err)
    }
}

/// `image-ledger [GLOBAL…] serve --addr 127.0.0.1:0 [ARGS…]`, to spawn.
#[derive(Debug, Clone)]
pub struct ServerCommand {
    binary: PathBuf,
    global: Vec<OsString>,
    addr: Option<String>,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    stderr: Stderr,
    open_files: Option<u64>,
}

impl ServerCommand {
    /// `binary serve` on a free loopback port, logs dropped.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            global: Vec::new(),
            addr: Some("127.0.0.1:0".into()),
            args: Vec::new(),
            env: Vec::new(),
            stderr: Stderr::Null,
            open_files: None,
        }
    }

    /// `--data-dir DIR`.
    pub fn data_dir(self, dir: impl AsRef<Path>) -> Self {
        self.arg("--data-dir").arg(dir.as_ref())
    }

    /// A flag of `serve`.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Flags of `serve`.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// A flag before `serve` (`--config FILE`, `--log-format json`).
    pub fn global(mut self, arg: impl Into<OsString>) -> Self {
        self.global.push(arg.into());
        self
    }

    /// `--addr ADDR` instead of `127.0.0.1:0`; `None` gives no `--addr`,
    /// so the environment or a config file decides.
    pub fn addr(mut self, addr: Option<&str>) -> Self {
        self.addr = addr.map(str::to_owned);
        self
    }

    /// An environment variable of the server.
    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((name.into(), Some(value.into())));
        self
    }

    /// An environment variable the server must not inherit.
    pub fn env_remove(mut self, name: impl Into<OsString>) -> Self {
        self.env.push((name.into(), None));
        self
    }

    /// Where its stderr goes.
    pub fn stderr(mut self, stderr: Stderr) -> Self {
        self.stderr = stderr;
        self
    }

    /// Runs it under `ulimit -n LIMIT` (a hard limit it cannot raise),
    /// through bash.
    pub fn open_files_limit(mut self, limit: u64) -> Self {
        self.open_files = Some(limit);
        self
    }

    fn command(&self) -> Command {
        let mut command = match self.open_files {
            Some(limit) => {
                let mut bash = Command::new("bash");
                bash.arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(&self.binary);
                bash
            }
            None => Command::new(&self.binary),
        };
        command.args(&self.global).arg("serve");
        if let Some(addr) = &self.addr {
            command.args(["--addr", addr]);
        }
        command.args(&self.args);
        for (name, value) in &self.env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        command.stdout(Stdio::piped()).stderr(match self.stderr {
            Stderr::Null => Stdio::null(),
            Stderr::Inherit => Stdio::inherit(),
            Stderr::Capture => Stdio::piped(),
        });
        command
    }

    /// Spawns it and waits for its `listening on` line.
    pub fn spawn(&self) -> Result<ServerProcess, StartError> {
        let started = Instant::now();
        let mut child = self.command().spawn()?;
        let logs = child.stderr.take().map(|mut stderr| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = stderr.read_to_string(&mut text);
                text
            })
        });
        let mut stdout = BufReader::new(child.stdout.take().ok_or_else(|| {
            StartError::Io(std::io::Error::other("the server's stdout is not piped"))
        })?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse::<SocketAddr>().ok());
        let Some(addr) = addr else {
            let status = match child.try_wait()? {
                Some(status) => Some(status),
                None if line.is_empty() => Some(child.wait()?),
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    None
                }
            };
            let stderr = logs.and_then(|logs| logs.join().ok()).unwrap_or_default();
            return Err(StartError::Refused {
                status,
                said: line,
                stderr,
            });
        };
        Ok(ServerProcess {
            child,
            addr,
            startup: started.elapsed(),
            stdout,
            logs,
        })
    }
}

/// A running server; killed (SIGKILL) when dropped, unless it was stopped.
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    startup: Duration,
    /// Kept open: the server must never meet a closed stdout.
    stdout: BufReader<ChildStdout>,
    logs: Option<JoinHandle<String>>,
}

impl ServerProcess {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The cloud API door's address: the `cloud api listening on ADDR`
    /// line a server started with `--cloud-api-addr` prints next. Call it
    /// once.
    pub fn cloud_api_addr(&mut self) -> std::io::Result<SocketAddr> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        line.trim()
            .strip_prefix("cloud api listening on ")
            .and_then(|addr| addr.parse().ok())
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "the server said {line:?}, not `cloud api listening on ADDR`"
                ))
            })
    }

    /// `http://ADDR`, for a client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// From the spawn to its `listening on` line.
    pub fn startup(&self) -> Duration {
        self.startup
    }

    /// SIGKILL, as a crash or the OOM killer would, and the wait for it.
    pub fn kill(&mut self) -> std::io::Result<()> {
        if self.child.try_wait()?.is_none() {
            self.child.kill()?;
        }
        self.child.wait().map(drop)
    }

    /// SIGTERM and the wait for it to exit; SIGKILL if it has not within
    /// `patience`. The status it exited with.
    pub fn terminate(&mut self, patience: Duration) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        let signalled = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !signalled.success() {
            return Err(std::io::Error::other("cannot send SIGTERM to the server"));
        }
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child.kill()?;
        self.child.wait()
    }

    /// Its stderr, once it has stopped (captured only with
    /// [`Stderr::Capture`]; empty otherwise).
    pub fn logs(&mut self) -> String {
        self.logs
            .take()
            .and_then(|logs| logs.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
