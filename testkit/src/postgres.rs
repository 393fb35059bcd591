//! A throwaway PostgreSQL cluster for tests, started from the installed
//! server binaries in a temporary directory. PostgreSQL refuses to run as
//! root, so as root the cluster runs as the `postgres` user.
//!
//! A test that needs one is marked
//! `#[cfg_attr(not(postgres_installed), ignore = "…")]` (the crate's
//! build script sets `postgres_installed` when the server binaries are
//! there): without them it is reported ignored, never passed; with them a
//! cluster that cannot start fails the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// A running cluster; stopped (immediately) and removed when dropped.
pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
    /// Server settings beyond the defaults, as `-c name=value` options.
    settings: String,
}

impl Cluster {
    /// One cluster for the whole test process, started on first use and
    /// stopped when the process ends.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = Cluster::start();
            cluster.stop_when_this_process_ends();
            cluster
        })
    }

    /// A new, empty database in the cluster, and its URL.
    pub fn fresh_database(&self) -> Result<String, String> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let name = format!(
            "ledger_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        // On a thread of its own: the postgres crate cannot block inside the
        // test's runtime.
        let (url, create) = (self.url(), format!("CREATE DATABASE {name}"));
        std::thread::spawn(move || {
            postgres::Client::connect(&url, postgres::NoTls)
                .and_then(|mut client| client.batch_execute(&create))
                .map_err(|e| e.to_string())
        })
        .join()
        .map_err(|_| "the thread creating the database panicked".to_string())??;
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    /// Starts a cluster; panics, saying why, when it cannot.
    pub fn start() -> Self {
        or_panic(Self::try_start())
    }

    /// A primary whose commits wait for a synchronous standby
    /// (`synchronous_commit = on`, the default), and that standby,
    /// streaming from it; panics as [`Cluster::start`] does.
    pub fn start_with_standby() -> (Self, Self) {
        let started = Self::empty("-c wal_level=replica -c synchronous_standby_names='*'")
            .and_then(|primary| {
                primary.init()?;
                primary.resume()?;
                // The standby is not synchronous to anyone: once promoted,
                // its commits do not wait.
                let standby = Self::empty("-c hot_standby=on")?;
                let (data, port) = (standby.data(), primary.port.to_string());
                standby.run(
                    "pg_basebackup",
                    &[
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &port,
                        "-U",
                        "postgres",
                        "-D",
                        &data,
                        "-R",
                        "-X",
                        "stream",
                    ],
                )?;
                standby.resume()?;
                primary.wait_for_sync_standby()?;
                Ok((primary, standby))
            });
        or_panic(started)
    }

    /// Promotes a standby to primary (`pg_ctl promote`, waiting for it).
    pub fn promote(&self) -> Result<(), String> {
        self.run("pg_ctl", &["-D", &self.data(), "-w", "promote"])
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    fn wait_for_sync_standby(&self) -> Result<(), String> {
        let url = self.url();
        std::thread::spawn(move || -> Result<(), String> {
            let mut client =
                postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
            for _ in 0..100 {
                let synced = client
                    .query(
                        "SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync'",
                        &[],
                    )
                    .map_err(|e| e.to_string())?;
                if !synced.is_empty() {
                    return Ok(());
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err("the standby never became synchronous".into())
        })
        .join()
        .map_err(|_| "the thread waiting for the standby panicked".to_string())?
    }

    fn try_start() -> Result<Self, String> {
        let cluster = Self::empty("")?;
        cluster.init()?;
        cluster.resume()?;
        Ok(cluster)
    }

    /// A cluster with a directory and a port, and nothing in them yet.
    fn empty(settings: &str) -> Result<Self, String> {
        let bin = server_bin().ok_or("no PostgreSQL server binaries under /usr/lib/postgresql")?;
        let as_postgres = is_root();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        if as_postgres {
            chown_to_postgres(dir.path())?;
        }
        Ok(Self {
            bin,
            dir,
            port: free_port()?,
            as_postgres,
            settings: settings.to_owned(),
        })
    }

    fn init(&self) -> Result<(), String> {
        self.run(
            "initdb",
            &[
                "-D",
                &self.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
            ],
        )
    }

    /// Starts the cluster's server (again, after [`Cluster::crash`]).
    pub fn resume(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on {}",
            self.port,
            self.dir.path().display(),
            self.settings
        );
        let log = self.dir.path().join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-o",
                &options,
                "start",
            ],
        )
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`).
    pub fn crash(&self) -> Result<(), String> {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"])
    }

    /// A statics' cluster is never dropped: a watcher stops it and removes
    /// its directory once this process has ended.
    fn stop_when_this_process_ends(&self) {
        let stop = format!(
            "{} {} -D {} -m immediate stop",
            if self.as_postgres {
                "runuser -u postgres --"
            } else {
                ""
            },
            self.bin.join("pg_ctl").display(),
            self.data()
        );
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.2; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.dir.path().display()
        );
        let watcher = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Err(err) = watcher {
            eprintln!("cannot watch the test cluster; stop it by hand: {err}");
        }
    }

    /// The URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        let output = command
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
        if !output.status.success() {
            return Err(format!(
                "{program} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        // A crashed server has nothing left to stop.
        if !self.dir.path().join("data/postmaster.pid").exists() {
            return;
        }
        if let Err(err) = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "stop"]) {
            eprintln!("cannot stop the test cluster: {err}");
        }
    }
}

/// The newest installed server's `bin` directory.
fn server_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn chown_to_postgres(dir: &Path) -> Result<(), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| e.to_string())?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| "no postgres user".to_string())
    };
    std::os::unix::fs::chown(dir, Some(id("-u")?), Some(id("-g")?)).map_err(|e| e.to_string())
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| e.to_string())
}

/// The cluster, or a panic that says why it did not start: the test was
/// meant to run (the server binaries are installed).
fn or_panic<T>(started: Result<T, String>) -> T {
    match started {
        Ok(started) => started,
        Err(why) => panic!("cannot start PostgreSQL for the test: {why}"),
    }
}
