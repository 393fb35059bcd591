//! Long commands show a bar on stderr only when it is a terminal, and end
//! with one summary line either way; nothing extra reaches stdout.

use std::path::Path;
use std::process::Command;

use image_ledger::domain::Policy;
use image_ledger_bench::FillPlan;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_image-ledger");

/// Runs `command` with a pseudo-terminal as stdin, stdout and stderr
/// (util-linux `script`), and returns what the terminal showed.
fn on_a_terminal(command: &str) -> Result<String, Box<dyn std::error::Error>> {
    let out = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .output()?;
    assert!(out.status.success(), "{command}: {out:?}");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn filled(dir: &Path, events: u64) -> TestResult {
    let plan = FillPlan {
        events,
        accounts: 100,
        images: 1_000,
        concurrency: 64,
        regions: 1,
    };
    image_ledger_bench::fill(
        &image_ledger::store::Location::dir(dir),
        &plan,
        Policy::default(),
    )?;
    Ok(())
}

#[test]
fn a_bar_on_a_terminal_and_one_summary_line_otherwise() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    filled(&data, 6_000)?;
    let data = data.to_str().ok_or("a UTF-8 path")?;

    // Not a terminal: no bar, no progress lines; the summary alone.
    let out = Command::new(BIN)
        .args(["audit", "verify", "--data-dir", data])
        .output()?;
    assert!(out.status.success());
    assert_eq!(lines(&out.stderr), Vec::<String>::new());
    let stdout = lines(&out.stdout);
    assert_eq!(stdout.len(), 1, "{stdout:?}");
    assert!(stdout[0].starts_with("OK: 6000 events"), "{stdout:?}");

    let export = dir.path().join("log.jsonl");
    let export = export.to_str().ok_or("a UTF-8 path")?;
    let out = Command::new(BIN)
        .args(["audit", "export", "--data-dir", data, "--output", export])
        .output()?;
    assert!(out.status.success());
    assert_eq!(
        out.stdout, b"",
        "an export to a file writes nothing to stdout"
    );
    let stderr = lines(&out.stderr);
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    assert!(
        stderr[0].starts_with("exported 6000 events in"),
        "{stderr:?}"
    );
    assert_eq!(std::fs::read_to_string(export)?.lines().count(), 6000);

    let restored = dir.path().join("restored");
    let restored = restored.to_str().ok_or("a UTF-8 path")?;
    let out = Command::new(BIN)
        .args(["audit", "import", export, "--data-dir", restored])
        .output()?;
    assert!(out.status.success());
    assert_eq!(lines(&out.stderr), Vec::<String>::new());
    let stdout = lines(&out.stdout);
    assert_eq!(stdout.len(), 1, "{stdout:?}");
    assert!(
        stdout[0].starts_with("imported 6000 events into"),
        "{stdout:?}"
    );

    // On a terminal: the bar, with its counts, then the same summary.
    let shown = on_a_terminal(&format!("{BIN} audit verify --data-dir {data}"))?;
    assert!(shown.contains("verifying ["), "{shown:?}");
    assert!(shown.contains("/6,000 events"), "{shown:?}");
    assert!(shown.contains("OK: 6000 events"), "{shown:?}");
    let shown = on_a_terminal(&format!("{BIN} projections rebuild --data-dir {restored}"))?;
    assert!(shown.contains("replaying ["), "{shown:?}");
    assert!(
        shown.contains("rebuilt the projections from 6000 events"),
        "{shown:?}"
    );
    let again = dir.path().join("again");
    let shown = on_a_terminal(&format!(
        "{BIN} audit import {export} --data-dir {}",
        again.display()
    ))?;
    assert!(shown.contains("importing"), "{shown:?}");
    assert!(shown.contains("imported 6000 events"), "{shown:?}");
    Ok(())
}
