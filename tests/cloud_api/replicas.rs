//! The door on replicas sharing one PostgreSQL database: a query through
//! one replica's door sees every write acknowledged through another's.

use super::*;
use image_ledger_testkit::Cluster;

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_through_one_replicas_door_sees_a_write_through_anothers() -> TestResult {
    let url = Cluster::shared().fresh_database()?;
    let (owner, friend) = (key("AKIDowner"), key("AKIDfriend"));
    let table = keys(&[(&owner, OWNER), (&friend, FRIEND)]);
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let mut servers = Vec::new();
    for dir in &dirs {
        if let Some(first) = servers
            .first()
            .map(|(dir, _): &(std::path::PathBuf, RunningServer)| dir.clone())
        {
            common::share_signing_key(&first, dir.path())?;
        }
        let server = InProcess::new(dir.path())
            .with(|config| {
                config.store.database_url = Some(url.clone());
                config.server.cloud_api_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
                config.cloud_keys = Arc::clone(&table);
            })
            .start()
            .await?;
        servers.push((dir.path().to_path_buf(), server));
    }
    let mut grpc = common::connect(&servers[0].1).await;
    register_roots(&mut grpc, &[OWNER, FRIEND]).await;
    let image = register_image(&mut grpc, OWNER, GZ, "web").await;
    let door = |n: usize| servers[n].1.cloud_api_addr().ok_or("a door");
    let (mut writes, mut reads) = (
        Connection::open(door(0)?).await?,
        Connection::open(door(1)?).await?,
    );
    for round in 0..20 {
        let permission = if round % 2 == 0 { "SHARE" } else { "CANCEL" };
        let share = json!({"ImageId": image, "AccountIds": [FRIEND], "Permission": permission});
        answered(
            &writes
                .call(&owner, &Call::cvm("ModifyImageSharePermission", GZ, &share))
                .await?,
        );
        let reply = reads
            .call(
                &owner,
                &Call::cvm(
                    "DescribeImageSharePermission",
                    GZ,
                    &json!({"ImageId": image}),
                ),
            )
            .await?;
        let shared = answered(&reply)["SharePermissionSet"]
            .as_array()
            .map_or(0, Vec::len);
        assert_eq!(
            shared,
            usize::from(round % 2 == 0),
            "round {round}: a stale read"
        );
    }
    for (_, server) in servers {
        server.stop().await?;
    }
    Ok(())
}
