//! The operator CLI against a real server: every `ImageLedger` RPC through
//! its subcommand, `--json` replies, and exit codes that tell a refusal
//! (3) from bad input (2) from an unreachable server (4).

mod common;

use std::process::Output;

use common::*;
use serde_json::{json, Value};

/// Runs `image-ledger ARGS --addr ADDR`, off the runtime's threads.
async fn cli(addr: &str, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_image-ledger"));
    command.args(args).args(["--addr", addr]);
    tokio::task::spawn_blocking(move || command.output().expect("the binary runs"))
        .await
        .expect("the command's thread")
}

/// Runs a command with `--json` and parses its one line of output.
async fn cli_json(addr: &str, args: &[&str]) -> (i32, Value) {
    let mut args = args.to_vec();
    args.push("--json");
    let out = cli(addr, &args).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|err| panic!("{args:?}: {err}: {stdout:?}"));
    (out.status.code().expect("an exit code"), value)
}

/// What `audit access` prints of `image` as of `position`.
async fn access(addr: &str, image: &str, position: &str) -> String {
    let args = ["audit", "access", "--image", image, "--position", position];
    String::from_utf8_lossy(&cli(addr, &args).await.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_has_a_subcommand_with_json_replies_and_exit_codes() -> TestResult {
    let server = TestServer::start().await;
    let addr = server.server.local_addr().to_string();
    let addr = addr.as_str();

    // Position 1 is the ledger's limits, recorded as the server started.
    assert_eq!(
        cli_json(addr, &["account", "register", OWNER]).await,
        (0, json!({"position": 2}))
    );
    assert_eq!(
        cli_json(addr, &["account", "register", FRIEND]).await,
        (0, json!({"position": 3}))
    );
    let collaborator = ["account", "register", OTHER, "--kind", "collaborator"];
    assert_eq!(
        cli_json(addr, &collaborator).await,
        (0, json!({"position": 4}))
    );

    let register = [
        "image",
        "register",
        "--account",
        OWNER,
        "--region",
        GZ,
        "--name",
        "web",
        "--platform",
        "CentOS",
        "--os-name",
        "CentOS 7.9 64-bit",
        "--cloud-init",
    ];
    let (code, reply) = cli_json(addr, &register).await;
    assert_eq!((code, &reply["position"]), (0, &json!(5)));
    let image = reply["image_id"].as_str().expect("an image id").to_owned();
    let image = image.as_str();

    // People get a sentence; the same retry (a token) appends nothing.
    let share = [
        "image",
        "share",
        image,
        "--account",
        OWNER,
        "--with",
        FRIEND,
        "--client-token",
        "t-1",
    ];
    let out = cli(addr, &share).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{image} shared with {FRIEND} (position 6)\n")
    );
    assert_eq!(cli_json(addr, &share).await, (0, json!({"position": 6})));

    // A rule's refusal: exit 3, the reason and message, nothing recorded.
    let (code, reply) = cli_json(
        addr,
        &["image", "share", image, "--account", OWNER, "--to", OTHER],
    )
    .await;
    assert_eq!(code, 3);
    assert_eq!(reply["error"]["kind"], "refused");
    assert_eq!(reply["error"]["code"], "FailedPrecondition");
    assert_eq!(reply["error"]["reason"], "FailedOperation.NotMasterAccount");
    assert!(reply["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains(OTHER)));
    let out = cli(addr, &["image", "delete", image, "--account", OWNER]).await;
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("InvalidImageId.InShared"), "{stderr}");

    // Bad input, judged by the server or by the command line: exit 2.
    let (code, reply) = cli_json(
        addr,
        &["image", "share", image, "--account", OWNER, "--to", "12x"],
    )
    .await;
    assert_eq!((code, &reply["error"]["kind"]), (2, &json!("bad_input")));
    assert_eq!(reply["error"]["code"], "InvalidArgument", "{reply}");
    let out = cli(addr, &["image", "share", image, "--account", OWNER]).await;
    assert_eq!(out.status.code(), Some(2), "--to is required");

    // Queries.
    let (code, reply) = cli_json(
        addr,
        &["image", "list", "--account", FRIEND, "--region", GZ],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(reply["total_count"], 1);
    assert_eq!(reply["images"][0]["image_id"], image);
    assert_eq!(reply["images"][0]["image_type"], "SHARED_IMAGE");
    assert_eq!(reply["images"][0]["state"], "NORMAL");
    let out = cli(
        addr,
        &["image", "list", "--account", FRIEND, "--region", GZ],
    )
    .await;
    let table = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("IMAGE         NAME  TYPE"), "{table}");
    assert!(
        lines[1].starts_with(&format!("{image}  web   SHARED_IMAGE  NORMAL  {OWNER}")),
        "{table}"
    );
    assert_eq!(lines[2], "1 of 1 images in ap-guangzhou");

    let (code, reply) = cli_json(addr, &["image", "shares", image, "--account", OWNER]).await;
    assert_eq!(code, 0);
    assert_eq!(reply["shares"][0]["account_id"], FRIEND);
    assert_eq!(reply["lighthouse_shared"], false);
    let quota = ["account", "quota", OWNER, "--region", GZ];
    assert_eq!(
        cli_json(addr, &quota).await,
        (0, json!({"quota": 500, "used": 1}))
    );
    // The account as the other commands take it, too.
    let quota = ["account", "quota", "--account", OWNER, "--region", GZ];
    assert_eq!(
        cli_json(addr, &quota).await,
        (0, json!({"quota": 500, "used": 1}))
    );

    let create = [
        "image",
        "authorize",
        image,
        "--account",
        FRIEND,
        "--region",
        GZ,
        "--use",
        "create-instance",
    ];
    assert_eq!(
        cli_json(addr, &create).await,
        (
            0,
            json!({"allowed": true, "reason": "", "audit_reason": ""})
        )
    );
    let export = [
        "image",
        "authorize",
        image,
        "--account",
        FRIEND,
        "--region",
        GZ,
        "--use",
        "export",
    ];
    assert_eq!(
        cli_json(addr, &export).await,
        (
            3,
            json!({"allowed": false, "reason": "UnsupportedOperation.SharedImageExportUnsupported", "audit_reason": ""})
        )
    );

    // The other commands, each recording one event (copy: two).
    let dry = [
        "image",
        "unshare",
        image,
        "--account",
        OWNER,
        "--with",
        FRIEND,
        "--dry-run",
    ];
    assert_eq!(cli_json(addr, &dry).await, (0, json!({"position": 0})));
    let unshare = [
        "image",
        "unshare",
        image,
        "--account",
        OWNER,
        "--from",
        FRIEND,
    ];
    assert_eq!(cli_json(addr, &unshare).await, (0, json!({"position": 7})));
    let (code, reply) = cli_json(
        addr,
        &[
            "image",
            "copy",
            image,
            "--account",
            OWNER,
            "--to-region",
            "ap-shanghai,ap-beijing",
        ],
    )
    .await;
    assert_eq!((code, &reply["position"]), (0, &json!(9)));
    assert_eq!(reply["images"][1]["region"], "ap-beijing");
    let lighthouse = ["image", "lighthouse", image, "share", "--account", OWNER];
    assert_eq!(
        cli_json(addr, &lighthouse).await,
        (0, json!({"position": 10}))
    );
    let modify = [
        "image",
        "modify",
        image,
        "--account",
        OWNER,
        "--name",
        "web-2",
    ];
    assert_eq!(cli_json(addr, &modify).await, (0, json!({"position": 11})));
    let state = ["image", "set-state", image, "syncing"];
    assert_eq!(cli_json(addr, &state).await, (0, json!({"position": 12})));
    let lighthouse = ["image", "lighthouse", image, "cancel", "--account", OWNER];
    assert_eq!(
        cli_json(addr, &lighthouse).await,
        (0, json!({"position": 13}))
    );
    let (code, reply) = cli_json(addr, &["image", "delete", image, "--account", OWNER]).await;
    assert_eq!(
        (code, &reply["error"]["reason"]),
        (3, &json!("InvalidImageId.IncorrectState"))
    );
    assert_eq!(
        cli_json(addr, &["image", "set-state", image, "normal"])
            .await
            .0,
        0
    );
    let delete = ["image", "delete", image, "--account", OWNER];
    assert_eq!(cli_json(addr, &delete).await, (0, json!({"position": 15})));

    // The audit reads only a server has: the followed log is the log.
    let out = cli(addr, &["audit", "follow", "--from", "14", "--count", "2"]).await;
    assert_eq!(out.status.code(), Some(0));
    let records: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON record"))
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(
        (&records[0]["position"], &records[1]["position"]),
        (&json!(14), &json!(15))
    );
    assert_eq!(records[1]["event_type"], "ImageDeleted");
    // Who could use the image, in words: the owner before its deletion,
    // nobody after it; an image that never existed is not found.
    let before = access(addr, image, "14").await;
    assert!(
        before.starts_with(&format!(
            "image {image} in {GZ} as of position 14 (last record "
        )),
        "{before}"
    );
    assert!(
        before
            .lines()
            .any(|line| line.trim_start().starts_with(OWNER)
                && line.contains(" owner since ")
                && line.ends_with(": create, reinstall, export")),
        "{before}"
    );
    let after = access(addr, image, "15").await;
    assert!(
        after.starts_with(&format!(
            "image {image} in {GZ} as of position 15 (last record 15)\nnobody could use it: "
        )),
        "{after}"
    );
    assert_eq!(after.lines().count(), 2, "{after}");
    let unknown = cli(
        addr,
        &[
            "audit",
            "access",
            "--image",
            "img-00000099",
            "--position",
            "15",
        ],
    )
    .await;
    assert_eq!(unknown.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&unknown.stderr)
        .contains("NotFound InvalidImageId.NotFound: image img-00000099 does not exist"));
    let (code, reply) = cli_json(addr, &["audit", "key"]).await;
    assert_eq!(code, 0);
    assert_eq!(reply["public_key"].as_str().map(str::len), Some(64));

    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_unreachable_server_exits_4() -> TestResult {
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let (code, reply) = cli_json(&addr, &["account", "quota", OWNER, "--region", GZ]).await;
    assert_eq!((code, &reply["error"]["kind"]), (4, &json!("unavailable")));
    assert_eq!(reply["error"]["code"], "Unavailable", "{reply}");
    let out = cli(&addr, &["audit", "history", "--image", "img-00000000"]).await;
    assert_eq!(out.status.code(), Some(4));
    let out = cli("not an address", &["account", "register", OWNER]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn each_subcommand_names_its_rpc_in_its_help() {
    let rpcs = [
        ("account register", "RegisterAccount"),
        ("account quota", "DescribeImageQuota"),
        ("image register", "RegisterImage"),
        ("image set-state", "UpdateImageState"),
        ("image share", "ShareImage"),
        ("image unshare", "CancelImageSharing"),
        ("image copy", "CopyImage"),
        ("image delete", "DeleteImage"),
        ("image modify", "ModifyImageAttribute"),
        ("image lighthouse", "ModifyLighthouseSharePermission"),
        ("image authorize", "AuthorizeImageUse"),
        ("image list", "DescribeImages"),
        ("image shares", "DescribeImageSharePermission"),
        ("image share-expiry", "ModifyImageShareExpiry"),
        ("image leave", "LeaveImageShare"),
        ("image disable", "DisableImage"),
        ("image enable", "EnableImage"),
        ("image protection", "ModifyImageDeletionProtection"),
        ("image deprecate", "DeprecateImage"),
        ("image undeprecate", "UndeprecateImage"),
        ("image lineage", "GetImageLineage"),
        ("account trust", "SetTrustedImageOwners"),
        ("account trusted", "DescribeTrustedImageOwners"),
        ("audit follow", "Subscribe"),
        ("audit key", "GetLedgerPublicKey"),
    ];
    for (command, rpc) in rpcs {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_image-ledger"))
            .args(command.split(' '))
            .arg("--help")
            .output()
            .expect("the binary runs");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command} --help");
        assert!(help.contains(rpc), "{command} --help names {rpc}: {help}");
        assert!(
            help.contains("--json") && help.contains("--addr"),
            "{command}: {help}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controls_have_subcommands_with_json_replies_and_exit_codes() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    register_roots(&mut c, &[OWNER, FRIEND, OTHER]).await;
    let image = register_image(&mut c, OWNER, GZ, "web").await;
    let addr = server.server.local_addr().to_string();
    let addr = addr.as_str();
    let image = image.as_str();
    let refused = |reply: &(i32, Value), reason: &str| {
        assert_eq!((reply.0, &reply.1["error"]["reason"]), (3, &json!(reason)));
    };

    let share = [
        "image",
        "share",
        image,
        "--account",
        OWNER,
        "--to",
        FRIEND,
        "--expires-at",
        "2099-01-01T00:00:00Z",
    ];
    assert_eq!(cli_json(addr, &share).await.0, 0);
    let later = [
        "image",
        "share-expiry",
        image,
        "--account",
        OWNER,
        "--of",
        FRIEND,
        "--never",
    ];
    assert_eq!(cli_json(addr, &later).await.0, 0);
    let bad_time = [
        "image",
        "share",
        image,
        "--account",
        OWNER,
        "--to",
        OTHER,
        "--expires-at",
        "soon",
    ];
    assert_eq!(cli(addr, &bad_time).await.status.code(), Some(2));
    assert_eq!(
        cli_json(addr, &["image", "leave", image, "--account", FRIEND])
            .await
            .0,
        0
    );
    refused(
        &cli_json(addr, &["image", "leave", image, "--account", FRIEND]).await,
        "FailedOperation.AccountNotShared",
    );

    let protect = ["image", "protection", image, "on", "--account", OWNER];
    assert_eq!(cli_json(addr, &protect).await.0, 0);
    refused(
        &cli_json(addr, &["image", "delete", image, "--account", OWNER]).await,
        "FailedOperation.DeletionProtectionEnabled",
    );
    let off = [
        "image",
        "protection",
        image,
        "off",
        "--with-cooldown",
        "--account",
        OWNER,
    ];
    assert_eq!(cli_json(addr, &off).await.0, 0);
    refused(
        &cli_json(addr, &["image", "delete", image, "--account", OWNER]).await,
        "FailedOperation.DeletionProtectionCooldown",
    );
    for (command, status) in [("deprecate", 0), ("undeprecate", 0), ("disable", 0)] {
        let args = ["image", command, image, "--account", OWNER];
        assert_eq!(cli_json(addr, &args).await.0, status, "{command}");
    }
    refused(
        &cli_json(
            addr,
            &["image", "share", image, "--account", OWNER, "--to", FRIEND],
        )
        .await,
        "UnsupportedOperation.ImageDisabled",
    );
    assert_eq!(
        cli_json(addr, &["image", "enable", image, "--account", OWNER])
            .await
            .0,
        0
    );
    let (code, lineage) = cli_json(addr, &["image", "lineage", image, "--account", OWNER]).await;
    assert_eq!(
        (
            code,
            &lineage["links"][0]["image_id"],
            &lineage["truncated"]
        ),
        (0, &json!(image), &json!(false))
    );

    let trust = [
        "account", "trust", FRIEND, "--mode", "enforce", "--owner", OTHER,
    ];
    assert_eq!(cli_json(addr, &trust).await.0, 0);
    assert_eq!(
        cli_json(addr, &["account", "trusted", FRIEND]).await,
        (0, json!({"mode": "ENFORCE", "owner_account_ids": [OTHER]}))
    );
    server.server.stop().await?;
    Ok(())
}
