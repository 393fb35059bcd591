//! The server under a service manager that speaks systemd's notify
//! protocol: the test owns the `NOTIFY_SOCKET` and reads what `serve`
//! says as it starts, listens, reloads on SIGHUP, pings the watchdog and
//! stops.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use image_ledger_testkit::ServerCommand;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The messages read within `wait`, until one has a line `until`.
fn read_until(socket: &UnixDatagram, until: &str, wait: Duration) -> Result<Vec<String>, String> {
    let deadline = Instant::now() + wait;
    let mut messages = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        match socket.recv(&mut buffer) {
            Ok(len) => {
                let message = String::from_utf8_lossy(&buffer[..len]).into_owned();
                let done = message.lines().any(|line| line == until);
                messages.push(message);
                if done {
                    return Ok(messages);
                }
            }
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(err) => return Err(err.to_string()),
        }
    }
    Err(format!("no {until} within {wait:?}; got {messages:?}"))
}

fn signal(name: &str, pid: u32) -> std::io::Result<bool> {
    Ok(std::process::Command::new("kill")
        .args([name, &pid.to_string()])
        .status()?
        .success())
}

#[test]
fn serve_tells_the_service_manager_it_is_ready_reloading_alive_and_stopping() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path)?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut server = ServerCommand::new(env!("CARGO_BIN_EXE_image-ledger"))
        .data_dir(dir.path().join("data"))
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .spawn()?;

    let started = read_until(&socket, "READY=1", Duration::from_secs(10))?;
    assert!(
        started[0].starts_with("STATUS=opening data directory "),
        "the first word is the start's: {started:?}"
    );
    let ready = started.last().ok_or("a message")?;
    assert_eq!(
        ready,
        &format!("READY=1\nSTATUS=serving gRPC on {}\n", server.addr())
    );

    // The watchdog is pinged at half its interval: at least twice in 0.5 s.
    let since = Instant::now();
    let pinged = read_until(&socket, "WATCHDOG=1", Duration::from_secs(2))?;
    let again = read_until(&socket, "WATCHDOG=1", Duration::from_secs(2))?;
    assert!(
        since.elapsed() < Duration::from_millis(500),
        "two pings took {:?}: {pinged:?} {again:?}",
        since.elapsed()
    );

    assert!(signal("-HUP", server.pid())?);
    let reload = read_until(&socket, "RELOADING=1", Duration::from_secs(5))?;
    let reloading = reload.last().ok_or("a message")?;
    assert!(
        reloading.starts_with(
            "RELOADING=1\nSTATUS=reloading the TLS files and the cloud API keys\nMONOTONIC_USEC="
        ),
        "{reloading:?}"
    );
    let reloaded = read_until(&socket, "READY=1", Duration::from_secs(5))?;
    assert_eq!(
        reloaded.last().ok_or("a message")?,
        &format!("READY=1\nSTATUS=serving gRPC on {}\n", server.addr())
    );

    assert!(signal("-TERM", server.pid())?);
    let stopping = read_until(&socket, "STOPPING=1", Duration::from_secs(5))?;
    assert_eq!(
        stopping.last().ok_or("a message")?,
        "STOPPING=1\nSTATUS=stopping: finishing in-flight calls\n"
    );
    assert!(server.terminate(Duration::from_secs(10))?.success());
    Ok(())
}

#[test]
fn without_a_notify_socket_nothing_is_sent_and_the_server_serves() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut server = ServerCommand::new(env!("CARGO_BIN_EXE_image-ledger"))
        .data_dir(dir.path())
        .env_remove("NOTIFY_SOCKET")
        .env("WATCHDOG_USEC", "100000")
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    assert!(server.terminate(Duration::from_secs(10))?.success());
    Ok(())
}
